"""Plays: per-host results from recorded events, and real ansible-runner runs on this machine."""

from __future__ import annotations

import _thread
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsbook.errors import InventoryError, PlayError
from opsbook.plays import HostResult, PlayResult, run_play, summarize_events

DATA = Path(__file__).parent / "data"
PLAY = DATA / "play.yml"
WAIT = DATA / "wait.yml"
INVENTORY = DATA / "local-inventory.yml"
Events = list[dict[str, Any]]
FullRun = tuple[PlayResult, Events]
UNREACHABLE = (
    "Task failed: Failed to connect to the host via ssh: "
    "ssh: connect to host 127.0.0.1 port 1: Connection refused"
)


@pytest.fixture(scope="module")
def recorded_events() -> Events:
    """Events of a real run of play.yml (see data/record_events.py)."""
    return json.loads((DATA / "events.json").read_text())


def test_summary_of_recorded_events(recorded_events: Events) -> None:
    assert summarize_events(recorded_events) == {
        "alpha": HostResult("alpha", 3, 1, 0, 0, 1, None, None),
        "beta": HostResult("beta", 2, 1, 1, 0, 0, "fail where asked", "beta was asked to fail"),
        "delta": HostResult("delta", 1, 0, 0, 1, 0, "change something", UNREACHABLE),
        "gamma": HostResult("gamma", 2, 0, 0, 0, 2, None, None),
    }
    states = {host: result.state for host, result in summarize_events(recorded_events).items()}
    assert states == {"alpha": "changed", "beta": "failed", "delta": "unreachable", "gamma": "ok"}


def test_summary_without_recap_counts_the_task_events(recorded_events: Events) -> None:
    # a cancelled play never reaches its recap; counting events must give the same answer
    cut_short = [event for event in recorded_events if event["event"] != "playbook_on_stats"]
    assert summarize_events(cut_short) == summarize_events(recorded_events)


def test_ignored_failure_counts_as_ok(recorded_events: Events) -> None:
    ignored = [
        event
        for event in recorded_events
        if event["event"] == "runner_on_failed" and event["event_data"]["ignore_errors"]
    ]
    assert {event["event_data"]["host"] for event in ignored} == {"alpha", "gamma"}
    assert summarize_events(ignored) == {
        "alpha": HostResult("alpha", 1, 0, 0, 0, 0, None, None),
        "gamma": HostResult("gamma", 1, 0, 0, 0, 0, None, None),
    }


def test_recap_overrides_a_rescued_failure(recorded_events: Events) -> None:
    failure = next(e for e in recorded_events if e["event"] == "runner_on_failed")
    recap = {"event": "playbook_on_stats", "event_data": {"ok": {"beta": 2}, "failures": {}}}
    assert summarize_events([failure, recap]) == {
        "beta": HostResult("beta", 2, 0, 0, 0, 0, None, None)
    }


def test_summary_ignores_events_without_host_results() -> None:
    assert summarize_events([{"event": "playbook_on_start"}, {"event": "verbose"}]) == {}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def full_run(runs_dir: Path) -> FullRun:
    seen: list[dict[str, Any]] = []
    result = run_play(
        PLAY, INVENTORY, runs_dir=runs_dir, extravars={"greeting": "hi there"}, on_event=seen.append
    )
    return result, seen


def test_real_run_reports_each_host(full_run: FullRun) -> None:
    result, _ = full_run
    assert result.status == "failed"
    assert result.rc == 4  # ansible-playbook: some host unreachable
    assert {host: r.state for host, r in result.hosts.items()} == {
        "alpha": "changed",
        "beta": "failed",
        "delta": "unreachable",
        "gamma": "ok",
    }
    assert result.hosts["beta"].failed_task == "fail where asked"
    assert result.hosts["beta"].message == "beta was asked to fail"
    assert result.hosts["delta"].message == UNREACHABLE


def test_real_run_keeps_its_record(full_run: FullRun, runs_dir: Path) -> None:
    result, seen = full_run
    assert result.private_data_dir.parent == runs_dir
    assert re.fullmatch(r"\d{8}T\d{6}Z-play-[0-9a-f]{8}", result.private_data_dir.name)
    assert result.artifact_dir.parent == result.private_data_dir / "artifacts"
    assert "hello alpha (hi there)" in result.stdout
    assert "PLAY RECAP" in result.stdout
    assert "\r" not in result.stdout
    assert (result.artifact_dir / "stdout").read_text() == result.stdout
    assert (result.artifact_dir / "status").read_text() == "failed"
    # every event reached on_event and was written by ansible-runner (the handler returned True)
    assert [e["uuid"] for e in seen] == [e["uuid"] for e in result.events]
    assert len(list((result.artifact_dir / "job_events").glob("*.json"))) == len(result.events)
    assert result.events[-1]["event"] == "playbook_on_stats"


