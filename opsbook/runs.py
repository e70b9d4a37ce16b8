"""A run of a runbook, from the kernel that drives it: the run object, its record, its handoff.

A run lives in the runs service (opsbook/service), not in a kernel. The service decides what the
run is (it resolves the stack to its hosts and environment from the inventory and plans the
batches from the run's options); the runbook executes the ledger's plan, never one of its own.
Whoever owns the run renews its lease while working on it, records every ansible-runner event
before the run moves on, and the next engineer can carry on from their own container.
The service's API itself is opsbook.runsclient; this module is the run's driver:

- `run_options`: a runbook's parameters as the run's typed options (wire.RunOptions), checked
  once, before anything is sent;
- `RunSession`: what a runbook cell holds: the run (`session.run`, as the ledger has it), its
  lease (held from the start, accept or takeover until the run is finished, paused or lost),
  the plays of the run in its order (pre-checks, the rolling patch in a background thread so
  the notebook stays free to hand it off, post-checks), the approved errata in its record, and
  the start, accept, takeover, handoff and finish verbs. Every play of a run happens while the
  run is RUNNING and held: a production stack's hosts only accept a certificate issued for such
  a run to its owner (opsbook.sshcert);
- `plan_of`: the run's batches as a rolling plan, with exporter instances from the one
  Inventory the runbook loaded;
- `Ledger`: a rolling-patch observer (opsbook.rolling.RunObserver) that records a run: batches,
  per-host results, health gates and every runner event, and pauses at a batch boundary when
  the run has been handed off or its lease was lost. If the service cannot be reached for
  longer than the retry budget, the batch in flight is cancelled and the run stops: no host is
  patched whose events cannot be recorded. A patch that stops (a failed gate, max_fail) fails
  the run, an interrupted one pauses it; one whose batches are all done leaves it RUNNING and
  held, for the post-checks (RunSession.post_checks) and RunSession.finish;
- `LeaseKeeper`: the thread that renews the owner's lease, and with it the container's SSH
  certificate (opsbook.sshcert), so that a long batch's plays (a reboot, then ssh again) never
  hold an expired one; each batch's play also makes sure of it first (rolling_patch's
  before_play), with the run's id when the run is production (its environment's principal);
- `summary` and `history`: the run's own account (every batch, who ran it, every host's
  result), from the ledger, whoever's session asks;
- approvals (four eyes on production): a run whose environment needs approval starts
  `awaiting_approval`, with no lease, and nothing of it runs until an on-call engineer other than
  its requester approves it. `RunSession.wait_for_approval` waits for that visibly
  (`ApprovalStatus`: who may approve, the run page's link, the time left) and takes up the lease;
  `pending_approvals`, `describe_approval` and `decide` are the approver's side
  (approvals.ipynb).

Batches are numbered from 1 throughout, as the ledger numbers them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from opsbook import checks, health, sshcert
from opsbook.config import Settings
from opsbook.contract import wire
from opsbook.errata import Erratum
from opsbook.errors import OpsbookError
from opsbook.health import GateResult
from opsbook.inventory import Inventory
from opsbook.plays import RunnerEvent
from opsbook.rolling import (
    DONE,
    FAILED,
    IN_DOUBT,
    NOT_STARTED,
    BatchResult,
    NullObserver,
    Paused,
    RollingPlan,
    RollingResult,
    RollingStopped,
    RunObserver,
    StopRun,
    rolling_patch,
)
from opsbook.runsclient import LedgerUnavailable, RunsClient, RunsError


class OptionsError(OpsbookError):
    """A run's options are out of range or of the wrong type; the message names each one."""


class LeaseLost(StopRun):
    """Someone else owns the run now (a takeover), or its lease ran out: stop working on it."""


class NotApproved(OpsbookError):
    """The run will not run: it was rejected (the message has who and why), its approval
    expired, or the runbook's deadline passed before anyone approved it."""


def event_in(event: RunnerEvent, batch: int) -> wire.EventIn:
    """An ansible-runner event as the ledger keeps it: what happened where, never raw stdout."""
    data = event.get("event_data") or {}
    result = data.get("res") if isinstance(data.get("res"), dict) else {}
    summary = {key: result[key] for key in ("changed", "rc", "skipped") if key in result}
    message = (
        result.get("msg") if event.get("event", "").endswith(("failed", "unreachable")) else None
    )
    return wire.EventIn(
        type=str(event.get("event", "unknown")),
        uuid=event.get("uuid"),
        host=data.get("host"),
        task=data.get("task"),
        batch=batch,
        message=str(message)[:2000] if message else None,
        data=summary,
        at=event.get("created"),
    )


def host_results(batch: BatchResult) -> list[wire.HostResult]:
    """A batch's outcome per host, as the ledger records it (anything not clear is in doubt)."""
    reasons = batch.reasons()
    results = []
    for host in batch.hosts:
        outcome = batch.outcome(host)
        if outcome == DONE:
            state = wire.HostState.OK
        elif outcome == FAILED:
            play = batch.play.get(host)
            unreachable = play is not None and play.state == "unreachable"
            state = wire.HostState.UNREACHABLE if unreachable else wire.HostState.FAILED
        else:  # in doubt, or its play never started: run it again
            state = wire.HostState.IN_DOUBT
        results.append(wire.HostResult(host=host, state=state, message=reasons.get(host)))
    return results


def gate_report(gate: GateResult) -> wire.GateReport:
    details = {}
    for check in gate.failures:
        details.setdefault(check.host, f"{check.check}: {check.message}")
    return wire.GateReport(passed=gate.passed, message=gate.summary(), details=details)


