"""The rolling patch: batch order, health gates, stops, resumes, and the observer.

Prometheus is the fake fleet on a loopback HTTP server, so the gate runs its real code. Silences
are the runs service's (its tests, tests/unit/service): here the observer's batch start says
which silence covers the batch, and the rolling patch never calls Alertmanager itself. The logic
tests replace only run_play by FakePlays (an in-process play that emits ansible-runner-shaped
events), to stay fast; the tests at the end run the test playbooks in data/fleet for real with
ansible-runner.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opsbook_fakes import FakeServer, Request
from opsbook_fleet import FLEET_DIR, FLEET_URL_VARIABLE, FakeFleet, demo_fleet, fleet_settings

from opsbook import rolling
from opsbook.config import Settings
from opsbook.errors import BatchError, InventoryError, PlayError
from opsbook.health import UP, GateResult
from opsbook.inventory import Inventory
from opsbook.plays import PlayResult, summarize_events
from opsbook.rolling import (
    BatchResult,
    Paused,
    RollingResult,
    RollingStopped,
    RunObserver,
    StopRun,
    rolling_patch,
    wait_for_gate,
)
from opsbook.sshcert import CertificateError

INVENTORY = FLEET_DIR / "inventories" / "demo"
FAST = {"gate_timeout": 1.0, "gate_interval": 0.05}


class Recorder(RunObserver):
    """Writes down every call, in order; `raise_at` makes one of them raise."""

    def __init__(self, raise_at: dict[tuple[str, int], BaseException] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.raise_at = raise_at or {}
        self.result: RollingResult | None = None
        self.batch_results: list[BatchResult] = []

    def _maybe_raise(self, name: str, number: int) -> None:
        if (name, number) in self.raise_at:
            raise self.raise_at[(name, number)]

    def batch_starting(self, number: int, hosts: Sequence[str]) -> str | None:
        self.calls.append(("batch_starting", number, tuple(hosts)))
        self._maybe_raise("batch_starting", number)
        return f"silence-of-batch-{number}"  # as the runs service's answer would name it

    def event(self, event: dict[str, Any]) -> None:
        self.calls.append(("event", event["event"], event["event_data"].get("host")))
        if event["event"] == "runner_on_start":
            self._maybe_raise("event", 0)

    def gate_result(self, number: int, gate_result: GateResult) -> None:
        self.calls.append(("gate_result", number, gate_result.passed))
        self._maybe_raise("gate_result", number)

    def batch_finished(self, number: int, batch_result: BatchResult) -> None:
        self.calls.append(("batch_finished", number))
        self.batch_results.append(batch_result)
        self._maybe_raise("batch_finished", number)

    def finished(self, rolling_result: RollingResult) -> None:
        self.calls.append(("finished", rolling_result.stopped))
        self.result = rolling_result

    def names(self) -> list[str]:
        """The calls without the play's events, as 'name number'."""
        return [f"{call[0]} {call[1]}" for call in self.calls if call[0] != "event"]


class FakePlays:
    """Stands in for run_play: one task per host that upgrades it in the fake fleet.

    `outcomes` makes hosts fail ('failed', 'unreachable') or be left out of the play
    ('missing'); `status` forces the play's status (canceled, timeout); `interrupt_on` raises
    KeyboardInterrupt once that host's task starts. An on_event that raises stops the play and
    is re-raised with run_play's note, as run_play does.
    """

    def __init__(self, fleet: FakeFleet, tmp_path: Path) -> None:
        self.fleet = fleet
        self.tmp_path = tmp_path
        self.outcomes: dict[str, str] = {}
        self.status: str | None = None
        self.interrupt_on: str | None = None
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def __call__(
        self,
        playbook: Path,
        inventory: Path,
        *,
        runs_dir: Path,
        hosts: Sequence[str],
        check: bool,
        on_event: Callable[[dict[str, Any]], None],
        **_: Any,
    ) -> PlayResult:
        assert playbook == FLEET_DIR / "playbooks" / "patch.yml"
        self.calls.append((tuple(hosts), check))
        record = self.tmp_path / f"play-{len(self.calls)}"
        events: list[dict[str, Any]] = []

        def emit(kind: str, **data: Any) -> None:
            event = {"event": kind, "event_data": data}
            events.append(event)
            try:
                on_event(event)
            except Exception as error:
                error.add_note(f"the play was cancelled; its record is in {record}")
                raise

        emit("playbook_on_start")
        emit("playbook_on_task_start", task="upgrade")
        for host in hosts:
            outcome = self.outcomes.get(host, "ok")
            if outcome == "missing":
                continue
            emit("runner_on_start", host=host, task="upgrade")
            if self.interrupt_on == host:
                raise KeyboardInterrupt
            if outcome == "ok":
                changed = False
                if not check:
                    request = Request("POST", "/test/upgrade", {}, {"host": host})
                    changed = self.fleet(request)[1]["changed"]
                emit("runner_on_ok", host=host, task="upgrade", res={"changed": changed})
            else:
                kind = f"runner_on_{outcome}"
                emit(kind, host=host, task="upgrade", res={"msg": f"{host} {outcome}"})
        if self.status is None:  # a play cut short has no recap
            tally = summarize_events(events)
            emit(
                "playbook_on_stats",
                ok={h: r.ok for h, r in tally.items()},
                changed={h: r.changed for h, r in tally.items()},
                failures={h: r.failed for h, r in tally.items()},
                dark={h: r.unreachable for h, r in tally.items()},
            )
        summary = summarize_events(events)
        status = self.status or (
            "successful"
            if all(r.state in ("ok", "changed") for r in summary.values())
            else "failed"
        )
        return PlayResult(status, 0, summary, events, record, record / "artifacts", "")


