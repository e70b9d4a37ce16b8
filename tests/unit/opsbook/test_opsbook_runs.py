"""The runs client and ledger (opsbook.runs) against the real runs service app on loopback.

The service is the real one (tornado app, store on a temporary SQLite file); only the hub's token
check is a stand-in (token -> user and scopes). The rolling patch is played by a small driver
that calls the ledger the way opsbook.rolling does, so that each test controls its timing.
"""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from opsbook_runs_service import Service

from opsbook.contract import wire
from opsbook.health import CheckResult, GateResult
from opsbook.plays import HostResult
from opsbook.rolling import BatchResult, Paused, RollingPlan, RollingResult
from opsbook.runs import (
    LeaseLost,
    Ledger,
    LedgerUnavailable,
    RunsClient,
    RunsError,
    RunSession,
    resume_batch,
)

PLAN = RollingPlan(
    stack="web",
    environment="staging",
    batches=(("web-1",), ("web-2",)),
    instances={"web-1": "web-1:9100", "web-2": "web-2:9100"},
)


def client(runs_service: Service, who: str = "alice", retry_for: float = 10.0) -> RunsClient:
    return RunsClient(runs_service.url, f"{who}-token", retry_for=retry_for)


def start_run(runs_service: Service) -> RunSession:
    return RunSession.start(
        client(runs_service), PLAN, runbook="patching", parameters={"stack": "web"}
    )


def runner_event(host: str) -> dict:
    return {
        "event": "runner_on_ok",
        "uuid": str(uuid.uuid4()),
        "created": datetime.now(UTC).isoformat(),
        "event_data": {"host": host, "task": "Upgrade", "res": {"changed": True, "stdout": "x"}},
    }


def batch_result(index: int, host: str, *, ok: bool = True) -> BatchResult:
    now = datetime.now(UTC)
    play = HostResult(
        host, 3, 1, 0 if ok else 1, 0, 0, None if ok else "Upgrade", "" if ok else "boom"
    )
    gate = GateResult((CheckResult(host, "up", True, 1.0, "up"),))
    return BatchResult(
        index=index,
        hosts=(host,),
        play_status="successful" if ok else "failed",
        play={host: play},
        gate=gate,
        gate_attempts=1,
        silence_id=None,
        record=None,
        started_at=now,
        finished_at=now,
    )


def play_batch(ledger: Ledger, index: int, events: int = 20) -> GateResult:
    """What rolling_patch tells the ledger for one batch of one host."""
    host = PLAN.batches[index][0]
    ledger.batch_starting(index, [host])
    for _ in range(events):
        ledger.event(runner_event(host))
    result = batch_result(index, host)
    ledger.gate_result(index, result.gate)
    ledger.batch_finished(index, result)
    return result.gate


def runner_events(runs_service: Service, run_id: int) -> list[wire.Event]:
    return [e for e in client(runs_service).events(run_id) if e.kind is wire.EventKind.RUNNER]


def complete(results: list[BatchResult]) -> RollingResult:
    return RollingResult(PLAN, False, 0, tuple(results), None, None)


def test_the_ledger_records_every_event_and_each_batch_before_moving_on(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run, send_every=7)
    play_batch(ledger, 0, events=30)
    play_batch(ledger, 1, events=25)
    ledger.finished(complete([batch_result(0, "web-1"), batch_result(1, "web-2")]))
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.COMPLETED
    assert run.host_states() == {"web-1": wire.HostState.OK, "web-2": wire.HostState.OK}
    assert [b.started_by for b in run.batches] == ["alice", "alice"]
    assert all(b.gate_passed for b in run.batches)
    assert len(runner_events(runs_service, run.id)) == ledger.seen == ledger.recorded == 55


def test_a_handoff_pauses_the_run_at_the_next_batch_boundary(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run)
    ledger.batch_starting(0, ["web-1"])
    session.handoff("bob", "shift over: web-1 in flight")  # while batch 1 runs
    ledger.event(runner_event("web-1"))
    ledger.batch_finished(0, batch_result(0, "web-1"))
    with pytest.raises(Paused, match="handed off to bob"):
        ledger.batch_starting(1, ["web-2"])
    run = client(runs_service, "bob").run(session.run.id)
    assert run.state is wire.RunState.HANDED_OFF
    bob = RunSession.accept(client(runs_service, "bob"), session.run.id)
    assert bob.run.owner == "bob"
    assert resume_batch(bob.run) == 1  # bob goes on with batch 2


def test_events_are_kept_and_resent_when_the_service_restarts_mid_batch(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run, send_every=1000, send_seconds=3600)
    ledger.batch_starting(0, ["web-1"])
    for _ in range(10):
        ledger.event(runner_event("web-1"))
    runs_service.stop()
    threading.Timer(1.0, runs_service.start).start()  # back within the client's retry budget
    ledger.batch_finished(0, batch_result(0, "web-1"))  # sends the 10 events first, retrying
    assert len(runner_events(runs_service, session.run.id)) == 10
    assert client(runs_service).run(session.run.id).batches[0].state is wire.BatchState.DONE


def test_events_that_cannot_be_recorded_stop_the_batch_and_are_not_lost(runs_service):
    session = start_run(runs_service)
    session.client.retry_for = 1.0
    ledger = Ledger(session.client, session.run, send_every=5)
    ledger.batch_starting(0, ["web-1"])
    runs_service.stop()
    with pytest.raises(LedgerUnavailable, match="did not answer"):
        for _ in range(5):
            ledger.event(runner_event("web-1"))  # the 5th sends, and cannot
    runs_service.start()
    ledger.send_events()  # what a resume does first
    assert len(runner_events(runs_service, session.run.id)) == 5


def test_a_run_taken_over_is_lost_to_its_old_owner(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run)
    ledger.batch_starting(0, ["web-1"])
    ledger.keeper.stop()  # alice's kernel stops renewing
    runs_service.clock.now += timedelta(seconds=31)
    assert [run.id for run in runs_service.store.expire_leases()] == [session.run.id]
    bob = RunSession.takeover(client(runs_service, "bob"), session.run.id, "alice's kernel died")
    assert bob.run.host_states()["web-1"] is wire.HostState.IN_DOUBT
    assert resume_batch(bob.run) == 0  # batch 1 again: its host is in doubt
    with pytest.raises(LeaseLost, match="no longer ours"):
        ledger.keeper.renew_now()
        ledger.event(runner_event("web-1"))


def test_refusals_carry_the_services_code_and_message(runs_service):
    alice = client(runs_service)
    first = start_run(runs_service)
    with pytest.raises(RunsError) as refused:
        start_run(runs_service)
    assert refused.value.code is wire.ErrorCode.RUN_ACTIVE
    assert f"run {first.run.id}" in str(refused.value) and "alice" in str(refused.value)
    with pytest.raises(RunsError) as refused:
        alice.handoff(first.run.id, "carol")
    assert refused.value.code is wire.ErrorCode.NOT_ON_CALL
    with pytest.raises(RunsError) as refused:
        RunsClient(runs_service.url, "nobody-token").runs()
    assert refused.value.reply.status == 401


def test_a_service_that_never_answers_is_reported_with_its_address():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = RunsClient(f"http://127.0.0.1:{port}/services/runs", "alice-token", retry_for=0.5)
    with pytest.raises(LedgerUnavailable, match=f"127.0.0.1:{port}"):
        gone.runs()