def test_check_mode_changes_nothing_in_a_fresh_folder(full_run: FullRun, runs_dir: Path) -> None:
    first, _ = full_run
    result = run_play(PLAY, INVENTORY, runs_dir=runs_dir, hosts=["alpha", "beta"], check=True)
    assert result.private_data_dir != first.private_data_dir
    assert first.private_data_dir.exists()
    assert "--check" in (result.artifact_dir / "command").read_text()
    assert set(result.hosts) == {"alpha", "beta"}
    assert result.hosts["alpha"].changed == 0  # 1 in the real run
    assert result.hosts["alpha"].state == "ok"
    assert result.hosts["beta"].state == "failed"


def test_unknown_hosts_are_refused_before_running(runs_dir: Path) -> None:
    before = set(runs_dir.iterdir())
    with pytest.raises(InventoryError, match="unknown host 'omega'"):
        run_play(PLAY, INVENTORY, runs_dir=runs_dir, hosts=["alpha", "omega"])
    with pytest.raises(PlayError, match="hosts is an empty list"):
        run_play(PLAY, INVENTORY, runs_dir=runs_dir, hosts=[])
    assert set(runs_dir.iterdir()) == before


def test_missing_playbook_and_unwritable_runs_dir(tmp_path: Path) -> None:
    with pytest.raises(PlayError, match=r"playbook '.*nope\.yml' does not exist"):
        run_play(DATA / "nope.yml", INVENTORY, runs_dir=tmp_path)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(PlayError, match=r"expected runs_dir '.*file' to be a writable folder"):
        run_play(PLAY, INVENTORY, runs_dir=not_a_folder)
    with pytest.raises(PlayError, match="timeout 0 is invalid"):
        run_play(PLAY, INVENTORY, runs_dir=tmp_path, timeout=0)


def processes_running(playbook: Path) -> list[int]:
    """Pids of ansible processes (ansible-playbook and its workers) running this playbook."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(playbook).encode() in cmdline.read_bytes().split(b"\0"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture
def nothing_left_running() -> Iterator[None]:
    """Fail the test if any process of a stopped play is still running a moment after it ended.

    ansible-runner's own cancel leaves ansible's workers running; opsbook's must not.
    """
    yield
    deadline = time.monotonic() + 3
    while (leftovers := processes_running(WAIT)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in leftovers:  # started by this test: clean up, then fail
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], "ansible processes outlived the stopped play"


def when_waiting(action: Callable[[], None]) -> Callable[[dict[str, Any]], None]:
    """An on_event that calls `action` once, as soon as the 30-second pause has begun."""
    done = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "runner_on_start" and not done.is_set():
            done.set()
            action()

    return on_event


@pytest.mark.usefixtures("nothing_left_running")
def test_cancel_stops_a_long_task_quickly(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def request_cancel() -> None:
        cancelled_at.append(time.monotonic())
        cancel.set()

    result = run_play(
        WAIT,
        INVENTORY,
        runs_dir=tmp_path,
        hosts=["alpha"],
        on_event=when_waiting(request_cancel),
        cancel=cancel,
    )
    assert result.status == "canceled"
    assert time.monotonic() - cancelled_at[0] < 5  # the pause alone would take 30 s
    assert result.hosts == {}  # alpha never finished its task
    assert "TASK [wait half a minute]" in result.stdout


@pytest.mark.usefixtures("nothing_left_running")
def test_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_play(WAIT, INVENTORY, runs_dir=tmp_path, hosts=["alpha"], timeout=2)
    assert result.status == "timeout"
    assert time.monotonic() - started < 10


@pytest.mark.usefixtures("nothing_left_running")
def test_keyboard_interrupt_cancels_then_reraises(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as raised:
        run_play(
            WAIT,
            INVENTORY,
            runs_dir=tmp_path,
            hosts=["alpha"],
            on_event=when_waiting(_thread.interrupt_main),
        )
    assert time.monotonic() - started < 10
    (run_folder,) = tmp_path.iterdir()
    assert f"its record is in {run_folder}" in raised.value.__notes__[0]
    (status,) = run_folder.glob("artifacts/*/status")
    assert status.read_text() in ("failed", "canceled")  # ansible stopped, not still running


@pytest.mark.usefixtures("nothing_left_running")
def test_failing_on_event_stops_the_play_and_is_raised(tmp_path: Path) -> None:
    calls: list[str] = []

    def broken_ledger(event: dict[str, Any]) -> None:
        calls.append(event["event"])
        raise ConnectionError("ledger down")

    started = time.monotonic()
    with pytest.raises(ConnectionError, match="ledger down") as raised:
        run_play(WAIT, INVENTORY, runs_dir=tmp_path, on_event=broken_ledger)
    assert time.monotonic() - started < 10
    assert calls == ["playbook_on_start"]  # not called again after it failed
    assert "the play was cancelled" in raised.value.__notes__[0]
