"""The runs ledger, from a runbook: record a rolling patch as it goes, hand it over, take it over.

A run lives in the runs service (opsbook/service), not in a kernel: whoever owns it renews its
lease while working on it, records every ansible-runner event before the run moves on, and the
next engineer can carry on from their own container. This module is the client side:

- `RunsClient`: the service's JSON API (shapes: opsbook.contract.wire), with retries: a service
  that restarts or hiccups costs a few seconds, not a run;
- `Ledger`: a rolling-patch observer (opsbook.rolling.RunObserver) that records a run: batches,
  per-host results, health gates and every runner event, and pauses at a batch boundary when
  the run has been handed off or its lease was lost. If the service cannot be reached for
  longer than the retry budget, the batch in flight is cancelled and the run stops: no host is
  patched whose events cannot be recorded;
- `LeaseKeeper`: the thread that renews the owner's lease;
- `RunSession`: what a runbook cell holds: the run, its rolling patch in a background thread (so
  the notebook stays free to hand it off), and the handoff, accept and takeover verbs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from opsbook.config import Settings
from opsbook.contract import wire
from opsbook.errors import OpsbookError
from opsbook.health import GateResult
from opsbook.plays import RunnerEvent
from opsbook.rolling import (
    DONE,
    FAILED,
    BatchResult,
    NullObserver,
    Paused,
    RollingPlan,
    RollingResult,
    RunObserver,
    StopRun,
    rolling_patch,
)

W = TypeVar("W", bound=wire.Wire)

# Answers that mean "not now" rather than "no": retried until the budget runs out.
RETRY_STATUSES = frozenset({502, 503, 504})


class RunsError(OpsbookError):
    """The runs service refused: `code` (opsbook.contract.wire.ErrorCode) and the service's message."""

    def __init__(self, reply: wire.ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply

    @property
    def code(self) -> wire.ErrorCode:
        return self.reply.code


class LedgerUnavailable(OpsbookError):
    """The runs service did not answer within the retry budget."""


class LeaseLost(StopRun):
    """Someone else owns the run now (a takeover), or its lease ran out: stop working on it."""


@dataclass
class RunsClient:
    """The runs service's API, as the engineer whose token it is.

    url: the service's base URL, e.g. http://runs:8000/services/runs (OPSBOOK_RUNS_URL);
    token: a JupyterHub token of the engineer (their server's JUPYTERHUB_API_TOKEN).
    retry_for: seconds a request keeps being retried while the service does not answer.
    """

    url: str
    token: str = field(repr=False)
    timeout: float = 5.0
    retry_for: float = 60.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    @classmethod
    def from_env(cls, **options: Any) -> RunsClient:
        missing = [n for n in ("OPSBOOK_RUNS_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(n)]
        if missing:
            raise OpsbookError(
                f"{' and '.join(missing)} not set: the runs service is reached from an engineer's "
                "server, where the hub sets them"
            )
        return cls(os.environ["OPSBOOK_RUNS_URL"], os.environ["JUPYTERHUB_API_TOKEN"], **options)

    # --- transport ---

    def call(self, method: str, path: str, body: wire.Wire | None, reply: type[W]) -> W:
        """One API call, retried while the service does not answer; refusals raise RunsError."""
        url = f"{self.url.rstrip('/')}/{wire.API_PATH}/{path}"
        headers = {"Authorization": f"token {self.token}"}
        payload = body.to_dict() if body is not None else None
        deadline = time.monotonic() + self.retry_for
        pause = 0.2
        while True:
            try:
                answer = self.session.request(
                    method, url, json=payload, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if answer.status_code not in RETRY_STATUSES:
                    return self._read(answer, reply)
                problem = f"HTTP {answer.status_code}"
            if time.monotonic() + pause > deadline:
                raise LedgerUnavailable(
                    f"the runs service at {self.url} did not answer {method} {path} for "
                    f"{self.retry_for:.0f} s ({problem})"
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    @staticmethod
    def _read(answer: requests.Response, reply: type[W]) -> W:
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.ok:
            return reply.from_dict(body)
        try:
            error = wire.ErrorReply.from_body(body)
        except wire.WireError:
            error = wire.ErrorReply(
                status=answer.status_code,
                code=wire.ErrorCode.INTERNAL,
                message=f"HTTP {answer.status_code} from the runs service: {answer.text[:200]}",
            )
        raise RunsError(error)

    # --- the API ---

    def me(self) -> wire.Me:
        return self.call("GET", "me", None, wire.Me)

    def oncall(self) -> list[str]:
        return self.call("GET", "oncall", None, wire.Oncall).users

    def runs(self) -> list[wire.Run]:
        return self.call("GET", "runs", None, wire.RunList).runs

    def run(self, run_id: int) -> wire.Run:
        return self.call("GET", f"runs/{run_id}", None, wire.Run)

    def events(self, run_id: int, since: int = 0) -> Iterator[wire.Event]:
        """Every event of the run after `since`, oldest first, page by page."""
        while True:
            page = self.call("GET", f"runs/{run_id}/events?since={since}", None, wire.EventPage)
            yield from page.events
            if not page.more:
                return
            since = page.next_since

    def create(self, request: wire.CreateRun) -> wire.Run:
        return self.call("POST", "runs", request, wire.Run)

    def append(self, run_id: int, events: Sequence[wire.EventIn]) -> wire.AppendResult:
        body = wire.AppendEvents(events=list(events))
        return self.call("POST", f"runs/{run_id}/events", body, wire.AppendResult)

    def start_batch(self, run_id: int, number: int, hosts: Sequence[str]) -> wire.Run:
        body = wire.BatchStart(hosts=list(hosts))
        return self.call("POST", f"runs/{run_id}/batches/{number}/start", body, wire.Run)

    def finish_batch(
        self, run_id: int, number: int, results: Sequence[wire.HostResult]
    ) -> wire.Run:
        body = wire.BatchFinish(results=list(results))
        return self.call("POST", f"runs/{run_id}/batches/{number}/finish", body, wire.Run)

    def gate(self, run_id: int, number: int, report: wire.GateReport) -> wire.Run:
        return self.call("POST", f"runs/{run_id}/batches/{number}/gate", report, wire.Run)

    def lease(self, run_id: int) -> wire.LeaseGrant:
        return self.call("POST", f"runs/{run_id}/lease", wire.Empty(), wire.LeaseGrant)

    def note(self, run_id: int, text: str) -> wire.Event:
        return self.call("POST", f"runs/{run_id}/notes", wire.NoteIn(text=text), wire.Event)

    def handoff(self, run_id: int, to: str, note: str = "") -> wire.Run:
        body = wire.HandoffRequest(to=to, note=note)
        return self.call("POST", f"runs/{run_id}/handoff", body, wire.Run)

    def pause(self, run_id: int) -> wire.Run:
        return self.call("POST", f"runs/{run_id}/pause", wire.Empty(), wire.Run)

    def accept(self, run_id: int) -> wire.Run:
        return self.call("POST", f"runs/{run_id}/accept", wire.Empty(), wire.Run)

    def takeover(self, run_id: int, reason: str) -> wire.Run:
        body = wire.ReasonRequest(reason=reason)
        return self.call("POST", f"runs/{run_id}/takeover", body, wire.Run)

    def resume(self, run_id: int) -> wire.Run:
        return self.call("POST", f"runs/{run_id}/resume", wire.Empty(), wire.Run)

    def finish(self, run_id: int, outcome: wire.RunState, summary: str) -> wire.Run:
        body = wire.FinishRequest(outcome=outcome, summary=summary)
        return self.call("POST", f"runs/{run_id}/finish", body, wire.Run)

    def abort(self, run_id: int, reason: str) -> wire.Run:
        body = wire.ReasonRequest(reason=reason)
        return self.call("POST", f"runs/{run_id}/abort", body, wire.Run)


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

    def __init__(self, client: RunsClient, run: wire.Run) -> None:
        self.client = client
        self.run_id = run.id
        self.every = max(1.0, run.lease_seconds / 3)
        self.lost: str | None = None
        self.handoff: wire.Handoff | None = run.handoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{run.id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

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


class Ledger(NullObserver):
    """Records a rolling patch in the runs ledger as it happens (a RunObserver).

    Events are sent in small batches from the play's thread, and every batch boundary waits
    until all of them are stored: the run moves on only once the ledger has the record. Other
    observers (the notebook's widget) hear everything through `forward`.
    """

    def __init__(
        self,
        client: RunsClient,
        run: wire.Run,
        *,
        forward: RunObserver | None = None,
        send_every: int = 50,
        send_seconds: float = 1.0,
    ) -> None:
        self.client = client
        self.run = run
        self.forward = forward or NullObserver()
        self.send_every = send_every
        self.send_seconds = send_seconds
        self.keeper = LeaseKeeper(client, run).start()
        self.recorded = 0  # runner events stored (or found already stored) in the ledger
        self.seen = 0  # runner events the plays produced
        self._pending: list[wire.EventIn] = []
        self._last_send = time.monotonic()
        self._batch = 0
        self._gate: GateResult | None = None
        self._paused = False
        self._lock = threading.Lock()

    def batch_starting(self, index: int, hosts: Sequence[str]) -> None:
        self.send_events()
        self._check_lease()
        if self.keeper.handoff is not None:
            handoff = self.keeper.handoff
            self.run = self.client.pause(self.run.id)
            self.keeper.stop()
            self._paused = True
            raise Paused(f"handed off to {handoff.to} by {handoff.by}: {handoff.note}".rstrip(": "))
        self._batch = index + 1
        self._gate = None
        self.run = self.client.start_batch(self.run.id, self._batch, hosts)
        self.forward.batch_starting(index, hosts)

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

    def gate_result(self, index: int, gate_result: GateResult) -> None:
        self.forward.gate_result(index, gate_result)
        self._gate = gate_result

    def batch_finished(self, index: int, batch_result: BatchResult) -> None:
        self.forward.batch_finished(index, batch_result)
        self.send_events()
        self.run = self.client.finish_batch(self.run.id, index + 1, host_results(batch_result))
        if self._gate is not None:
            self.run = self.client.gate(self.run.id, index + 1, gate_report(self._gate))

    def finished(self, rolling_result: RollingResult) -> None:
        self.forward.finished(rolling_result)
        try:
            self.send_events()
            if self._paused or self.keeper.lost:
                return  # paused for a handoff, or no longer ours: nothing to close
            if rolling_result.complete:
                outcome = wire.RunState.FAILED if rolling_result.failed else wire.RunState.COMPLETED
                self.run = self.client.finish(self.run.id, outcome, rolling_result.summary())
            elif rolling_result.in_doubt or isinstance(rolling_result.error, KeyboardInterrupt):
                # Interrupted: pause, so the owner (or, once handed off, someone else) resumes.
                self.run = self.client.pause(self.run.id)
            else:
                self.run = self.client.finish(
                    self.run.id, wire.RunState.FAILED, rolling_result.summary()
                )
        finally:
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


def resume_batch(run: wire.Run) -> int:
    """The 0-based index of the first batch not done: where the run goes on from."""
    for batch in run.batches:
        if batch.state is not wire.BatchState.DONE:
            return batch.number - 1
    raise OpsbookError(f"run {run.id} has no batch left to run")


def plan_of(run: wire.Run, instances: dict[str, str]) -> RollingPlan:
    """The run's recorded plan, as a rolling plan (the batches are the ledger's, not re-planned)."""
    return RollingPlan(
        stack=run.stack,
        environment=run.environment,
        batches=tuple(tuple(batch.hosts) for batch in run.batches),
        instances=instances,
    )


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


class RunSession:
    """One engineer's hold on a run: its rolling patch in the background, and the verbs.

    The patch runs in a thread, so that the notebook stays free for `handoff()` while a batch is
    in flight (a notebook's cells run one at a time: a patch in the foreground would block it).
    """

    def __init__(self, client: RunsClient, run: wire.Run) -> None:
        self.client = client
        self.run = run
        self.result: RollingResult | None = None
        self.error: BaseException | None = None
        self.ledger: Ledger | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        client: RunsClient,
        plan: RollingPlan,
        *,
        runbook: str,
        parameters: dict[str, Any] | None = None,
    ) -> RunSession:
        """Register a new run (refused if this runbook already runs on this stack)."""
        request = wire.CreateRun(
            runbook=runbook,
            stack=plan.stack,
            environment=plan.environment,
            plan=[list(batch) for batch in plan.batches],
            parameters=dict(parameters or {}),
        )
        return cls(client, client.create(request))

    @classmethod
    def accept(cls, client: RunsClient, run_id: int) -> RunSession:
        """Accept a run handed to you: you own it now."""
        return cls(client, client.accept(run_id))

    @classmethod
    def takeover(cls, client: RunsClient, run_id: int, reason: str) -> RunSession:
        """Take over an orphaned run (on call): its interrupted batch's hosts are in doubt."""
        return cls(client, client.takeover(run_id, reason))

    def patch(
        self,
        plan: RollingPlan,
        settings: Settings,
        *,
        forward: RunObserver | None = None,
        **options: Any,
    ) -> RunSession:
        """Start the rolling patch of the run's remaining batches in the background.

        `options` go to opsbook.rolling.rolling_patch (check, max_fail, gate_timeout ...).
        """
        if self._thread is not None and self._thread.is_alive():
            raise OpsbookError(f"run {self.run.id} is already patching")
        self.result = self.error = None
        self.ledger = Ledger(self.client, self.run, forward=forward)
        start_batch = resume_batch(self.run)

        def work() -> None:
            try:
                self.result = rolling_patch(
                    plan, settings, observer=self.ledger, start_batch=start_batch, **options
                )
            except BaseException as error:  # kept for wait(), which re-raises it
                self.error = error
            finally:
                self.run = self.ledger.run

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
            now = self.client.run(self.run.id).batches[number - 1].state
            if now not in order or order.index(now) >= order.index(state):
                return
            if self._thread is not None and not self._thread.is_alive():
                return
            time.sleep(0.2)
        raise TimeoutError(f"batch {number} of run {self.run.id} not done within {timeout} s")

    def handoff(self, to: str, note: str = "") -> wire.Run:
        """Hand the run to an on-call engineer: the batch in flight finishes, then it pauses."""
        self.run = self.client.handoff(self.run.id, to, note)
        if self.ledger is not None:
            self.ledger.keeper.handoff = self.run.handoff
        return self.run

    def note(self, text: str) -> None:
        self.client.note(self.run.id, text)

    def history(self) -> list[str]:
        return history(self.client, self.run.id)
