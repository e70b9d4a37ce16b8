"""The rolling patch of a stack: batch after batch, each silenced (by the runs service), patched
and health-gated.

For each batch of the plan, in order (batches are numbered from 1, here as everywhere a person or
the runs service sees them):
1. ``observer.batch_starting(number, hosts)``: the place where a run can be paused or handed
   over (raise Paused or StopRun there and the run ends cleanly before the batch). The runs
   driver (opsbook.runs.Ledger) starts the batch at the runs service there, which silences
   exactly the batch's hosts in Alertmanager (not in check mode) and expires the silence when the
   batch ends, however it ends; it returns the silence's ID. This module, and the engineer's
   container, never talk to Alertmanager;
2. ``before_play()``, if given: the credential step (the runs driver passes the SSH certificate's,
   opsbook.sshcert; this module makes no HTTP call of its own for it). If it raises, the batch's
   hosts are not started and the run stops there: no play runs without a credential;
3. the patch play on the batch's hosts, every ansible-runner event passed to
   ``observer.event`` as it happens: if that raises, the play is cancelled and the run stops
   (no host is patched whose events cannot be recorded);
4. the health gate: Prometheus must say every host of the batch is up and healthy. Hosts that
   rebooted need a few seconds to come back, so the gate is asked again every `gate_interval`
   seconds until it passes or `gate_timeout` runs out; the last answer decides, and no answer
   is a failed gate. Each answer goes to ``observer.gate_result``;
5. ``observer.batch_finished(number, batch_result)`` (the runs service expires the batch's
   silence when it hears of it, or when the run's lease runs out should this process die).
The run stops at the first failed gate, when more hosts have failed the play than `max_fail`
allows, when the play is cancelled or times out, or when anything above raises. A host that
failed the play but still passes the gate counts against `max_fail` only; the gate covers every
host of the batch. After the last batch (or the stop), ``observer.finished(rolling_result)``.

Check mode (``check=True``) is a dry run: the play runs with --check, so nothing is installed
and nothing reboots. The runs service sets no silence for it (nothing will alert, and a silence
would hide real alerts), and the gate is asked once per batch, without waiting: there is nothing
to come back, but a dry run still proves that Prometheus answers and the hosts are healthy now.

Hosts end in one of four states (RollingResult): done (play ok and gate passed), failed (play
failed, host unreachable, no result for it, or gate failed), in doubt (the play was cut short:
cancelled, timed out, interrupted, or its events could not be recorded; run the batch again,
the play is idempotent) and not started. `resume_from` is the batch number to pass as
`start_batch` to go on.

The plan is not made here: a run's batches are the runs service's (opsbook.runs.plan_of builds the
RollingPlan from the ledger's run and the one Inventory a runbook loads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from opsbook import health
from opsbook.config import Settings
from opsbook.errors import BatchError, InventoryError, OpsbookError, PlayError
from opsbook.health import Check, GateResult
from opsbook.inventory import Inventory
from opsbook.plays import HostResult, PlayResult, RunnerEvent, run_play, summarize_events

DONE = "done"
FAILED = "failed"
IN_DOUBT = "in doubt"
NOT_STARTED = "not started"

# play statuses of a batch besides ansible-runner's (successful, failed, canceled, timeout)
PLAY_NOT_STARTED = "not started"
PLAY_INTERRUPTED = "interrupted"
_PLAY_ENDED = ("successful", "failed")

DEFAULT_PLAYBOOK = "patch.yml"


class StopRun(Exception):
    """Raise from RunObserver.batch_starting (or batch_finished) to end the run at that boundary.

    The message says why; the run's `stopped` quotes it and `resume_from` is where to go on.
    """


class Paused(StopRun):
    """The run is paused at a batch boundary, e.g. to hand it to another engineer."""


class RunObserver(Protocol):
    """What a rolling patch tells whoever follows it (a widget, the runs ledger), as it happens.

    Subclass it to get no-op defaults for the calls you do not need. Every method but `event`
    is called in the thread that called rolling_patch; `event` is called in the play's worker
    thread. An exception from any method stops the run (see rolling_patch); StopRun from
    batch_starting or batch_finished stops it cleanly at that batch boundary.
    """

    def batch_starting(self, number: int, hosts: Sequence[str]) -> str | None:
        """Batch `number` (from 1) is about to start; raise StopRun (Paused) to stop before it.
        Returns the ID of the Alertmanager silence the runs service set for it, if any."""

    def event(self, event: RunnerEvent) -> None:
        """One ansible-runner event of the batch's play; raising cancels the play."""

    def gate_result(self, number: int, gate_result: GateResult) -> None:
        """One answer of the batch's health gate; the last one before batch_finished decides."""

    def batch_finished(self, number: int, batch_result: BatchResult) -> None:
        """Batch `number` is over (also when it failed or never started its play)."""

    def finished(self, rolling_result: RollingResult) -> None:
        """The run is over: complete, stopped, or interrupted."""


