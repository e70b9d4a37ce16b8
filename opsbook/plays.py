"""Run a playbook with ansible-runner, the way a notebook kernel needs it run.

What a plain ``ansible_runner.run`` gets wrong inside Jupyter, and what this does instead:
- Without a cancel callback ansible-runner installs its own SIGINT/SIGTERM handlers, so the
  kernel's interrupt button no longer reaches the cell (ansible-runner#1075). Here a cancel callback
  is always given, the run happens in a worker thread, and an interrupt of the calling thread
  cancels the play, waits until ansible has stopped, then re-raises.
- A reused private data directory silently reuses old env/ files (extra vars, settings) from an
  earlier run. Each run gets a new one under `runs_dir`, named for when and what it ran, and keeps
  ansible's stdout and events there as the run's record.
- An event handler that does not return True makes ansible-runner drop the event.
- ansible-runner cancels (and times out) with SIGKILL to ansible-playbook's process group, which
  leaves ansible-core's workers, and the tasks they run, going. Here cancel and timeout go through
  opsbook.stopper, which stops ansible-playbook and its workers with SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner

from opsbook.errors import PlayError
from opsbook.inventory import Inventory, natural_key
from opsbook.stopper import PlayStopper

RunnerEvent = dict[str, Any]

# How often ansible-runner asks the cancel callback while ansible prints nothing (its default of 5 s
# would make a cancelled `sleep` linger that long).
_CANCEL_POLL_SECONDS = 0.25
_WAIT_SECONDS = 0.1

# What each per-host task event means for the host, and the recap's name for each count.
_OUTCOME_OF_EVENT = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}

_RECAP_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
}


@dataclass(frozen=True)
class HostResult:
    """What a play did to one host: task counts, and the first failure if the host failed."""

    host: str
    ok: int
    changed: int
    failed: int
    unreachable: int
    skipped: int
    failed_task: str | None
    message: str | None

    @property
    def state(self) -> str:
        """One word for the host, worst first: unreachable, failed, changed or ok."""
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"


@dataclass(frozen=True)
class PlayResult:
    """The outcome of one run_play call and where its record lives on disk.

    `status` is successful, failed, canceled or timeout. A play stopped by `cancel`, an interrupt
    or the timeout is canceled or timeout even though ansible-runner, which saw ansible-playbook
    end by SIGTERM, calls it failed.
    """

    status: str
    rc: int | None
    hosts: dict[str, HostResult]
    events: list[RunnerEvent]
    private_data_dir: Path
    artifact_dir: Path
    stdout: str


def summarize_events(events: Iterable[Mapping[str, Any]]) -> dict[str, HostResult]:
    """Per-host results from ansible-runner events, in natural host order.

    Counts come from the play recap (playbook_on_stats) when there is one, since it also accounts
    for rescued blocks; a cancelled play has none, so the task events are counted as they came.
    A failure with ignore_errors counts as ok, as in Ansible's recap.
    """
    counts: dict[str, Counter[str]] = {}
    first_failure: dict[str, tuple[str, str]] = {}
    recap: Mapping[str, Any] | None = None
    for event in events:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            recap = data
            continue
        host = data.get("host")
        outcome = _OUTCOME_OF_EVENT.get(kind) if host else None
        if outcome is None:
            continue
        result = data.get("res") or {}
        if outcome == "failed" and data.get("ignore_errors"):
            outcome = "ok"
        tally = counts.setdefault(host, Counter())
        tally[outcome] += 1
        if outcome == "ok" and result.get("changed"):
            tally["changed"] += 1
        if outcome in ("failed", "unreachable"):
            first_failure.setdefault(host, (str(data.get("task", "")), _failure_message(result)))
    if recap is not None:
        counts = _counts_from_recap(recap)
    results = {}
    for host in sorted(counts, key=natural_key):
        tally = counts[host]
        failure = first_failure.get(host) if tally["failed"] or tally["unreachable"] else None
        results[host] = HostResult(
            host=host,
            ok=tally["ok"],
            changed=tally["changed"],
            failed=tally["failed"],
            unreachable=tally["unreachable"],
            skipped=tally["skipped"],
            failed_task=failure[0] if failure else None,
            message=failure[1] if failure else None,
        )
    return results


def run_play(
    playbook: str | os.PathLike[str],
    inventory: Inventory | str | os.PathLike[str],
    *,
    runs_dir: str | os.PathLike[str],
    hosts: Sequence[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
    check: bool = False,
    on_event: Callable[[RunnerEvent], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> PlayResult:
    """Run a playbook on the inventory (limited to `hosts`, if given) and wait for it to end.

    inventory: the run's Inventory (loaded once per run), or a path to load it from.

    check: Ansible's check mode (--check), a dry run.
    on_event: called with each ansible-runner event as it happens (in the play's worker
      thread), e.g. to stream events to the ledger. If it raises, the play is cancelled and its
      exception re-raised once ansible has stopped.
    cancel: set it (from another thread, a widget's button) to stop the play; status 'canceled'.
    timeout: seconds after which the play is stopped; status 'timeout'.
    Hosts are checked against the inventory first: a limit naming no known host would otherwise
    be a 'successful' play that touched nothing. ansible-playbook runs in the playbook's folder,
    so an ansible.cfg there applies, as when the playbook is run by hand.
    """
    playbook_path = Path(playbook).expanduser().resolve()
    if not playbook_path.is_file():
        raise PlayError(f"playbook '{playbook}' does not exist; expected a playbook file")
    fleet = inventory if isinstance(inventory, Inventory) else Inventory.load(inventory)
    if hosts is not None:
        if not hosts:
            raise PlayError("hosts is an empty list; expected hosts to run on, or None for all")
        fleet.check_hosts(hosts)
    if timeout is not None and not timeout > 0:
        raise PlayError(f"timeout {timeout} is invalid; expected seconds > 0, or None")

    private_data_dir = _fresh_private_data_dir(Path(runs_dir), playbook_path)
    stopper = PlayStopper(cancel, timeout)
    events: list[RunnerEvent] = []
    callback_errors: list[Exception] = []

    def handle_event(event: RunnerEvent) -> bool:
        events.append(dict(event))
        stopper.saw(event)
        if on_event is not None and not callback_errors:
            try:
                on_event(event)
            except Exception as error:
                callback_errors.append(error)
                stopper.request()
        return True

    runner = _run_in_worker(
        stopper,
        private_data_dir=str(private_data_dir),
        project_dir=str(playbook_path.parent),
        playbook=str(playbook_path),
        inventory=str(fleet.path),
        limit=",".join(hosts) if hosts else None,
        extravars=dict(extravars or {}),
        cmdline="--check" if check else None,
        envvars=_ansible_environment(),
        settings={"pexpect_timeout": _CANCEL_POLL_SECONDS},
        quiet=True,
        event_handler=handle_event,
        cancel_callback=stopper,
    )
    if callback_errors:
        callback_errors[0].add_note(f"the play was cancelled; its record is in {private_data_dir}")
        raise callback_errors[0]
    artifact_dir = Path(runner.config.artifact_dir)
    stdout_file = artifact_dir / "stdout"
    stopped_early = stopper.reason is not None and runner.status != "successful"
    return PlayResult(
        status=stopper.reason if stopped_early else runner.status,
        rc=runner.rc,
        hosts=summarize_events(events),
        events=events,
        private_data_dir=private_data_dir,
        artifact_dir=artifact_dir,
        stdout=stdout_file.read_text(errors="replace") if stdout_file.exists() else "",
    )


def _counts_from_recap(recap: Mapping[str, Any]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for recap_key, outcome in _RECAP_KEYS.items():
        for host, count in (recap.get(recap_key) or {}).items():
            counts.setdefault(host, Counter())[outcome] = int(count)
    return counts


def _failure_message(result: Mapping[str, Any]) -> str:
    """Ansible's own words for a failure: its msg, and the command's stderr if there is one."""
    parts = [str(result.get(key) or "").strip() for key in ("msg", "stderr")]
    return ": ".join(part for part in parts if part) or "failed without a message"


def _fresh_private_data_dir(runs_dir: Path, playbook: Path) -> Path:
    """A new, private folder for one run: <UTC time>-<playbook>-<random>, never an existing one."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = runs_dir.expanduser() / f"{stamp}-{playbook.stem}-{secrets.token_hex(4)}"
    try:
        path.mkdir(parents=True, mode=0o700)
    except OSError as error:
        raise PlayError(
            f"cannot create run folder {path}: {error.strerror}; "
            f"expected runs_dir '{runs_dir}' to be a writable folder"
        ) from error
    return path


def _ansible_environment() -> dict[str, str]:
    """Environment for ansible-playbook: plain text output, and this Python's Ansible first.

    A kernel's PATH need not include its own environment's bin/; putting it first runs the same
    ansible-core whose InventoryManager read the inventory.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path, "ANSIBLE_NOCOLOR": "1"}


def _run_in_worker(stopper: PlayStopper, **options: Any) -> ansible_runner.Runner:
    """Run ansible_runner.run(**options) in a thread; an interrupt here cancels it cleanly.

    The calling thread only waits, so a KeyboardInterrupt (the kernel's interrupt button) lands
    here: it asks `stopper` to stop the play, waits for ansible to stop, and is then re-raised so
    the calling code stops too. The wait is on an Event, not Thread.join: a KeyboardInterrupt
    inside join() makes CPython (3.11, bpo-45274) mark the still-running thread as finished.
    """
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["runner"] = ansible_runner.run(**options)
        except BaseException as error:
            outcome["error"] = error
        finally:
            finished.set()

    threading.Thread(target=work, name="opsbook-play", daemon=True).start()
    interrupt: KeyboardInterrupt | None = None
    while not finished.is_set():
        try:
            finished.wait(_WAIT_SECONDS)
        except KeyboardInterrupt as caught:
            interrupt = interrupt or caught
            stopper.request()
    if "error" in outcome:
        raise outcome["error"]
    if interrupt is not None:
        interrupt.add_note(
            f"the play was cancelled; its record is in {options['private_data_dir']}"
        )
        raise interrupt
    return outcome["runner"]