@pytest.fixture
def fleet(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    fake = demo_fleet(reboot_seconds=0.3)
    fake_server.responder = fake
    monkeypatch.setenv(FLEET_URL_VARIABLE, fake_server.url)
    return fake


@pytest.fixture
def settings(fake_server: FakeServer, fleet: FakeFleet, tmp_path: Path) -> Settings:
    return fleet_settings(fake_server.url, tmp_path / "runs")


@pytest.fixture
def plays(fleet: FakeFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePlays:
    fake = FakePlays(fleet, tmp_path)
    monkeypatch.setattr(rolling, "run_play", fake)
    return fake


def web_plan(size: int = 1) -> rolling.RollingPlan:
    """The web stack's 3 hosts in batches of `size`, as the runs service would plan them."""
    hosts = ["web-1", "web-2", "web-3"]
    return rolling.RollingPlan(
        stack="web",
        environment="staging",
        production=False,
        batches=tuple(tuple(hosts[i : i + size]) for i in range(0, len(hosts), size)),
        instances=Inventory.load(INVENTORY).exporter_instances(hosts),
    )


def promote_all(fleet: FakeFleet) -> None:
    for suite in fleet.suites.values():
        suite |= {(package, version) for package, version, _ in fleet.incoming}


# planning


def test_a_plan_is_the_runs_batches_numbered_from_1() -> None:
    plan = web_plan(size=2)
    assert plan.hosts == ["web-1", "web-2", "web-3"]
    assert plan.batch(1) == ("web-1", "web-2") and plan.batch(2) == ("web-3",)
    with pytest.raises(BatchError, match="batch 3 is out of range; expected 1 to 2"):
        plan.batch(3)
    assert plan.describe() == (
        "stack web (staging): 3 hosts in 2 batches\n  batch 1: web-1, web-2\n  batch 2: web-3"
    )
    production = dataclasses.replace(plan, stack="db", environment="prod", production=True)
    assert production.describe().startswith("stack db (prod, PRODUCTION): 3 hosts")


# the flow of a batch


@pytest.mark.usefixtures("plays")
def test_batches_run_in_order_each_patched_and_gated_under_the_services_silence(
    fleet: FakeFleet, settings: Settings
) -> None:
    promote_all(fleet)
    observer = Recorder()
    result = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert result.complete and result.stopped is None and result.resume_from is None
    assert result.done == ["web-1", "web-2", "web-3"]
    assert result.failed == result.in_doubt == result.not_started == []
    assert fleet.log == ["upgrade web-1", "upgrade web-2", "upgrade web-3"]
    # the silence each batch start answered with; Alertmanager never heard from the toolkit
    assert [batch.silence_id for batch in result.batches] == [
        "silence-of-batch-1",
        "silence-of-batch-2",
        "silence-of-batch-3",
    ]
    assert fleet.silences == {}
    assert fleet.installed["web-3"]["opsbook-demo-base"] == "1.1"
    assert observer.result == result


@pytest.mark.usefixtures("plays")
def test_observer_hears_everything_in_order(fleet: FakeFleet, settings: Settings) -> None:
    observer = Recorder()
    rolling_patch(web_plan(size=2), settings, observer=observer, **FAST)
    first_batch = observer.calls[: observer.calls.index(("batch_finished", 1)) + 1]
    assert first_batch[0] == ("batch_starting", 1, ("web-1", "web-2"))
    assert [call[1] for call in first_batch if call[0] == "event"] == [
        "playbook_on_start",
        "playbook_on_task_start",
        "runner_on_start",
        "runner_on_ok",
        "runner_on_start",
        "runner_on_ok",
        "playbook_on_stats",
    ]
    assert first_batch[-2] == ("gate_result", 1, True)
    # the gate may be asked more than once (web-3 was upgraded: it waits for a fresh scrape)
    rest = [name for name in observer.names() if name != "gate_result 2"]
    assert rest[-3:] == ["batch_starting 2", "batch_finished 2", "finished None"]
    assert observer.calls[-3] == ("gate_result", 2, True)


@pytest.mark.usefixtures("plays")
def test_rebooted_hosts_get_time_to_come_back(fleet: FakeFleet, settings: Settings) -> None:
    promote_all(fleet)  # opsbook-demo-base 1.1 is approved: it needs a reboot
    observer = Recorder()
    result = rolling_patch(web_plan(size=3), settings, observer=observer, **FAST)
    assert result.complete
    gates = [call[2] for call in observer.calls if call[0] == "gate_result"]
    assert gates[-1] is True
    assert False in gates  # the hosts were down (and not yet scraped) for a moment
    assert result.batches[0].gate_attempts == len(gates)
    # after a play that changed something, the gate also wants a scrape newer than the play
    assert {r.check for r in result.batches[0].gate.results} == {"up", "load", "disk", "fresh"}


@pytest.mark.usefixtures("plays")
def test_a_play_that_changed_nothing_needs_no_fresh_scrape(
    fleet: FakeFleet, settings: Settings
) -> None:
    # nothing newer approved: no change
    fleet.suites["staging"].discard(("opsbook-demo-agent", "2.3.1"))
    result = rolling_patch(web_plan(size=3), settings, **FAST)
    assert result.complete
    assert result.batches[0].gate_attempts == 1
    assert {r.check for r in result.batches[0].gate.results} == {"up", "load", "disk"}


# stopping


@pytest.mark.usefixtures("plays")
def test_stops_at_the_first_failed_gate(fleet: FakeFleet, settings: Settings) -> None:
    fleet.load["web-2:9100"] = 3.0
    observer = Recorder()
    result = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert not result.complete
    assert result.stopped == "batch 2 of 3: health gate failed for web-2"
    assert result.resume_from == 2
    assert (result.done, result.failed, result.not_started) == (["web-1"], ["web-2"], ["web-3"])
    assert result.batches[1].gate_attempts > 1  # asked again until gate_timeout ran out
    assert "upgrade web-3" not in fleet.log
    summary = result.summary()
    assert summary.startswith("Rolling patch of web (staging): STOPPED: batch 2 of 3: health gate")
    assert "    web-2: health gate: load: value 3; expected < 1" in summary
    assert "start_batch=2 (the patch play is idempotent)" in summary
    with pytest.raises(RollingStopped, match="not started \\(1\\): web-3"):
        result.raise_if_stopped()


@pytest.mark.usefixtures("plays")
def test_no_answer_from_prometheus_is_a_failed_gate(fleet: FakeFleet, settings: Settings) -> None:
    fleet.prometheus_answers = False
    result = rolling_patch(web_plan(), settings, **FAST)
    assert result.stopped == "batch 1 of 3: health gate failed for web-1"
    assert result.failed == ["web-1"]
    assert "kept answering with server errors" in result.summary()


def test_max_fail_counts_hosts_that_failed_the_play(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    plays.outcomes = {"web-1": "failed", "web-3": "unreachable"}
    result = rolling_patch(web_plan(), settings, max_fail=1, **FAST)
    # web-1 failed its play but is healthy: within max_fail=1, the run goes on
    assert result.stopped == "batch 3 of 3: 2 hosts failed the play, more than max_fail=1"
    assert (result.done, result.failed) == (["web-2"], ["web-1", "web-3"])
    assert "web-1: failed at task 'upgrade': web-1 failed" in result.summary()
    tolerated = rolling_patch(web_plan(), settings, max_fail=2, **FAST)
    assert tolerated.complete
    assert tolerated.summary().startswith(
        "Rolling patch of web (staging): complete, with 2 failed (max_fail=2)"
    )


def test_max_fail_zero_stops_at_the_first_failure(settings: Settings, plays: FakePlays) -> None:
    plays.outcomes = {"web-1": "missing"}
    result = rolling_patch(web_plan(), settings, **FAST)
    assert result.stopped == "batch 1 of 3: 1 host failed the play, more than max_fail=0"
    assert result.failed == ["web-1"]
    assert result.batches[0].reasons() == {
        "web-1": "no result from the play (the host was not reached)"
    }
    assert len(plays.calls) == 1


def test_a_cancelled_play_leaves_its_hosts_in_doubt(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    plays.status = "canceled"
    result = rolling_patch(web_plan(size=2), settings, **FAST)
    assert result.stopped == "batch 1 of 2: the play was canceled"
    assert result.in_doubt == ["web-1", "web-2"]
    assert result.not_started == ["web-3"]
    assert result.batches[0].gate is None  # not asked of a play that did not end
    assert result.resume_from == 1


def test_cancel_event_stops_before_the_next_batch(settings: Settings, plays: FakePlays) -> None:
    cancel = threading.Event()

    class CancelAfterFirst(RunObserver):
        def batch_finished(self, number: int, batch_result: BatchResult) -> None:
            cancel.set()

    result = rolling_patch(web_plan(), settings, cancel=cancel, observer=CancelAfterFirst(), **FAST)
    assert result.stopped == "cancelled after batch 1 of 3"
    assert (result.done, result.not_started, result.resume_from) == (
        ["web-1"],
        ["web-2", "web-3"],
        2,
    )
    assert len(plays.calls) == 1


# pausing and resuming at batch boundaries (where a handoff will plug in)


def test_paused_before_a_batch_runs_nothing_more(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    observer = Recorder({("batch_starting", 2): Paused("handed to bob")})
    result = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert result.stopped == "paused before batch 2 of 3: handed to bob"
    assert result.resume_from == 2
    assert (result.done, result.not_started) == (["web-1"], ["web-2", "web-3"])
    assert plays.calls == [(("web-1",), False)]
    assert observer.names()[-2:] == [
        "batch_starting 2",
        "finished paused before batch 2 of 3: handed to bob",
    ]


def test_stop_after_a_batch_and_resume_from_there(settings: Settings, plays: FakePlays) -> None:
    observer = Recorder({("batch_finished", 1): StopRun("end of shift")})
    first = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert first.stopped == "stopped after batch 1 of 3: end of shift"
    assert first.resume_from == 2
    second = rolling_patch(web_plan(), settings, start_batch=first.resume_from, **FAST)
    assert second.complete
    assert second.start_batch == 2
    assert second.done == ["web-2", "web-3"]  # only what this run did
    assert [batch.number for batch in second.batches] == [2, 3]
    assert plays.calls == [(("web-1",), False), (("web-2",), False), (("web-3",), False)]
    assert (
        "went on from batch 2 of 3; batches 1 to 1 were run before (the run's record has them)"
        in second.summary()
    )
    assert "web-1" not in second.summary()  # not this call's: the run's summary has it


def test_a_stop_request_after_the_last_batch_changes_nothing(
    settings: Settings, plays: FakePlays
) -> None:
    observer = Recorder({("batch_finished", 1): Paused("too late")})
    result = rolling_patch(web_plan(size=3), settings, observer=observer, **FAST)
    assert result.complete


def test_wrong_arguments_are_refused_before_anything_runs(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    with pytest.raises(PlayError, match=r"playbook '.*/nope\.yml' does not exist"):
        rolling_patch(web_plan(), settings, playbook="nope.yml")
    foreign = dataclasses.replace(web_plan(), batches=(("mail-1",),))
    with pytest.raises(InventoryError, match="no exporter instance for mail-1"):
        rolling_patch(foreign, settings)
    with pytest.raises(BatchError, match="start_batch 4 is out of range; expected 1 to 3"):
        rolling_patch(web_plan(), settings, start_batch=4)
    with pytest.raises(BatchError, match="start_batch 0 is out of range; expected 1 to 3"):
        rolling_patch(web_plan(), settings, start_batch=0)
    with pytest.raises(BatchError, match="max_fail -1 is invalid"):
        rolling_patch(web_plan(), settings, max_fail=-1)
    with pytest.raises(BatchError, match="gate_interval 0 are invalid"):
        rolling_patch(web_plan(), settings, gate_interval=0)
    assert fleet.log == [] and plays.calls == []


# failures of the layers around the play


def test_events_that_cannot_be_recorded_stop_the_run(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    observer = Recorder({("event", 0): ConnectionError("ledger down")})
    result = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert result.stopped == "batch 1 of 3: during the play: ConnectionError: ledger down"
    assert result.in_doubt == ["web-1"]
    assert isinstance(result.error, ConnectionError)
    assert result.batches[0].play_status == "interrupted"
    assert result.batches[0].record == plays.tmp_path / "play-1"
    assert "upgrade web-1" not in fleet.log  # the play stopped before it patched
    assert observer.names()[-2:] == ["batch_finished 1", f"finished {result.stopped}"]
    with pytest.raises(RollingStopped) as raised:
        result.raise_if_stopped()
    assert raised.value.__cause__ is result.error


@pytest.mark.usefixtures("plays")
def test_an_observer_failing_on_the_gate_stops_the_run(
    fleet: FakeFleet, settings: Settings
) -> None:
    observer = Recorder({("gate_result", 1): RuntimeError("disk full")})
    result = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert result.stopped == "batch 1 of 3: after the play: RuntimeError: disk full"
    assert result.not_started == ["web-2", "web-3"]


@pytest.mark.usefixtures("plays")
def test_an_observer_failing_on_batch_finished_stops_the_run(settings: Settings) -> None:
    observer = Recorder({("batch_finished", 1): RuntimeError("ledger down")})
    result = rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert result.stopped == (
        "batch 1 of 3: the observer could not take the result: RuntimeError: ledger down"
    )
    assert result.done == ["web-1"]
    assert result.resume_from == 1


def test_interrupt_reports_and_reraises(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    plays.interrupt_on = "web-2"
    observer = Recorder()
    with pytest.raises(KeyboardInterrupt) as raised:
        rolling_patch(web_plan(), settings, observer=observer, **FAST)
    assert observer.result is not None
    assert observer.result.stopped == "interrupted (KeyboardInterrupt) in batch 2"
    assert observer.result.in_doubt == ["web-2"]
    assert observer.result.resume_from == 2
    assert observer.names()[-2:] == ["batch_finished 2", f"finished {observer.result.stopped}"]
    assert observer.result.summary() in raised.value.__notes__


# check mode


def test_check_mode_sets_no_silence_and_asks_the_gate_once(
    fleet: FakeFleet, settings: Settings, plays: FakePlays
) -> None:
    fleet.load["web-1:9100"] = 3.0
    result = rolling_patch(web_plan(size=3), settings, check=True, **FAST)
    assert plays.calls == [(("web-1", "web-2", "web-3"), True)]
    assert fleet.silences == {}
    assert result.batches[0].silence_id is None
    assert result.batches[0].gate_attempts == 1  # not waited for: nothing rebooted
    assert result.stopped == "batch 1 of 1: health gate failed for web-1"
    assert result.summary().startswith("DRY RUN (check mode) of the rolling patch of web")


# waiting for the gate


def test_wait_for_gate_returns_the_last_answer(fleet: FakeFleet, fake_server: FakeServer) -> None:
    fleet.load["web-1:9100"] = 2.0
    answers: list[GateResult] = []
    result, attempts = wait_for_gate(
        fake_server.url,
        {"web-1": "web-1:9100"},
        timeout=0.3,
        interval=0.1,
        on_result=answers.append,
    )
    assert not result.passed
    assert attempts == len(answers) >= 3
    assert result is answers[-1]
    result, attempts = wait_for_gate(fake_server.url, {"web-2": "web-2:9100"}, [UP], timeout=5)
    assert (result.passed, attempts) == (True, 1)


def test_wait_for_gate_asks_a_last_time_at_the_deadline(
    fleet: FakeFleet, fake_server: FakeServer
) -> None:
    # right after a play nothing has been scraped since: the first answer cannot pass
    answers: list[GateResult] = []
    result, attempts = wait_for_gate(
        fake_server.url,
        {"web-1": "web-1:9100"},
        timeout=0.5,
        interval=5,  # longer than the timeout: the second question is at the deadline
        fresh_after=datetime.now(UTC),
        on_result=answers.append,
    )
    assert (result.passed, attempts) == (True, 2)
    assert [r.check for r in answers[0].failures] == ["fresh"]


def test_wait_for_gate_ends_when_cancelled(fleet: FakeFleet, fake_server: FakeServer) -> None:
    fleet.load["web-1:9100"] = 2.0
    cancel = threading.Event()
    cancel.set()
    result, attempts = wait_for_gate(
        fake_server.url, {"web-1": "web-1:9100"}, timeout=30, interval=5, cancel=cancel
    )
    assert (result.passed, attempts) == (False, 1)


# for real: ansible-runner runs the test playbooks (data/fleet) on this machine


def test_real_rolling_patch(fleet: FakeFleet, settings: Settings) -> None:
    promote_all(fleet)
    observer = Recorder()
    result = rolling_patch(web_plan(size=2), settings, observer=observer, **FAST)
    assert result.complete, result.summary()
    assert result.done == ["web-1", "web-2", "web-3"]
    log = fleet.log
    assert sorted(log[:2]) == ["upgrade web-1", "upgrade web-2"]  # in parallel
    assert log[2:] == ["upgrade web-3"]
    first = result.batches[0]
    assert first.play_status == "successful"
    assert first.play["web-1"].changed == 1
    assert first.record is not None and first.record.parent == settings.runs_dir
    assert (first.record / "artifacts").is_dir()
    events = [call for call in observer.calls if call[0] == "event"]
    assert ("event", "runner_on_ok", "web-3") in events
    assert fleet.installed["web-1"]["opsbook-demo-web"] == "1.1"


def test_real_failed_host_stops_the_run(fleet: FakeFleet, settings: Settings) -> None:
    fleet.broken_hosts = {"web-1"}
    result = rolling_patch(web_plan(), settings, **FAST)
    assert result.stopped == "batch 1 of 3: 1 host failed the play, more than max_fail=0"
    assert result.failed == ["web-1"]
    assert result.not_started == ["web-2", "web-3"]
    assert "Status code was 500" in result.batches[0].reasons()["web-1"]


def test_real_check_mode_changes_nothing(fleet: FakeFleet, settings: Settings) -> None:
    promote_all(fleet)
    result = rolling_patch(web_plan(size=3), settings, check=True, **FAST)
    assert result.complete
    assert "upgrade web-1" not in fleet.log  # the uri task is skipped in check mode
    assert fleet.silences == {}
    assert fleet.installed["web-1"]["opsbook-demo-base"] == "1.0"


def test_real_play_cancelled_when_events_cannot_be_recorded(
    fleet: FakeFleet, settings: Settings
) -> None:
    observer = Recorder({("event", 0): ConnectionError("ledger down")})
    result = rolling_patch(web_plan(size=3), settings, observer=observer, **FAST)
    assert result.stopped == "batch 1 of 1: during the play: ConnectionError: ledger down"
    assert result.in_doubt == ["web-1", "web-2", "web-3"]
    assert result.batches[0].record is not None
    assert result.batches[0].record.parent == settings.runs_dir


def test_before_play_runs_before_each_batch_and_its_failure_stops_the_run_unplayed(
    fleet: FakeFleet, settings: Settings
) -> None:
    promote_all(fleet)
    asked: list[int] = []

    def before_play() -> None:
        asked.append(len(fleet.log))
        if len(asked) == 2:
            raise CertificateError("the runs service refused an SSH certificate for run 7: no")

    observer = Recorder()
    result = rolling_patch(web_plan(), settings, observer=observer, before_play=before_play, **FAST)
    assert len(asked) == 2  # before batch 1, before batch 2; none before batch 3
    assert result.stopped == (
        "batch 2 of 3: before the play: the runs service refused an SSH certificate for run 7: no"
    )
    assert result.done == ["web-1"] and result.not_started == ["web-2", "web-3"]
    assert result.resume_from == 2
    batch_2 = result.batches[1]
    assert batch_2.play_status == "not started"
    # started at the service (which silenced it, and expires that when it hears the batch
    # finished), but not patched
    assert batch_2.silence_id == "silence-of-batch-2"
    assert not [line for line in fleet.log if "web-2" in line]