class NullObserver(RunObserver):
    """Follows nothing."""


@dataclass(frozen=True)
class RollingPlan:
    """A run's hosts in the batches they are patched in, and their exporter instances.

    stack, environment, production and batches are the run's, as the runs service resolved and
    planned them (opsbook.runs.plan_of); instances (host -> exporter instance, for the gate) come
    from the inventory. batches[0] is batch 1.
    """

    stack: str
    environment: str
    production: bool
    batches: tuple[tuple[str, ...], ...]
    instances: Mapping[str, str]

    @property
    def hosts(self) -> list[str]:
        """Every host, in batch order."""
        return [host for batch in self.batches for host in batch]

    def batch(self, number: int) -> tuple[str, ...]:
        """The hosts of batch `number` (from 1)."""
        if not 1 <= number <= len(self.batches):
            raise BatchError(f"batch {number} is out of range; expected 1 to {len(self.batches)}")
        return self.batches[number - 1]

    def describe(self) -> str:
        """The plan for a person: stack, environment and each batch's hosts."""
        where = f"{self.environment}, PRODUCTION" if self.production else self.environment
        lines = [
            f"stack {self.stack} ({where}): {len(self.hosts)} hosts in {len(self.batches)} batches"
        ]
        lines += [
            f"  batch {number}: {', '.join(batch)}"
            for number, batch in enumerate(self.batches, start=1)
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class BatchResult:
    """What happened to one batch.

    play_status: ansible-runner's (successful, failed, canceled, timeout), or 'not started'
      (no credential for it) or 'interrupted' (the play was stopped by an interrupt or
      by an observer that could not record its events).
    play: the play's result per host (partial if the play was cut short).
    gate: the last answer of the health gate (None if it was not asked); gate_attempts: how many.
    silence_id: the Alertmanager silence the runs service set for the batch, as its batch start
      answered (None in check mode, or without the runs service).
    record: the play's folder under the runs folder (events, stdout).
    note: why the batch did not end normally, if it did not.
    number: the batch's number in the plan, from 1.
    """

    number: int
    hosts: tuple[str, ...]
    play_status: str
    play: Mapping[str, HostResult]
    gate: GateResult | None
    gate_attempts: int
    silence_id: str | None
    record: Path | None
    started_at: datetime
    finished_at: datetime
    note: str = ""

    def outcome(self, host: str) -> str:
        """The host's state after this batch: done, failed, in doubt or not started."""
        return self._outcomes()[host][0]

    def reasons(self) -> dict[str, str]:
        """Why each host that is not done is not: host -> one line."""
        return {host: why for host, (state, why) in self._outcomes().items() if state != DONE}

    @property
    def done(self) -> list[str]:
        return self._hosts_in(DONE)

    @property
    def failed(self) -> list[str]:
        return self._hosts_in(FAILED)

    @property
    def in_doubt(self) -> list[str]:
        return self._hosts_in(IN_DOUBT)

    @property
    def not_started(self) -> list[str]:
        return self._hosts_in(NOT_STARTED)

    @property
    def play_failures(self) -> list[str]:
        """Hosts the play failed on, was unreachable on, or gave no result for (max_fail)."""
        if self.play_status not in _PLAY_ENDED:
            return []
        return [host for host in self.hosts if _play_problem(self.play.get(host))]

    def _hosts_in(self, state: str) -> list[str]:
        return [host for host, (found, _) in self._outcomes().items() if found == state]

    def _outcomes(self) -> dict[str, tuple[str, str]]:
        if self.play_status == PLAY_NOT_STARTED:
            return {
                host: (NOT_STARTED, self.note or "the play did not start") for host in self.hosts
            }
        if self.play_status not in _PLAY_ENDED:
            why = self.note or f"the play was {self.play_status}"
            return {host: (IN_DOUBT, why) for host in self.hosts}
        gate_problems: dict[str, str] = {}
        if self.gate is not None:
            for check in self.gate.failures:
                gate_problems.setdefault(check.host, f"health gate: {check.check}: {check.message}")
        outcomes = {}
        for host in self.hosts:
            problem = _play_problem(self.play.get(host))
            if problem is None and self.gate is None:
                problem = "health gate not asked" + (f" ({self.note})" if self.note else "")
            problem = problem or gate_problems.get(host)
            outcomes[host] = (FAILED, problem) if problem else (DONE, "")
        return outcomes


def _play_problem(result: HostResult | None) -> str | None:
    if result is None:
        return "no result from the play (the host was not reached)"
    if result.state in ("failed", "unreachable"):
        return f"{result.state} at task '{result.failed_task}': {result.message}"
    return None


@dataclass(frozen=True)
class RollingResult:
    """The outcome of rolling_patch: every batch it ran, and why it stopped if it did.

    start_batch: the number (from 1) of the first batch this call ran; the hosts of the batches
      before it are not counted here (the run's record has them: opsbook.runs.summary).
    stopped: None when every batch from start_batch on ran (hosts may still have failed, as
      many as max_fail allowed); else the reason the run stopped.
    resume_from: the batch number to give as start_batch to go on (None when complete).
    error: the exception that stopped the run, if one did (kept for its traceback).
    """

    plan: RollingPlan
    check: bool
    start_batch: int
    batches: tuple[BatchResult, ...]
    stopped: str | None
    resume_from: int | None
    max_fail: int = 0
    error: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def outcomes(self) -> dict[str, str]:
        """host -> done / failed / in doubt / not started, for the hosts from start_batch on."""
        states: dict[str, str] = {}
        for batch_hosts in self.plan.batches[self.start_batch - 1 :]:
            for host in batch_hosts:
                states[host] = NOT_STARTED
        for batch in self.batches:
            for host in batch.hosts:
                states[host] = batch.outcome(host)
        return states

    @property
    def done(self) -> list[str]:
        return [host for host, state in self.outcomes().items() if state == DONE]

    @property
    def failed(self) -> list[str]:
        return [host for host, state in self.outcomes().items() if state == FAILED]

    @property
    def in_doubt(self) -> list[str]:
        return [host for host, state in self.outcomes().items() if state == IN_DOUBT]

    @property
    def not_started(self) -> list[str]:
        return [host for host, state in self.outcomes().items() if state == NOT_STARTED]

    def summary(self) -> str:
        """Which hosts are done, failed, in doubt and not started, and why the run stopped."""
        plan = self.plan
        mode = "DRY RUN (check mode) of the rolling patch" if self.check else "Rolling patch"
        verdict = "complete" if self.complete else f"STOPPED: {self.stopped}"
        if self.complete and self.failed:
            verdict += f", with {len(self.failed)} failed (max_fail={self.max_fail})"
        lines = [f"{mode} of {plan.stack} ({plan.environment}): {verdict}"]
        if self.start_batch > 1:
            lines.append(
                f"  went on from batch {self.start_batch} of {len(plan.batches)}; batches "
                f"1 to {self.start_batch - 1} were run before (the run's record has them)"
            )
        reasons: dict[str, str] = {}
        for batch in self.batches:
            reasons.update(batch.reasons())
        for label, hosts in (
            (DONE, self.done),
            (FAILED, self.failed),
            (IN_DOUBT, self.in_doubt),
            (NOT_STARTED, self.not_started),
        ):
            lines.append(f"  {label} ({len(hosts)}): {', '.join(hosts) or '-'}")
            if label in (FAILED, IN_DOUBT):
                lines += [f"    {host}: {reasons[host]}" for host in hosts if host in reasons]
        if self.resume_from is not None:
            lines.append(
                f"  to go on once the cause is fixed: start_batch={self.resume_from} "
                "(the patch play is idempotent)"
            )
        return "\n".join(lines)

    def raise_if_stopped(self) -> None:
        """Raise RollingStopped (with the summary) unless the run is complete."""
        if not self.complete:
            raise RollingStopped(self.summary()) from self.error


class RollingStopped(OpsbookError):
    """A rolling patch stopped before its end; the message is its summary."""


# The age of the newest sample of each host's exporter, in Prometheus' own clock.
FRESHNESS_QUERY = 'time() - max by (instance) (timestamp(up{instance=~"{instances}"}))'


# Seconds between questions to a gate that has not passed yet. After a reboot the gate waits for
# Prometheus' first scrape of the host newer than the play's end; asking often finds it sooner,
# and one question costs Prometheus about 10 ms (docs/benchmarks.md).
GATE_INTERVAL = 0.5


def freshness_check(since: datetime) -> Check:
    """A check that passes for a host only if Prometheus has scraped it after `since`.

    Right after a reboot Prometheus may still answer from a scrape made before it, when the host
    was up: a gate asked then would pass on stale data. This compares two durations, the age
    of the host's newest sample (in Prometheus' clock) and the time since `since` (in ours), so
    the two machines' clocks need not agree. Build it anew for each question.
    """
    elapsed = max((datetime.now(UTC) - since).total_seconds(), 0.0)
    return Check(
        name="fresh",
        query=FRESHNESS_QUERY,
        op="<",
        threshold=elapsed,
        description="age of the last scrape in seconds; it must be newer than the play's end",
    )


def wait_for_gate(
    prometheus_url: str,
    instances_by_host: Mapping[str, str],
    checks: Sequence[Check] = health.DEFAULT_CHECKS,
    *,
    timeout: float,
    interval: float = GATE_INTERVAL,
    fresh_after: datetime | None = None,
    cancel: threading.Event | None = None,
    on_result: Callable[[GateResult], None] | None = None,
) -> tuple[GateResult, int]:
    """Ask the health gate until it passes or `timeout` seconds are up; the last answer decides.

    fresh_after: if given (the end of a play that changed the hosts), the gate also requires
    every host to have been scraped since then (freshness_check), so no answer from before a
    reboot counts. The gate is asked at once, then every `interval` seconds and a last time
    when `timeout` is up (timeout 0: once); a set `cancel` ends the wait with the last answer.
    Returns that answer and how many times the gate was asked.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        asked = list(checks)
        if fresh_after is not None:
            asked.append(freshness_check(fresh_after))
        result = health.gate(prometheus_url, instances_by_host, asked)
        attempts += 1
        if on_result is not None:
            on_result(result)
        remaining = deadline - time.monotonic()
        if result.passed or remaining <= 0:
            return result, attempts
        if _wait(min(interval, remaining), cancel):  # the last question is at the deadline
            return result, attempts


def _wait(seconds: float, cancel: threading.Event | None) -> bool:
    """Sleep; True if `cancel` was set meanwhile."""
    if cancel is None:
        time.sleep(seconds)
        return False
    return cancel.wait(seconds)


def rolling_patch(
    plan: RollingPlan,
    settings: Settings,
    *,
    playbook: str = DEFAULT_PLAYBOOK,
    check: bool = False,
    max_fail: int = 0,
    checks: Sequence[Check] = health.DEFAULT_CHECKS,
    gate_timeout: float = 120.0,
    gate_interval: float = GATE_INTERVAL,
    start_batch: int = 1,
    extravars: Mapping[str, Any] | None = None,
    observer: RunObserver | None = None,
    cancel: threading.Event | None = None,
    play_timeout: float | None = None,
    inventory: Inventory | None = None,
    before_play: Callable[[], object] | None = None,
) -> RollingResult:
    """Patch the plan's batches from batch `start_batch` (from 1) on; see the module docstring.

    playbook: file name under settings.playbooks_dir, run per batch with the batch as limit.
    max_fail: how many hosts may fail the play (in this call) before the run stops.
    gate_timeout / gate_interval: seconds; see wait_for_gate. After a play that changed
      something, the gate also requires a scrape newer than the play's end (freshness_check).
    cancel: set it (a widget's Stop button) to stop the play in flight and the run.
    play_timeout: seconds after which a batch's play is stopped (its hosts are then in doubt).
    inventory: the run's Inventory, loaded once per run (default: settings.inventory, loaded once
      here).
    before_play: called before each batch's play (opsbook.runs passes
      sshcert.certificate_step: a current SSH certificate, the run's when it is production); if it
      raises, that batch's hosts are not started and the run stops, saying why.
    Returns the RollingResult. It raises only for a wrong argument, a missing playbook or a host
    without an exporter instance in the plan (all before anything runs), and
    for a KeyboardInterrupt, which is re-raised after the play has stopped and observer.finished
    has heard of it (the summary is added to it as a note).
    """
    if not 1 <= start_batch <= len(plan.batches):
        raise BatchError(
            f"start_batch {start_batch} is out of range; expected 1 to {len(plan.batches)}"
        )
    if isinstance(max_fail, bool) or not isinstance(max_fail, int) or max_fail < 0:
        raise BatchError(f"max_fail {max_fail!r} is invalid; expected a whole number >= 0")
    if gate_timeout < 0 or gate_interval <= 0:
        raise BatchError(
            f"gate_timeout {gate_timeout} and gate_interval {gate_interval} are invalid; "
            "expected seconds, gate_timeout >= 0 and gate_interval > 0"
        )
    playbook_path = settings.playbook(playbook)
    if not playbook_path.is_file():
        raise PlayError(f"playbook '{playbook_path}' does not exist; expected a playbook file")
    unplaced = [host for host in plan.hosts if host not in plan.instances]
    if unplaced:
        raise InventoryError(
            f"no exporter instance for {', '.join(unplaced)}; expected the plan's instances "
            "from the inventory (opsbook.runs.plan_of)"
        )
    run = _Run(
        inventory=inventory or Inventory.load(settings.inventory),
        plan=plan,
        settings=settings,
        playbook=playbook_path,
        check=check,
        checks=tuple(checks),
        gate_timeout=gate_timeout,
        gate_interval=gate_interval,
        extravars=dict(extravars or {}),
        observer=observer if observer is not None else NullObserver(),
        cancel=cancel,
        play_timeout=play_timeout,
        before_play=before_play,
    )
    return run.execute(start_batch, max_fail)


@dataclass
class _Run:
    """One call of rolling_patch: its options, and what it has done so far."""

    inventory: Inventory
    plan: RollingPlan
    settings: Settings
    playbook: Path
    check: bool
    checks: tuple[Check, ...]
    gate_timeout: float
    gate_interval: float
    extravars: dict[str, Any]
    observer: RunObserver
    cancel: threading.Event | None
    play_timeout: float | None
    before_play: Callable[[], object] | None = None
    batches: list[BatchResult] = field(default_factory=list)
    current: int = 1  # the number of the batch in flight
    max_fail: int = 0

    def execute(self, start_batch: int, max_fail: int) -> RollingResult:
        self.max_fail = max_fail
        stopped: str | None = None
        resume_from: int | None = None
        error: Exception | None = None
        try:
            for number in range(start_batch, len(self.plan.batches) + 1):
                self.current = number
                stopped, resume_from, error = self._batch(number, max_fail)
                if stopped is not None:
                    break
        except KeyboardInterrupt as interrupt:
            stopped = f"interrupted (KeyboardInterrupt) in batch {self.current}"
            result = self._result(start_batch, stopped, self.current, None)
            try:
                self.observer.finished(result)
            finally:
                interrupt.add_note(result.summary())
            raise
        result = self._result(start_batch, stopped, resume_from, error)
        try:
            self.observer.finished(result)
        except Exception as failure:
            failure.add_note(f"observer.finished failed; the run's summary:\n{result.summary()}")
            raise
        return result

    def _result(
        self,
        start_batch: int,
        stopped: str | None,
        resume_from: int | None,
        error: BaseException | None,
    ) -> RollingResult:
        return RollingResult(
            plan=self.plan,
            check=self.check,
            start_batch=start_batch,
            batches=tuple(self.batches),
            stopped=stopped,
            resume_from=resume_from,
            max_fail=self.max_fail,
            error=error,
        )

    def _batch(self, number: int, max_fail: int) -> tuple[str | None, int | None, Exception | None]:
        """Run one batch; returns why the run stops (None to go on), where to resume, the error."""
        which = f"batch {number} of {len(self.plan.batches)}"
        if self.cancel is not None and self.cancel.is_set():
            return f"cancelled before {which}", number, None
        hosts = self.plan.batch(number)
        try:
            silence_id = self.observer.batch_starting(number, list(hosts))
        except StopRun as stop:
            verb = "paused" if isinstance(stop, Paused) else "stopped"
            return f"{verb} before {which}: {stop}", number, None
        except Exception as error:
            return f"before {which}: the observer failed: {_describe(error)}", number, error
        failed_before = sum(len(batch.play_failures) for batch in self.batches)
        batch, failure = self._patch(number, hosts, silence_id)
        self.batches.append(batch)
        stop_after: StopRun | None = None
        observer_error: Exception | None = None
        try:
            self.observer.batch_finished(number, batch)
        except StopRun as stop:
            stop_after = stop
        except Exception as error:
            observer_error = error
        if failure is not None and not isinstance(failure, Exception):
            if observer_error is not None:
                failure.add_note(f"observer.batch_finished failed: {_describe(observer_error)}")
            raise failure  # KeyboardInterrupt: execute() reports it, then re-raises it
        reasons = []
        if failure is not None or batch.play_status not in _PLAY_ENDED:
            reasons.append(batch.note or f"the play was {batch.play_status}")
        else:
            if batch.gate is not None and not batch.gate.passed:
                failing = sorted({r.host for r in batch.gate.failures}, key=hosts.index)
                reasons.append(f"health gate failed for {', '.join(failing)}")
            failed_so_far = failed_before + len(batch.play_failures)
            if failed_so_far > max_fail:
                reasons.append(
                    f"{failed_so_far} host{'s' if failed_so_far > 1 else ''} failed the play, "
                    f"more than max_fail={max_fail}"
                )
        if observer_error is not None:
            reasons.append(f"the observer could not take the result: {_describe(observer_error)}")
        if reasons:
            return f"{which}: {'; '.join(reasons)}", number, failure or observer_error
        if number == len(self.plan.batches):
            return None, None, None  # the last batch is done: nothing left to stop before
        if self.cancel is not None and self.cancel.is_set():
            return f"cancelled after {which}", number + 1, None
        if stop_after is not None:
            verb = "paused" if isinstance(stop_after, Paused) else "stopped"
            return f"{verb} after {which}: {stop_after}", number + 1, None
        return None, None, None

    def _patch(
        self, number: int, hosts: tuple[str, ...], silence_id: str | None
    ) -> tuple[BatchResult, BaseException | None]:
        """Credential, play, gate; never raises: what went wrong is returned."""
        started_at = datetime.now(UTC)
        events: list[RunnerEvent] = []
        gates: list[GateResult] = []
        status = PLAY_NOT_STARTED
        play: PlayResult | None = None
        failure: BaseException | None = None

        def on_event(event: RunnerEvent) -> None:
            events.append(event)
            self.observer.event(event)

        def on_gate(result: GateResult) -> None:
            gates.append(result)
            self.observer.gate_result(number, result)

        try:
            if self.before_play is not None:
                self.before_play()
            status = PLAY_INTERRUPTED
            play = run_play(
                self.playbook,
                self.inventory,
                runs_dir=self.settings.runs_dir,
                hosts=list(hosts),
                extravars=self.extravars,
                check=self.check,
                on_event=on_event,
                cancel=self.cancel,
                timeout=self.play_timeout,
            )
            status = play.status
            if status in _PLAY_ENDED:
                self._gate(hosts, play, on_gate)
        except BaseException as caught:  # KeyboardInterrupt too: _batch re-raises it
            failure = caught
        note = ""
        if failure is not None:
            where = {PLAY_NOT_STARTED: "before the play", PLAY_INTERRUPTED: "during the play"}
            note = f"{where.get(status, 'after the play')}: {_describe(failure)}"
        result = BatchResult(
            number=number,
            hosts=hosts,
            play_status=status,
            play=play.hosts if play is not None else summarize_events(events),
            gate=gates[-1] if gates else None,
            gate_attempts=len(gates),
            silence_id=silence_id,
            record=play.private_data_dir if play is not None else _record_of(failure),
            started_at=started_at,
            finished_at=datetime.now(UTC),
            note=note,
        )
        return result, failure

    def _gate(
        self, hosts: tuple[str, ...], play: PlayResult, on_gate: Callable[[GateResult], None]
    ) -> None:
        """The batch's health gate: waited for after a real patch, asked once in check mode."""
        changed = any(result.changed for result in play.hosts.values())
        wait_for_gate(
            self.settings.prometheus_url,
            {host: self.plan.instances[host] for host in hosts},
            self.checks,
            timeout=0 if self.check else self.gate_timeout,
            interval=self.gate_interval,
            fresh_after=datetime.now(UTC) if changed and not self.check else None,
            cancel=self.cancel,
            on_result=on_gate,
        )


def _describe(error: BaseException) -> str:
    if isinstance(error, OpsbookError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _record_of(failure: BaseException | None) -> Path | None:
    """The play's folder, from the note run_play adds to an exception that cancelled it."""
    for note in getattr(failure, "__notes__", []):
        marker = "its record is in "
        if marker in note:
            return Path(note.split(marker, 1)[1].strip())
    return None