class LeaseKeeper:
    """Renews the owner's lease in the background; notices a handoff or a lost run.

    Renewals come every third of the lease, so two can fail before the lease runs out. A
    refusal (someone took the run over, or the lease had already run out) is final: `lost`
    says why, and the Ledger stops the run at its next event or boundary.
    """

    def __init__(
        self,
        client: RunsClient,
        run: wire.Run,
        renew_certificate: Callable[[], object] | None = None,
    ) -> None:
        self.client = client
        self.run_id = run.id
        self.every = lease_renewal_every(run)
        self.renew_certificate = renew_certificate
        self.certificate_problem: str | None = None  # the last renewal's, until one works
        self.lost: str | None = None
        self.handoff: wire.Handoff | None = run.handoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{run.id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def renew_now(self) -> None:
        try:
            grant = self.client.lease(self.run_id)
        except RunsError as refused:
            self.lost = f"run {self.run_id} is no longer ours: {refused}"
            self._stop.set()
        else:
            self.handoff = grant.handoff

    def _renew(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.renew_now()
            except LedgerUnavailable:
                continue  # the next renewal may get through; the lease has room for two misses
            if self.renew_certificate is not None and not self.lost:
                try:
                    self.renew_certificate()
                except sshcert.CertificateError as problem:
                    # The next batch's before_play stops the run with this, if it lasts.
                    self.certificate_problem = str(problem)
                else:
                    self.certificate_problem = None


def lease_renewal_every(run: wire.Run) -> float:
    """Seconds between two renewals of the run's lease: a third of it, so two may fail."""
    return max(1.0, run.lease_seconds / 3)


class Ledger(NullObserver):
    """Records a rolling patch in the runs ledger as it happens (a RunObserver).

    Events are sent in small batches from the play's thread, and every batch boundary waits
    until all of them are stored: the run moves on only once the ledger has the record. Other
    observers (the notebook's widget) hear everything through `forward`.

    When the patch ends: stopped (a failed gate, max_fail, the ledger out of reach) finishes
    the run as failed; interrupted (in doubt, or the kernel interrupted) pauses it; handed off
    pauses it for the engineer it was handed to (also after the last batch: they run the
    post-checks and finish it); every batch done leaves it RUNNING, its lease still renewed by
    `keeper`, until the runbook's post-checks and RunSession.finish.

    keeper: the session's LeaseKeeper (None: one of its own, started here).
    """

    def __init__(
        self,
        client: RunsClient,
        run: wire.Run,
        *,
        forward: RunObserver | None = None,
        send_every: int = 50,
        send_seconds: float = 1.0,
        renew_certificate: Callable[[], object] | None = None,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.client = client
        self.run = run
        self.forward = forward or NullObserver()
        self.send_every = send_every
        self.send_seconds = send_seconds
        self.keeper = keeper or LeaseKeeper(client, run, renew_certificate).start()
        self.recorded = 0  # runner events stored (or found already stored) in the ledger
        self.seen = 0  # runner events the plays produced
        self._pending: list[wire.EventIn] = []
        self._last_send = time.monotonic()
        self._batch = 0
        self._gate: GateResult | None = None
        self._paused = False
        self._lock = threading.Lock()

    def batch_starting(self, number: int, hosts: Sequence[str]) -> str | None:
        """Start the batch at the runs service, which silences exactly its hosts in
        Alertmanager (not in check mode; no answer from Alertmanager: the batch does not start)
        and expires the silence when the batch ends; returns that silence's ID."""
        self.send_events()
        self._check_lease()
        if self.keeper.handoff is not None:
            handoff = self.keeper.handoff
            self.run = self.client.pause(self.run.id)
            self.keeper.stop()
            self._paused = True
            raise Paused(f"handed off to {handoff.to} by {handoff.by}: {handoff.note}".rstrip(": "))
        self._batch = number
        self._gate = None
        self.run = self.client.start_batch(self.run.id, self._batch, hosts)
        self.forward.batch_starting(number, hosts)
        return silence_of(self.run, number)

    def event(self, event: RunnerEvent) -> None:
        self.forward.event(event)
        with self._lock:
            self.seen += 1
            self._pending.append(event_in(event, self._batch))
            due = (
                len(self._pending) >= self.send_every
                or time.monotonic() - self._last_send >= self.send_seconds
            )
        if due:
            self.send_events()
        if self.keeper.lost:
            raise LeaseLost(self.keeper.lost)

    def gate_result(self, number: int, gate_result: GateResult) -> None:
        self.forward.gate_result(number, gate_result)
        self._gate = gate_result

    def batch_finished(self, number: int, batch_result: BatchResult) -> None:
        self.forward.batch_finished(number, batch_result)
        self.send_events()
        self.run = self.client.finish_batch(self.run.id, number, host_results(batch_result))
        if self._gate is not None:
            self.run = self.client.gate(self.run.id, number, gate_report(self._gate))

    def finished(self, rolling_result: RollingResult) -> None:
        self.forward.finished(rolling_result)
        held = False  # the run stays RUNNING and leased, for its post-checks
        try:
            self.send_events()
            if self._paused or self.keeper.lost:
                return  # paused for a handoff, or no longer ours: nothing to close
            if rolling_result.complete:
                if self.keeper.handoff is not None:
                    # Handed off during the last batch: whoever accepts it post-checks it.
                    self.run = self.client.pause(self.run.id)
                    self._paused = True
                else:
                    held = True  # finished by RunSession.finish, after the post-checks
            elif rolling_result.in_doubt or isinstance(rolling_result.error, KeyboardInterrupt):
                # Interrupted: pause, so the owner (or, once handed off, someone else) resumes.
                self.run = self.client.pause(self.run.id)
            else:
                text = summary(self.run, stopped=rolling_result.stopped)
                self.run = self.client.finish(self.run.id, wire.RunState.FAILED, text)
        finally:
            if not held:
                self.keeper.stop()

    def send_events(self) -> None:
        """Store every event not yet stored; raises LedgerUnavailable if the service is gone."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_send = time.monotonic()
        if not batch:
            return
        try:
            result = self.client.append(self.run.id, batch)
        except Exception:
            with self._lock:  # keep them, in order, for the next attempt (a resume)
                self._pending[:0] = batch
            raise
        with self._lock:
            self.recorded += result.stored + result.duplicates

    def _check_lease(self) -> None:
        self.keeper.renew_now()
        if self.keeper.lost:
            raise LeaseLost(self.keeper.lost)


def silence_of(run: wire.Run, number: int) -> str | None:
    """The ID of the Alertmanager silence the runs service set for batch `number`'s last start
    (None: check mode, or the batch has not started)."""
    batch = next((batch for batch in run.batches if batch.number == number), None)
    return batch.silence.id if batch is not None and batch.silence is not None else None


def run_options(**values: Any) -> wire.RunOptions:
    """A runbook's parameters as the run's options, checked: OptionsError names every bad one.

    The names are wire.RunOptions' (batch_size, order, limit, max_fail, gate_timeout,
    max_load_per_cpu, check_mode); those not given keep their defaults. The runs service checks
    them again (it is the authority); this only says so before anything is sent.
    """
    known = {item.name for item in fields(wire.RunOptions)}
    problems = [
        f"options.{name}: unknown option; expected one of {', '.join(sorted(known))}"
        for name in values
        if name not in known
    ]
    options = None
    if not problems:
        try:
            options = wire.RunOptions.from_dict(dict(values), where="options")
        except wire.WireError as error:
            problems.append(str(error))
        else:
            problems += options.problems()
    if problems or options is None:
        raise OptionsError("the run's options are not valid:\n" + "\n".join(problems))
    return options


def resume_batch(run: wire.Run) -> int:
    """The number (from 1) of the first batch not done: where the run goes on from."""
    for batch in sorted(run.batches, key=lambda batch: batch.number):
        if batch.state is not wire.BatchState.DONE:
            return batch.number
    raise OpsbookError(f"run {run.id} has no batch left to run: every batch is done")


def plan_of(run: wire.Run, inventory: Inventory) -> RollingPlan:
    """The run's plan as the ledger has it, as a rolling plan; nothing is re-planned here.

    Stack, environment, production and batches are the run's; each host's exporter instance
    (for the health gate) comes from `inventory`, the one the runbook loaded,
    which also refuses a host it does not have (InventoryError).
    """
    batches = plan_batches_of(run)
    return RollingPlan(
        stack=run.stack,
        environment=run.environment,
        production=run.production,
        batches=batches,
        instances=inventory.exporter_instances(host for batch in batches for host in batch),
    )


def plan_batches_of(run: wire.Run) -> tuple[tuple[str, ...], ...]:
    """The run's batches' hosts, batch 1 first, as the ledger planned them."""
    return tuple(tuple(batch.hosts) for batch in sorted(run.batches, key=lambda b: b.number))


def hosts_in(run: wire.Run, *states: wire.HostState) -> list[str]:
    """The run's hosts in one of `states`, in batch order (e.g. the hosts patched: OK)."""
    return [host.name for host in _ordered_hosts(run) if host.state in states]


def _ordered_hosts(run: wire.Run) -> list[wire.HostView]:
    order = {
        host: position
        for position, host in enumerate(
            host for batch in sorted(run.batches, key=lambda b: b.number) for host in batch.hosts
        )
    }
    return sorted(run.hosts, key=lambda host: order.get(host.name, len(order)))


# How the summary names a host's state: the words of a rolling patch's own summary.
_HOST_LABELS = {
    wire.HostState.OK: DONE,
    wire.HostState.FAILED: FAILED,
    wire.HostState.UNREACHABLE: FAILED,
    wire.HostState.IN_DOUBT: IN_DOUBT,
    wire.HostState.RUNNING: "running",
    wire.HostState.PENDING: NOT_STARTED,
}


def summary(run: wire.Run, *, stopped: str | None = None) -> str:
    """The run's summary, from the ledger: every batch and who ran it, every host's state.

    It is the run's, not one session's: after a handoff it has the batches of everyone who ran
    them. `stopped`: why the session that drives it stopped the run, if it did.
    """
    options = run.options
    mode = "DRY RUN (check mode) of the rolling patch" if options.check_mode else "Rolling patch"
    batches = sorted(run.batches, key=lambda batch: batch.number)
    labels = {host.name: _HOST_LABELS[host.state] for host in run.hosts}
    failed = [host for host, label in labels.items() if label == FAILED]
    all_done = bool(batches) and all(b.state is wire.BatchState.DONE for b in batches)
    if run.state is wire.RunState.HANDED_OFF and run.handoff is not None:
        verdict = f"handed off to {run.handoff.to} by {run.handoff.by}"
    elif stopped:
        verdict = f"STOPPED: {stopped}"
    elif all_done and run.state in (wire.RunState.COMPLETED, wire.RunState.FAILED):
        verdict = "complete" if run.state is wire.RunState.COMPLETED else "FAILED, every batch done"
        if failed:
            verdict += f", with {len(failed)} failed (max_fail={options.max_fail})"
    elif all_done and not run.finished:
        verdict = "every batch done; the post-checks and the finish are next"
        if failed:
            verdict += f" ({len(failed)} failed, max_fail={options.max_fail})"
    elif run.finished:
        verdict = run.state.value.upper()
    else:
        verdict = run.state.value.replace("_", " ")
    where = run.environment
    if run.production and run.environment.casefold() != "production":
        where += ", PRODUCTION"
    lines = [f"{mode} of {run.stack} ({where}), run {run.id}: {verdict}"]
    for batch in batches:
        state = batch.state.value
        if batch.started_by:
            state += f" by {batch.started_by}"
        if batch.attempts > 1:
            state += f" ({batch.attempts} attempts)"
        if batch.gate_passed is not None:
            state += ", health gate " + ("passed" if batch.gate_passed else "FAILED")
        lines.append(
            f"  batch {batch.number} of {len(batches)} ({', '.join(batch.hosts)}): {state}"
        )
    ordered = _ordered_hosts(run)
    for label in (DONE, FAILED, IN_DOUBT, "running", NOT_STARTED):
        hosts = [host for host in ordered if labels[host.name] == label]
        if label == "running" and not hosts:
            continue
        lines.append(f"  {label} ({len(hosts)}): {', '.join(h.name for h in hosts) or '-'}")
        if label in (FAILED, IN_DOUBT):
            lines += [f"    {host.name}: {host.message}" for host in hosts if host.message]
    if not run.finished and not all_done:
        lines.append(
            f"  goes on from batch {resume_batch(run)} of {len(batches)} "
            "(whoever holds the run: handoff.ipynb; the patch play is idempotent)"
        )
    elif not run.finished:
        lines.append("  next: the post-checks, then the run is finished (whoever holds it)")
    return "\n".join(lines)


def find_stack(stacks: wire.StackList, name: str) -> wire.StackView:
    """The stack called `name` as the runs service resolves it (RunsClient.stacks())."""
    for stack in stacks.stacks:
        if stack.name == name:
            return stack
    known = ", ".join(stack.name for stack in stacks.stacks) or "none"
    raise OpsbookError(f"unknown stack '{name}'; the runs service knows: {known}")


def hosts_to_patch(stack: wire.StackView, options: wire.RunOptions) -> list[str]:
    """The stack's hosts a run with these options patches (its `limit`, if any), in order."""
    unknown = [host for host in options.limit if host not in stack.hosts]
    if unknown:
        raise OptionsError(
            f"options.limit: {', '.join(unknown)} not in stack {stack.name} "
            f"({', '.join(stack.hosts)})"
        )
    return [host for host in stack.hosts if not options.limit or host in options.limit]


def describe_stack(stack: wire.StackView, options: wire.RunOptions) -> str:
    """What a run with these options would patch, for a person, before it starts."""
    hosts = hosts_to_patch(stack, options)
    lines = [
        f"stack {stack.name} ({stack.environment}): {len(hosts)} hosts to patch: "
        f"{', '.join(hosts)}",
        f"  {options.batch_size} at a time, {options.order.value} order; the runs service plans "
        "the batches when the run starts",
    ]
    if stack.production:
        lines.append("PRODUCTION: on-call only. Tell the on-call channel before going on.")
    if options.check_mode:
        lines.append("CHECK MODE: a dry run; nothing will be promoted, installed or rebooted.")
    return "\n".join(lines)


def describe_runs(runs: Sequence[wire.Run]) -> list[str]:
    """One line per run in progress: what, where, its state, its owner, whom it waits for."""
    lines = []
    for run in runs:
        if run.finished:
            continue
        waiting_for = f", handed to {run.handoff.to}" if run.handoff else ""
        if run.state is wire.RunState.AWAITING_APPROVAL:
            waiting_for = f", requested by {run.created_by}"
        lines.append(
            f"run {run.id}: {run.runbook} on {run.stack} ({run.environment}), "
            f"{run.state.value}, owner {run.owner}{waiting_for}"
        )
    return lines or ["no run in progress"]


TAKE_ACTIONS = ("accept", "takeover", "view")


def find_run(runs: Sequence[wire.Run], *, action: str, me: str, stack: str = "") -> wire.Run:
    """The one run `action` is about when none was named: with accept, the run handed to `me`;
    with takeover, the one orphaned run (on `stack`, if given). Refused if not exactly one."""
    if action not in TAKE_ACTIONS:
        raise OpsbookError(f"action {action!r}: expected {', '.join(TAKE_ACTIONS)}")
    active = [run for run in runs if not run.finished]
    if action == "takeover":
        found = [
            run
            for run in active
            if run.state is wire.RunState.ORPHANED and (not stack or run.stack == stack)
        ]
        looking_for = "orphaned runs" + (f" on {stack}" if stack else "")
    else:
        found = [
            run
            for run in active
            if run.state is wire.RunState.HANDED_OFF
            and run.handoff is not None
            and run.handoff.to == me
        ]
        looking_for = f"runs handed to {me}"
    if len(found) != 1:
        ids = f" ({', '.join(str(run.id) for run in found)})" if found else ""
        raise OpsbookError(f"{len(found)} {looking_for}{ids}: set run_id to the run you mean")
    return found[0]


def history(client: RunsClient, run_id: int) -> list[str]:
    """The run's human and system events, and each batch's runner-event count, as lines."""
    lines = []
    runner_events: dict[int | None, int] = {}
    for event in client.events(run_id):
        if event.kind is wire.EventKind.RUNNER:
            runner_events[event.batch] = runner_events.get(event.batch, 0) + 1
            continue
        lines.append(f"{event.at[11:19]}  {event.actor:<10} {event.message or event.type}")
    counts = ", ".join(f"batch {b}: {n}" for b, n in sorted(runner_events.items(), key=str))
    lines.append(f"ansible events recorded: {sum(runner_events.values())} ({counts or 'none'})")
    return lines


# --- approvals (four eyes on production) ---------------------------------------------------------

RUNS_PUBLIC_URL = "OPSBOOK_RUNS_PUBLIC_URL"  # the service's address as people's browsers reach it
DECISIONS = ("approve", "reject", "view")


def run_page(client: RunsClient, run_id: int) -> str:
    """The run's page on the status page, where an approver approves or rejects it: under
    OPSBOOK_RUNS_PUBLIC_URL (the service's public address, e.g.
    https://ops.example.org/services/runs) if set, else under the service's URL as the kernel
    reaches it."""
    base = os.environ.get(RUNS_PUBLIC_URL) or client.url
    return f"{base.rstrip('/')}/runs/{run_id}"


def approvers_of(run: wire.Run, oncall: Iterable[str]) -> list[str]:
    """Who may approve `run`: the on-call engineers but its requester (of the run, and of its
    current approval after a re-plan), its owner and whoever it is handed to (the service
    refuses them, 409), in order."""
    interested = {
        run.created_by,
        run.owner,
        run.approval_requested_by or "",
        run.handoff.to if run.handoff else "",
    }
    return sorted(set(oncall) - interested)


def _seconds_until(moment: str | None, now: datetime) -> float | None:
    if not moment:
        return None
    return (wire.parse_wire_time(moment) - now).total_seconds()


def _clock(moment: str) -> str:
    """HH:MM:SS UTC of a wire time, as people read it in the on-call channel."""
    return wire.parse_wire_time(moment).strftime("%H:%M:%S UTC")


def time_left_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def approvals_line(run: wire.Run) -> str:
    """Who approved or rejected the run, when and why, in one line per decision (none: '')."""
    return "\n".join(
        f"{'approved' if a.decision is wire.ApprovalDecisionKind.APPROVE else 'REJECTED'} by "
        f"{a.approver} at {_clock(a.at)}: {a.reason}"
        for a in run.approvals
    )


def approved_by(run: wire.Run) -> list[str]:
    """Who approved the run's current request, first first."""
    return [a.approver for a in run.approvals if a.decision is wire.ApprovalDecisionKind.APPROVE]


@dataclass(frozen=True)
class ApprovalStatus:
    """A run's approval as a waiting runbook shows it: `run` as the ledger has it now, who may
    approve it, where (`link`), and the time left (until the request expires, and until the
    runbook's own deadline, if it has one)."""

    run: wire.Run
    approvers: list[str]
    link: str
    expires_in: float | None = None  # seconds until the request (or the approval) expires
    deadline_in: float | None = None  # seconds until the waiting runbook gives up

    @property
    def waiting(self) -> bool:
        return self.run.state is wire.RunState.AWAITING_APPROVAL

    @property
    def approved_by(self) -> list[str]:
        return approved_by(self.run)

    @property
    def time_left(self) -> float | None:
        """Seconds left to approve the run: the sooner of the expiry and the deadline."""
        known = [t for t in (self.expires_in, self.deadline_in) if t is not None]
        return max(0.0, min(known)) if known else None

    def describe(self) -> str:
        """The approval for a person: what it waits for, from whom, where, how long."""
        run = self.run
        if not run.approvals_needed:
            return f"run {run.id} ({run.environment}) needs no approval"
        done = approvals_line(run)
        if not self.waiting:
            head = f"run {run.id} is {run.state.value}"
            return f"{head}\n{done}" if done else head
        who = ", ".join(self.approvers) or (
            "nobody: no one else is on call now; ask for someone to join the on-call group"
        )
        lines = [
            f"run {run.id} ({run.stack}, {run.environment}) awaits approval: nothing runs until "
            f"{run.approvals_needed - len(self.approved_by)} more of the on-call engineers other "
            f"than {run.created_by} approve it ({len(self.approved_by)} of "
            f"{run.approvals_needed} so far)",
            f"  who may approve: {who}",
            f"  where: {self.link} (or approvals.ipynb, or the API)",
        ]
        if self.time_left is not None:
            until = []
            if self.expires_in is not None and run.approval_expires_at:
                until.append(f"the request expires at {_clock(run.approval_expires_at)}")
            if self.deadline_in is not None:
                until.append(f"this runbook waits {time_left_text(self.deadline_in)} more")
            lines.append(f"  time left: {time_left_text(self.time_left)} ({'; '.join(until)})")
        if done:
            lines.append(f"  {done}")
        return "\n".join(lines)


def approval_status(
    client: RunsClient,
    run: wire.Run,
    *,
    oncall: Iterable[str] | None = None,
    deadline_in: float | None = None,
    now: datetime | None = None,
) -> ApprovalStatus:
    """`run`'s approval now (oncall: the on-call group's members, if known; else asked)."""
    members = list(oncall) if oncall is not None else client.oncall()
    return ApprovalStatus(
        run=run,
        approvers=approvers_of(run, members),
        link=run_page(client, run.id),
        expires_in=_seconds_until(run.approval_expires_at, now or datetime.now(UTC)),
        deadline_in=deadline_in,
    )


def pending_approvals(runs: Iterable[wire.Run]) -> list[wire.Run]:
    """The runs awaiting approval, oldest first."""
    waiting = [run for run in runs if run.state is wire.RunState.AWAITING_APPROVAL]
    return sorted(waiting, key=lambda run: run.id)


def describe_approval(run: wire.Run, *, now: datetime | None = None) -> str:
    """What an approver decides on: the run, its requester, its plan (batches and hosts), the
    errata it will apply, its options and parameters, the decisions so far and the time left."""
    options = run.options
    where = f"{run.environment}, PRODUCTION" if run.production else run.environment
    lines = [
        f"run {run.id}: {run.runbook} of {run.stack} ({where}), requested by {run.created_by} "
        f"at {_clock(run.created_at)}, {run.state.value.replace('_', ' ')}",
    ]
    lines += [
        f"  batch {batch.number}: {', '.join(batch.hosts)}"
        for batch in sorted(run.batches, key=lambda batch: batch.number)
    ]
    recorded = checks.recorded_errata(run.parameters)
    if recorded:
        errata = ", ".join(e.spec for e in recorded)
    elif run.parameters.get("approved_errata"):
        asked = run.parameters["approved_errata"]
        errata = ", ".join(map(str, asked)) if isinstance(asked, list) else str(asked)
        errata += " (as the requester's runbook asks; reviewed after the pre-checks, inside the "
        errata += "approved run)"
    else:
        errata = "not recorded yet (reviewed after the pre-checks, inside the approved run)"
    lines.append(f"  errata: {errata}")
    lines.append(
        f"  options: batch_size={options.batch_size} order={options.order.value} "
        f"max_fail={options.max_fail} gate_timeout={options.gate_timeout:g} "
        f"max_load_per_cpu={options.max_load_per_cpu:g} check_mode={options.check_mode}"
        + (f" limit={','.join(options.limit)}" if options.limit else "")
    )
    shown = ("approved", "errata", "approved_errata")
    others = {k: v for k, v in run.parameters.items() if k not in shown}
    if others:
        lines.append("  parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(others.items())))
    lines.append(f"  approvals: {len(approved_by(run))} of {run.approvals_needed}")
    lines += [f"    {line}" for line in approvals_line(run).splitlines()]
    left = _seconds_until(run.approval_expires_at, now or datetime.now(UTC))
    if run.state is wire.RunState.AWAITING_APPROVAL and left is not None:
        lines.append(
            f"  expires at {_clock(run.approval_expires_at or '')} ({time_left_text(left)} left)"
        )
    return "\n".join(lines)


def decide(client: RunsClient, run_id: int, decision: str, reason: str) -> wire.Run:
    """approvals.ipynb's `decision` on run `run_id`: approve or reject it with `reason` (the
    service checks who may: never its requester; a reason is required), or only view it."""
    if decision == "approve":
        return client.approve(run_id, reason)
    if decision == "reject":
        return client.reject(run_id, reason)
    if decision == "view":
        return client.run(run_id)
    raise OpsbookError(f"decision {decision!r}: expected {', '.join(DECISIONS)}")


def not_approved(run: wire.Run) -> NotApproved:
    """Why a run that waited for approval will not run (rejected, expired, aborted ...)."""
    if run.state is wire.RunState.REJECTED:
        rejections = [a for a in run.approvals if a.decision is wire.ApprovalDecisionKind.REJECT]
        if rejections:
            last = rejections[-1]
            why = f"rejected by {last.approver} at {_clock(last.at)}: {last.reason}"
        else:
            why = f"rejected: {run.summary or 'no reason recorded'}"
    else:
        why = f"{run.state.value}: {run.summary or 'no reason recorded'}"
    return NotApproved(
        f"run {run.id} ({run.stack}, {run.environment}) will not run; it was {why}. Nothing was "
        "changed; start a new run for a new request."
    )


# What the run's options decide; RunSession.patch refuses them as extra arguments.
_FROM_OPTIONS = frozenset({"check", "max_fail", "gate_timeout", "checks", "start_batch"})


class RunSession:
    """One engineer's hold on a run: the run as the ledger has it, its plays, and the verbs.

    A run's life in a runbook, every play inside it (a production stack's hosts accept only a
    certificate issued for the running run to its owner):

        session = RunSession.start(...)        # registered: the stack is locked, the lease held
        session.wait_for_approval(1800)        # production: until someone else approves it
        found = session.pre_checks(...)        # check.yml + health gate; failed: run FAILED
        found.raise_if_failed()
        session.promote(chosen)                # the runs service promotes them into the suite
                                               # of the run's environment (after approval)
        session.record_errata(approved)        # the errata reviewed and promoted, in the record
        session.patch(...); session.wait()     # the rolling patch of the ledger's batches
        if session.awaiting_post_checks:       # every batch done, the run still RUNNING
            post = session.post_checks(...)    # check.yml + the approved versions
            session.finish(post)               # completed, or failed if they failed

    The lease is renewed in the background from start (or accept, takeover) until the run is
    finished, paused or lost, so a person may take their time between the steps. The patch runs
    in a thread, so that the notebook stays free for `handoff()` while a batch is in flight (a
    notebook's cells run one at a time: a patch in the foreground would block it).
    """

    def __init__(self, client: RunsClient, run: wire.Run, *, hold: bool = False) -> None:
        """hold: renew the run's lease from now on (the start, accept and takeover verbs do)."""
        self.client = client
        self.run = run
        self.result: RollingResult | None = None
        self.error: BaseException | None = None
        self.ledger: Ledger | None = None
        self.keeper: LeaseKeeper | None = None
        self._thread: threading.Thread | None = None
        if hold:
            self._hold()

    def _hold(self) -> LeaseKeeper:
        """The run's lease keeper, started if it is not running."""
        if self.keeper is None or self.keeper.stopped:
            self.keeper = LeaseKeeper(self.client, self.run).start()
        return self.keeper

    def _use_settings(self, settings: Settings) -> None:
        """From now on the lease keeper renews the SSH certificate with the lease (a long
        batch's plays, a reboot then ssh again, never hold an expired one)."""
        keeper = self._hold()
        if settings.ssh_certificates and keeper.renew_certificate is None:
            # Renewed in the background when less than two renewals' time is left.
            margin = max(sshcert.MIN_SECONDS, 2 * lease_renewal_every(self.run))
            keeper.renew_certificate = self.certificate_step(settings, min_seconds=margin)

    def certificate_step(
        self, settings: Settings, *, min_seconds: float = sshcert.MIN_SECONDS
    ) -> sshcert.BeforePlay:
        """What each play of this run does first (its `before_play`): make sure of the
        container's SSH certificate, for a production run one issued for this run (its
        environment's principal: only while it is running, ours and leased). A no-op only
        with settings.ssh_certificates off."""
        run_id = self.run.id if self.run.production else None
        return sshcert.certificate_step(
            settings.ssh_certificates,
            self.client,
            run_id,
            folder=settings.ssh_dir,
            min_seconds=min_seconds,
        )

    @classmethod
    def start(
        cls,
        client: RunsClient,
        *,
        runbook: str,
        stack: str,
        options: wire.RunOptions | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> RunSession:
        """Start a run of `runbook` on `stack`: the service resolves the stack, checks that you
        may, plans the batches from `options` and records the run (refused if this runbook
        already runs on this stack: the lock is taken before anything is checked). You own it
        and hold its lease from now on. `session.run` is the run it returns, plan included.

        A run whose environment needs approval (production) starts `awaiting_approval`, with no
        lease: nothing of it runs until wait_for_approval() has seen it approved."""
        options = options if options is not None else wire.RunOptions()
        problems = options.problems()
        if problems:
            raise OptionsError("the run's options are not valid:\n" + "\n".join(problems))
        request = wire.CreateRun(
            runbook=runbook, stack=stack, options=options, parameters=dict(parameters or {})
        )
        run = client.create(request)
        return cls(client, run, hold=run.state is wire.RunState.RUNNING)

    @property
    def awaiting_approval(self) -> bool:
        """Whether the run (as last seen) waits for an on-call engineer's approval."""
        return self.run.state is wire.RunState.AWAITING_APPROVAL

    def approval_status(self, deadline_in: float | None = None) -> ApprovalStatus:
        """The run's approval now: who may approve it, where, the time left (ApprovalStatus)."""
        return approval_status(self.client, self.refresh(), deadline_in=deadline_in)

    def wait_for_approval(
        self,
        deadline_seconds: float = 1800,
        on_progress: Callable[[ApprovalStatus], object] | None = None,
        *,
        poll: float = 0.5,
    ) -> wire.Run:
        """Until the run is approved, then take up its lease; at once for a run that needs no
        approval (staging) or has it already (accepted after a handoff, say).

        While it waits, `on_progress` hears the ApprovalStatus every `poll` seconds: who may
        approve (the on-call engineers but the requester), the run page's link, the time left.
        Raises NotApproved, saying why, if the run was rejected (who, and their reason), its
        request expired (the service aborts it), or `deadline_seconds` passed first: the run is
        then aborted, so that nobody approves a run no kernel is waiting to run."""
        deadline = time.monotonic() + deadline_seconds
        oncall: list[str] | None = None
        asked = 0.0
        while True:
            run = self.refresh()
            if run.state is not wire.RunState.AWAITING_APPROVAL:
                break
            if oncall is None or time.monotonic() - asked > 30:  # the group may change
                oncall, asked = self.client.oncall(), time.monotonic()
            left = deadline - time.monotonic()
            if on_progress is not None:
                on_progress(approval_status(self.client, run, oncall=oncall, deadline_in=left))
            if left <= 0:
                self._give_up(deadline_seconds)
                continue  # approved at the last moment: it runs; else NotApproved below
            time.sleep(min(poll, max(left, 0.05)))
        if run.finished:
            if on_progress is not None:
                on_progress(approval_status(self.client, run, oncall=oncall or []))
            raise not_approved(run)
        if run.state is not wire.RunState.RUNNING:
            raise OpsbookError(
                f"run {run.id} is {run.state.value}, owner {run.owner}: approved, but not "
                "running for this session to go on with (handoff.ipynb takes a run on)"
            )
        keeper = self._hold()
        keeper.renew_now()  # the lease the approval started: ours from now on
        if keeper.lost:
            raise LeaseLost(keeper.lost)
        if on_progress is not None:
            on_progress(approval_status(self.client, self.run, oncall=oncall or []))
        return self.run

    def _give_up(self, deadline_seconds: float) -> None:
        """The runbook's deadline passed: abort the run unless it was approved meanwhile."""
        run = self.refresh()
        if run.state is not wire.RunState.AWAITING_APPROVAL:
            return
        why = f"not approved within the runbook's deadline of {time_left_text(deadline_seconds)}"
        try:
            self.run = self.client.abort(run.id, why)
        except RunsError:
            if self.refresh().state is not wire.RunState.AWAITING_APPROVAL:
                return
            raise
        raise NotApproved(
            f"run {run.id} ({run.stack}, {run.environment}) was {why}; it is aborted and nothing "
            f"was changed. Ask {', '.join(approvers_of(run, self.client.oncall())) or 'someone'} "
            "to approve a new run sooner, or give `approval_deadline` more time."
        )

    def _require_approved(self, doing: str) -> None:
        if self.awaiting_approval:
            raise OpsbookError(
                f"run {self.run.id} awaits approval: no {doing} until an on-call engineer other "
                f"than {self.run.created_by} approves it; call wait_for_approval() first"
            )

    @classmethod
    def accept(cls, client: RunsClient, run_id: int) -> RunSession:
        """Accept a run handed to you: you own it now, and hold its lease."""
        return cls(client, client.accept(run_id), hold=True)

    @classmethod
    def takeover(cls, client: RunsClient, run_id: int, reason: str) -> RunSession:
        """Take over an orphaned run (on call): its interrupted batch's hosts are in doubt."""
        return cls(client, client.takeover(run_id, reason), hold=True)

    @classmethod
    def take_on(
        cls, client: RunsClient, run_id: int, action: str, reason: str = ""
    ) -> RunSession | None:
        """handoff.ipynb's `action`: accept the run, take it over (with a reason for the
        record), or only view it (None: nothing changes)."""
        if action == "accept":
            return cls.accept(client, run_id)
        if action == "takeover":
            if not reason.strip():
                raise OpsbookError("a takeover needs a reason, for the record: set `reason`")
            return cls.takeover(client, run_id, reason)
        if action == "view":
            return None
        raise OpsbookError(f"action {action!r}: expected {', '.join(TAKE_ACTIONS)}")

    @property
    def hosts(self) -> list[str]:
        """Every host of the run, in batch order."""
        return [host for batch in plan_batches_of(self.run) for host in batch]

    @property
    def options(self) -> wire.RunOptions:
        """The run's options, as recorded with it (the same for whoever goes on with it)."""
        return self.run.options

    def plan(self, inventory: Inventory) -> RollingPlan:
        """The run's plan (the ledger's batches), with exporter instances from `inventory`."""
        return plan_of(self.run, inventory)

    def describe(self) -> str:
        """The run for a person before it patches: its plan and its options."""
        run, options = self.run, self.run.options
        where = (
            f"{run.environment}, PRODUCTION: on-call only" if run.production else run.environment
        )
        hosts = sum(len(batch.hosts) for batch in run.batches)
        lines = [
            f"run {run.id}: {run.runbook} of {run.stack} ({where}), {hosts} hosts in "
            f"{len(run.batches)} batches, owner {run.owner}"
        ]
        lines += [
            f"  batch {batch.number}: {', '.join(batch.hosts)} ({batch.state.value})"
            for batch in sorted(run.batches, key=lambda batch: batch.number)
        ]
        lines.append(
            f"  options: batch_size={options.batch_size} order={options.order.value} "
            f"max_fail={options.max_fail} gate_timeout={options.gate_timeout:g} "
            f"max_load_per_cpu={options.max_load_per_cpu:g} check_mode={options.check_mode}"
            + (f" limit={','.join(options.limit)}" if options.limit else "")
        )
        if options.check_mode:
            lines.append("  CHECK MODE: a dry run; nothing will be installed or rebooted")
        if run.state is wire.RunState.AWAITING_APPROVAL:
            lines.append(
                f"  AWAITING APPROVAL by {run.approvals_needed} on-call engineer(s) other than "
                f"{run.created_by}: nothing runs until then"
            )
        elif run.approvals:
            lines += [f"  {line}" for line in approvals_line(run).splitlines()]
        return "\n".join(lines)

    def patch(
        self,
        settings: Settings,
        inventory: Inventory,
        *,
        forward: RunObserver | None = None,
        **extra: Any,
    ) -> RunSession:
        """Start the rolling patch of the run's remaining batches in the background.

        The batches are the ledger's (`plan_of`), from the first not done; check mode, max_fail,
        the gate's timeout and thresholds are the run's options. max_fail counts the run's
        failed hosts in all, those of earlier sessions included. `extra` goes to
        opsbook.rolling.rolling_patch (playbook, extravars, play_timeout, gate_interval, cancel,
        before_play).

        Before each batch's play, the container's SSH certificate is made sure of (unless
        settings.ssh_certificates is off): for a production run, one issued for this run (its
        environment's principal, granted only to the owner of the running run while its lease
        holds); the lease keeper renews it as it renews the lease. No certificate: the batch
        does not start, and the run stops saying why.
        """
        if self._thread is not None and self._thread.is_alive():
            raise OpsbookError(f"run {self.run.id} is already patching")
        self._require_approved("patch")
        decided = sorted(_FROM_OPTIONS & set(extra))
        if decided:
            raise OpsbookError(
                f"{', '.join(decided)}: decided by the run's options (run.options), not by patch()"
            )
        plan = plan_of(self.run, inventory)
        options = self.run.options
        start_batch = resume_batch(self.run)
        failed_before = len(hosts_in(self.run, wire.HostState.FAILED, wire.HostState.UNREACHABLE))
        gate_checks = health.gate_checks(max_load_per_cpu=options.max_load_per_cpu)
        self.result = self.error = None
        before_play = extra.pop("before_play", None) or self.certificate_step(settings)
        self._use_settings(settings)
        ledger = self.ledger = Ledger(self.client, self.run, forward=forward, keeper=self.keeper)

        def work() -> None:
            try:
                self.result = rolling_patch(
                    plan,
                    settings,
                    observer=ledger,
                    start_batch=start_batch,
                    check=options.check_mode,
                    max_fail=max(0, options.max_fail - failed_before),
                    gate_timeout=options.gate_timeout,
                    checks=gate_checks,
                    inventory=inventory,
                    before_play=before_play,
                    **extra,
                )
            except BaseException as error:  # kept for wait(), which re-raises it
                self.error = error
            finally:
                self.run = ledger.run

        self._thread = threading.Thread(target=work, name=f"run-{self.run.id}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> RollingResult:
        """Until the patch ends (done, stopped, or paused for a handoff)."""
        if self._thread is None:
            raise OpsbookError("nothing is patching: call patch() first")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"run {self.run.id} still patching after {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def wait_for_batch(
        self, number: int, state: wire.BatchState = wire.BatchState.DONE, timeout: float = 3600
    ) -> None:
        """Until batch `number` (from 1) is in `state` or past it, or the patch has ended."""
        order = [wire.BatchState.PENDING, wire.BatchState.RUNNING, wire.BatchState.DONE]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = {batch.number: batch for batch in self.client.run(self.run.id).batches}
            if number not in batches:
                raise OpsbookError(
                    f"run {self.run.id} has no batch {number}; expected 1 to {len(batches)}"
                )
            now = batches[number].state
            if now not in order or order.index(now) >= order.index(state):
                return
            if self._thread is not None and not self._thread.is_alive():
                return
            time.sleep(0.2)
        raise TimeoutError(f"batch {number} of run {self.run.id} not done within {timeout} s")

    def refresh(self) -> wire.Run:
        """The run as the ledger has it now."""
        self.run = self.client.run(self.run.id)
        return self.run

    @property
    def handed_off(self) -> bool:
        return self.run.state is wire.RunState.HANDED_OFF

    def handoff(self, to: str, note: str = "") -> wire.Run:
        """Hand the run to an on-call engineer: the batch in flight finishes, then it pauses.
        Once every batch is done (the post-checks are next), it pauses at once: they run the
        post-checks and finish it."""
        post_checks_next = self.awaiting_post_checks and not self.patching
        self.run = self.client.handoff(self.run.id, to, note)
        if self.keeper is not None:
            self.keeper.handoff = self.run.handoff
        if self.ledger is not None:
            self.ledger.keeper.handoff = self.run.handoff
        if post_checks_next:
            self.run = self.client.pause(self.run.id)
            self._release()
        return self.run

    # --- the plays around the patch, and the end of the run ---

    @property
    def patching(self) -> bool:
        """Whether this session's rolling patch is under way in the background."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def patch_started(self) -> bool:
        """Whether patch() was called in this session (wait() then waits for its end)."""
        return self._thread is not None

    @property
    def awaiting_post_checks(self) -> bool:
        """Every batch of the run is done and the run is still RUNNING and ours: the
        post-checks come next, then finish(). (A run that stopped is already finished or
        paused; one handed off is for whoever accepts it.)"""
        batches = self.run.batches
        return (
            self.run.state is wire.RunState.RUNNING
            and self.run.handoff is None
            and bool(batches)
            and all(batch.state is wire.BatchState.DONE for batch in batches)
            and not (self.keeper is not None and self.keeper.lost)
        )

    def pre_checks(
        self,
        settings: Settings,
        inventory: Inventory,
        *,
        require_healthy: bool = True,
        on_event: Callable[[RunnerEvent], None] | None = None,
    ) -> checks.PreChecks:
        """check.yml and the health gate (the run's thresholds) on the run's hosts, with the
        run's certificate, before anything changes. If they fail, or cannot run, the run is
        finished as failed with what they found as its summary (nothing was changed); call
        `raise_if_failed()` on the answer to stop the runbook."""
        self._require_approved("pre-checks")
        self._use_settings(settings)
        gate_checks = health.gate_checks(max_load_per_cpu=self.options.max_load_per_cpu)
        try:
            found = checks.pre_checks(
                settings,
                inventory,
                self.run.stack,
                self.hosts,
                gate_checks,
                require_healthy=require_healthy,
                on_event=on_event,
                before_play=self.certificate_step(settings),
            )
        except BaseException as error:
            self._fail_quietly(f"the pre-checks could not run; nothing was changed: {error}")
            raise
        if not found.passed:
            self._close(wire.RunState.FAILED, f"nothing was changed.\n{found.report()}")
        return found

    def promote(self, errata: Sequence[Erratum], reason: str = "") -> wire.Promotion:
        """Promote errata into the suite of the run's environment, through the runs service and
        as part of this run (its run_id): the service checks that you may (production: you own
        the approved, running run and hold its lease) and performs it on the repository host;
        the ledger records it with the versions. Not before approval, nor in check mode (a dry
        run changes no suite). RunsError with the service's reason if it was refused or failed."""
        self._require_approved("promotion")
        if self.options.check_mode:
            raise OpsbookError(
                f"run {self.run.id} is a dry run (check mode): no errata are promoted; the "
                "ErrataTable says what would be"
            )
        if not errata:
            raise OpsbookError("no errata to promote; expected at least one")
        return self.client.promote_errata(
            self.run.environment,
            [(erratum.package, erratum.new_version) for erratum in errata],
            run_id=self.run.id,
            reason=reason or f"{self.run.runbook} on {self.run.stack}",
        )

    def record_errata(self, approved: Iterable[Erratum]) -> wire.Run:
        """The errata approved for this run (reviewed and promoted after it started), in the
        run's record: whoever finishes it post-checks against them (`approved_errata`)."""
        self.run = self.client.update_parameters(self.run.id, checks.errata_parameters(approved))
        return self.run

    @property
    def approved_errata(self) -> list[Erratum]:
        """The approved errata as the run's record has them (record_errata)."""
        return checks.recorded_errata(self.run.parameters)

    def post_checks(
        self,
        settings: Settings,
        inventory: Inventory,
        *,
        on_event: Callable[[RunnerEvent], None] | None = None,
    ) -> checks.PostChecks:
        """check.yml on every host of the run, with the run's certificate; every host it
        patched must have at least the recorded approved versions (not in check mode). The run
        stays RUNNING: finish() it with the answer. Refused unless `awaiting_post_checks`."""
        self.refresh()
        if not self.awaiting_post_checks:
            raise OpsbookError(
                f"run {self.run.id} is {self.run.state.value}, not running with every batch "
                "done: no post-checks now (a stopped run is finished or paused already; one "
                "handed off is for whoever accepts it)"
            )
        self._use_settings(settings)
        return checks.post_checks(
            settings,
            inventory,
            self.run.stack,
            self.hosts,
            approved=self.approved_errata,
            patched=hosts_in(self.run, wire.HostState.OK),
            check_mode=self.options.check_mode,
            on_event=on_event,
            before_play=self.certificate_step(settings),
        )

    def finish(self, post_checks: checks.PostChecks) -> wire.Run:
        """Finish the run after its post-checks: completed if they passed and no host failed,
        else failed; its summary is the run's, with the post-checks' report. The lease ends."""
        self.refresh()
        failed = hosts_in(self.run, wire.HostState.FAILED, wire.HostState.UNREACHABLE)
        ok = post_checks.passed and not failed
        return self._close(
            wire.RunState.COMPLETED if ok else wire.RunState.FAILED, post_checks.report()
        )

    def _close(self, outcome: wire.RunState, note: str) -> wire.Run:
        text = summary(replace(self.run, state=outcome))
        try:
            note = "\n".join(f"  {line}" for line in note.splitlines())
            self.run = self.client.finish(self.run.id, outcome, f"{text}\n{note}")
        finally:
            self._release()
        return self.run

    def _fail_quietly(self, why: str) -> None:
        """Finish the run as failed, if the service lets us; the caller raises its own error."""
        try:
            self.refresh()
            self._close(wire.RunState.FAILED, why)
        except (OpsbookError, OSError):
            self._release()

    def _release(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()

    def note(self, text: str) -> None:
        self.client.note(self.run.id, text)

    def summary(self) -> str:
        """The run's summary from the ledger (every batch, whoever ran it), with why this
        session stopped, if it did."""
        stopped = self.result.stopped if self.result is not None else None
        return summary(self.refresh(), stopped=stopped)

    def history(self) -> list[str]:
        return history(self.client, self.run.id)

    def raise_if_stopped(self) -> None:
        """Raise RollingStopped (with the run's summary) if the patch stopped, unless the run
        was handed off (handing over is how a shift ends, not a failure)."""
        if self.result is not None and not self.result.complete and not self.handed_off:
            raise RollingStopped(self.summary()) from self.result.error

    def in_doubt(self) -> list[str]:
        """The run's hosts in doubt (an interrupted batch): the next patch runs them again."""
        return hosts_in(self.run, wire.HostState.IN_DOUBT)
