"""The runs client (opsbook.runsclient) and the run's driver (opsbook.runs) against the real runs
service app on loopback.

The service is the real one (tornado app, store on a temporary SQLite file, the test fleet's
inventory); only the hub's token check is a stand-in (token -> user and scopes). The rolling patch
is played by a small driver that calls the ledger the way opsbook.rolling does, so that each test
controls its timing. The run's summary is tested on wire.Run values, without a service.
"""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opsbook_fleet import FLEET_DIR, fleet_settings
from opsbook_runs_service import Service, approved

from opsbook import checks, runs
from opsbook.checks import PostChecks, errata_parameters, recorded_errata
from opsbook.contract import wire
from opsbook.errata import Erratum
from opsbook.errors import OpsbookError
from opsbook.health import CheckResult, GateResult
from opsbook.inventory import Inventory
from opsbook.plays import HostResult, PlayResult
from opsbook.rolling import BatchResult, Paused, RollingResult
from opsbook.runs import (
    LeaseLost,
    Ledger,
    OptionsError,
    RunSession,
    describe_runs,
    describe_stack,
    find_run,
    find_stack,
    hosts_in,
    hosts_to_patch,
    plan_of,
    resume_batch,
    run_options,
    summary,
)
from opsbook.runsclient import LedgerUnavailable, RunsClient, RunsError

INVENTORY = FLEET_DIR / "inventories" / "demo"
# Two batches of one host: web-1, then web-2 (web-3 is left out by the limit).
OPTIONS = wire.RunOptions(limit=["web-1", "web-2"])
HOSTS = ("web-1", "web-2")


def client(runs_service: Service, who: str = "alice", retry_for: float = 10.0) -> RunsClient:
    return RunsClient(runs_service.url, f"{who}-token", retry_for=retry_for)


def start_run(runs_service: Service, options: wire.RunOptions = OPTIONS) -> RunSession:
    return RunSession.start(
        client(runs_service),
        runbook="patching",
        stack="web",
        options=options,
        parameters={"approved": ["opsbook-demo-base=1.1"]},
    )


def runner_event(host: str) -> dict:
    return {
        "event": "runner_on_ok",
        "uuid": str(uuid.uuid4()),
        "created": datetime.now(UTC).isoformat(),
        "event_data": {"host": host, "task": "Upgrade", "res": {"changed": True, "stdout": "x"}},
    }


def batch_result(number: int, host: str, *, ok: bool = True) -> BatchResult:
    now = datetime.now(UTC)
    play = HostResult(
        host, 3, 1, 0 if ok else 1, 0, 0, None if ok else "Upgrade", "" if ok else "boom"
    )
    gate = GateResult((CheckResult(host, "up", True, 1.0, "up"),))
    return BatchResult(
        number=number,
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


def play_batch(ledger: Ledger, number: int, events: int = 20, ok: bool = True) -> BatchResult:
    """What rolling_patch tells the ledger for batch `number` (of one host)."""
    host = HOSTS[number - 1]
    ledger.batch_starting(number, [host])
    for _ in range(events):
        ledger.event(runner_event(host))
    result = batch_result(number, host, ok=ok)
    ledger.gate_result(number, result.gate)
    ledger.batch_finished(number, result)
    return result


def runner_events(runs_service: Service, run_id: int) -> list[wire.Event]:
    return [e for e in client(runs_service).events(run_id) if e.kind is wire.EventKind.RUNNER]


def complete(session: RunSession, results: list[BatchResult]) -> RollingResult:
    plan = plan_of(session.run, Inventory.load(INVENTORY))
    return RollingResult(plan, False, 1, tuple(results), None, None)


def test_the_ledger_records_every_event_and_each_batch_before_moving_on(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run, send_every=7)
    first = play_batch(ledger, 1, events=30)
    second = play_batch(ledger, 2, events=25)
    ledger.finished(complete(session, [first, second]))
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.RUNNING  # every batch done: the post-checks are next
    assert not ledger.keeper.stopped  # still held, for them
    ledger.keeper.stop()
    assert run.host_states() == {"web-1": wire.HostState.OK, "web-2": wire.HostState.OK}
    assert [b.started_by for b in run.batches] == ["alice", "alice"]
    assert all(b.gate_passed for b in run.batches)
    assert len(runner_events(runs_service, run.id)) == ledger.seen == ledger.recorded == 55


def test_a_handoff_pauses_the_run_at_the_next_batch_boundary(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run)
    ledger.batch_starting(1, ["web-1"])
    session.handoff("bob", "shift over: web-1 in flight")  # while batch 1 runs
    ledger.event(runner_event("web-1"))
    ledger.batch_finished(1, batch_result(1, "web-1"))
    with pytest.raises(Paused, match="handed off to bob"):
        ledger.batch_starting(2, ["web-2"])
    run = client(runs_service, "bob").run(session.run.id)
    assert run.state is wire.RunState.HANDED_OFF
    bob = RunSession.accept(client(runs_service, "bob"), session.run.id)
    assert bob.run.owner == "bob"
    assert resume_batch(bob.run) == 2  # bob goes on with batch 2
    assert bob.options == OPTIONS  # the run's options, as alice started it


def test_events_are_kept_and_resent_when_the_service_restarts_mid_batch(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run, send_every=1000, send_seconds=3600)
    ledger.batch_starting(1, ["web-1"])
    for _ in range(10):
        ledger.event(runner_event("web-1"))
    runs_service.stop()
    threading.Timer(1.0, runs_service.start).start()  # back within the client's retry budget
    ledger.batch_finished(1, batch_result(1, "web-1"))  # sends the 10 events first, retrying
    assert len(runner_events(runs_service, session.run.id)) == 10
    assert client(runs_service).run(session.run.id).batches[0].state is wire.BatchState.DONE


def test_events_that_cannot_be_recorded_stop_the_batch_and_are_not_lost(runs_service):
    session = start_run(runs_service)
    session.client.retry_for = 1.0
    ledger = Ledger(session.client, session.run, send_every=5)
    ledger.batch_starting(1, ["web-1"])
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
    ledger.batch_starting(1, ["web-1"])
    ledger.keeper.stop()  # alice's kernel stops renewing
    runs_service.clock.now += timedelta(seconds=31)
    assert [run.id for run in runs_service.store.expire_leases()] == [session.run.id]
    bob = RunSession.takeover(client(runs_service, "bob"), session.run.id, "alice's kernel died")
    assert bob.run.host_states()["web-1"] is wire.HostState.IN_DOUBT
    assert resume_batch(bob.run) == 1  # batch 1 again: its host is in doubt
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


# the run object: the service decides what the run is, the session executes the ledger's plan


def test_the_service_plans_the_run_and_the_session_executes_that_plan(runs_service):
    session = RunSession.start(
        client(runs_service),
        runbook="patching",
        stack="web",
        options=wire.RunOptions(batch_size=2, max_fail=1, check_mode=True),
    )
    run = session.run
    assert (run.stack, run.environment, run.production) == ("web", "staging", False)
    assert [(b.number, b.hosts) for b in run.batches] == [(1, ["web-1", "web-2"]), (2, ["web-3"])]
    assert session.options == wire.RunOptions(batch_size=2, max_fail=1, check_mode=True)
    plan = session.plan(Inventory.load(INVENTORY))
    assert plan.batches == (("web-1", "web-2"), ("web-3",))
    assert plan.batch(2) == ("web-3",)
    assert not plan.production and plan.environment == "staging"
    assert plan.instances == {h: f"{h}:9100" for h in ("web-1", "web-2", "web-3")}
    described = session.describe()
    assert "web (staging), 3 hosts in 2 batches" in described
    assert "  batch 1: web-1, web-2 (pending)" in described
    assert "CHECK MODE" in described
    with pytest.raises(OpsbookError, match="check, max_fail: decided by the run's options"):
        session.patch(None, Inventory.load(INVENTORY), check=False, max_fail=3)


def test_a_production_stack_is_production_because_the_service_says_so(runs_service):
    stacks = client(runs_service).stacks()
    by_name = {stack.name: stack for stack in stacks.stacks}
    assert (by_name["db"].environment, by_name["db"].production) == ("production", True)
    assert (by_name["web"].environment, by_name["web"].production) == ("staging", False)
    assert by_name["web"].hosts == ["web-1", "web-2", "web-3"]
    assert stacks.nonproduction == ["staging"]
    run = RunSession.start(client(runs_service), runbook="patching", stack="db").run
    assert run.production
    assert plan_of(run, Inventory.load(INVENTORY)).production


def test_options_are_checked_once_and_name_the_bad_field(runs_service):
    assert run_options(batch_size=3, gate_timeout=2, check_mode=True) == wire.RunOptions(
        batch_size=3, gate_timeout=2.0, check_mode=True
    )
    with pytest.raises(OptionsError, match=r"options.batch_size: expected 1 to 10000, got 0"):
        run_options(batch_size=0)
    with pytest.raises(OptionsError, match=r"options.max_fail: expected a whole number, got '1'"):
        run_options(max_fail="1")
    with pytest.raises(OptionsError, match=r"options.batchsize: unknown option"):
        run_options(batchsize=2)
    with pytest.raises(OptionsError, match=r"options.gate_timeout: expected 0 to 3600 s"):
        RunSession.start(
            client(runs_service),
            runbook="patching",
            stack="web",
            options=wire.RunOptions(gate_timeout=-1),
        )
    assert client(runs_service).runs() == []  # nothing was sent, nothing recorded


def test_a_replan_is_recorded_and_keeps_the_batches_done(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run)
    play_batch(ledger, 1)
    ledger.keeper.stop()
    client(runs_service).pause(session.run.id)  # a run is re-planned between its batches
    run = client(runs_service).replan(session.run.id, "web-2 moved racks")
    assert [(b.number, b.hosts, b.state) for b in run.batches] == [
        (1, ["web-1"], wire.BatchState.DONE),
        (2, ["web-2"], wire.BatchState.PENDING),
    ]
    assert any("web-2 moved racks" in line for line in session.history())


# the run's summary: the run's, not one session's


def test_the_summary_of_a_run_handed_off_has_every_batch_and_who_ran_it(runs_service):
    alice = start_run(runs_service)
    ledger = Ledger(alice.client, alice.run)
    play_batch(ledger, 1)
    alice.handoff("bob", "web-1 done")
    with pytest.raises(Paused):
        ledger.batch_starting(2, ["web-2"])
    handed = summary(client(runs_service).run(alice.run.id))
    assert handed.startswith(
        f"Rolling patch of web (staging), run {alice.run.id}: handed off to bob by alice\n"
    )
    assert "  goes on from batch 2 of 2" in handed
    bob = RunSession.accept(client(runs_service, "bob"), alice.run.id)
    bobs = Ledger(bob.client, bob.run)
    second = play_batch(bobs, 2)
    session_result = RollingResult(
        plan_of(bob.run, Inventory.load(INVENTORY)), False, 2, (second,), None, None
    )
    bobs.finished(session_result)
    bob.run = bobs.run
    assert bob.awaiting_post_checks
    bob.finish(PostChecks("web", None, ()))
    final = client(runs_service, "bob").run(alice.run.id)
    assert final.state is wire.RunState.COMPLETED
    text = summary(final)
    assert text.splitlines() == [
        f"Rolling patch of web (staging), run {final.id}: complete",
        "  batch 1 of 2 (web-1): done by alice, health gate passed",
        "  batch 2 of 2 (web-2): done by bob, health gate passed",
        "  done (2): web-1, web-2",
        "  failed (0): -",
        "  in doubt (0): -",
        "  not started (0): -",
    ]
    # what the status page shows is the run's summary too, with the post-checks' verdict
    assert final.summary == f"{text}\n  post-checks: passed"
    assert "not part of this run" not in session_result.summary()
    assert "went on from batch 2 of 2" in session_result.summary()
    assert hosts_in(final, wire.HostState.OK) == ["web-1", "web-2"]


def a_run(**changes) -> wire.Run:
    """A run as the service would answer it: web in 3 batches, batch 1 done by alice."""
    now = "2026-11-29T10:00:00.000000+00:00"
    fields = {
        "id": 7,
        "runbook": "patching",
        "stack": "web",
        "environment": "staging",
        "production": False,
        "options": wire.RunOptions(),
        "parameters": {},
        "state": wire.RunState.RUNNING,
        "owner": "alice",
        "lease_expires_at": now,
        "lease_seconds": 30,
        "created_by": "alice",
        "created_at": now,
        "updated_at": now,
        "batches": [
            wire.BatchView(
                number=1,
                hosts=["web-1"],
                state=wire.BatchState.DONE,
                attempts=1,
                started_by="alice",
                gate_passed=True,
            ),
            wire.BatchView(
                number=2,
                hosts=["web-2"],
                state=wire.BatchState.DONE,
                attempts=2,
                started_by="bob",
                gate_passed=False,
            ),
            wire.BatchView(number=3, hosts=["web-3"], state=wire.BatchState.PENDING),
        ],
        "hosts": [
            wire.HostView(name="web-1", batch=1, state=wire.HostState.OK),
            wire.HostView(
                name="web-2", batch=2, state=wire.HostState.FAILED, message="health gate: up: 0"
            ),
            wire.HostView(name="web-3", batch=3, state=wire.HostState.PENDING),
        ],
    }
    fields.update(changes)
    return wire.Run(**fields)


def test_the_summary_says_why_a_run_stopped_and_where_it_goes_on():
    text = summary(a_run(), stopped="batch 2 of 3: health gate failed for web-2")
    assert text.splitlines() == [
        "Rolling patch of web (staging), run 7: "
        "STOPPED: batch 2 of 3: health gate failed for web-2",
        "  batch 1 of 3 (web-1): done by alice, health gate passed",
        "  batch 2 of 3 (web-2): done by bob (2 attempts), health gate FAILED",
        "  batch 3 of 3 (web-3): pending",
        "  done (1): web-1",
        "  failed (1): web-2",
        "    web-2: health gate: up: 0",
        "  in doubt (0): -",
        "  not started (1): web-3",
        "  goes on from batch 3 of 3 (whoever holds the run: handoff.ipynb; the patch play is "
        "idempotent)",
    ]
    failed = summary(a_run(state=wire.RunState.FAILED, production=True, environment="prod"))
    assert failed.startswith("Rolling patch of web (prod, PRODUCTION), run 7: FAILED\n")
    assert "goes on from" not in failed
    dry = summary(a_run(options=wire.RunOptions(check_mode=True)))
    assert dry.startswith("DRY RUN (check mode) of the rolling patch of web (staging), run 7:")


# what the runbooks call instead of holding the logic


def test_the_stack_to_patch_as_the_service_resolves_it():
    stacks = wire.StackList(
        stacks=[
            wire.StackView(name="db", environment="prod", production=True, hosts=["db-1", "db-2"]),
            wire.StackView(name="web", environment="staging", production=False, hosts=["web-1"]),
        ],
        nonproduction=["staging"],
    )
    db = find_stack(stacks, "db")
    assert hosts_to_patch(db, wire.RunOptions(limit=["db-2"])) == ["db-2"]
    with pytest.raises(OptionsError, match=r"options.limit: db-9 not in stack db \(db-1, db-2\)"):
        hosts_to_patch(db, wire.RunOptions(limit=["db-9"]))
    described = describe_stack(db, wire.RunOptions(batch_size=2, check_mode=True))
    assert described.splitlines() == [
        "stack db (prod): 2 hosts to patch: db-1, db-2",
        "  2 at a time, inventory order; the runs service plans the batches when the run starts",
        "PRODUCTION: on-call only. Tell the on-call channel before going on.",
        "CHECK MODE: a dry run; nothing will be promoted, installed or rebooted.",
    ]
    with pytest.raises(OpsbookError, match="unknown stack 'mail'; the runs service knows: db, web"):
        find_stack(stacks, "mail")


def test_the_run_to_take_on_is_found_or_named():
    handed = a_run(
        id=3,
        state=wire.RunState.HANDED_OFF,
        handoff=wire.Handoff(to="bob", note="", by="alice", at="2026-11-29T10:00:00Z"),
    )
    orphaned = a_run(id=4, stack="db", state=wire.RunState.ORPHANED)
    done = a_run(id=5, state=wire.RunState.COMPLETED)
    runs = [handed, orphaned, done]
    assert find_run(runs, action="accept", me="bob").id == 3
    assert find_run(runs, action="takeover", me="bob").id == 4
    with pytest.raises(OpsbookError, match="0 orphaned runs on web: set run_id"):
        find_run(runs, action="takeover", me="bob", stack="web")
    with pytest.raises(OpsbookError, match="0 runs handed to carol: set run_id"):
        find_run(runs, action="accept", me="carol")
    with pytest.raises(OpsbookError, match="action 'steal': expected accept, takeover, view"):
        find_run(runs, action="steal", me="bob")
    assert describe_runs(runs) == [
        "run 3: patching on web (staging), handed_off, owner alice, handed to bob",
        "run 4: patching on db (staging), orphaned, owner alice",
    ]
    assert describe_runs([done]) == ["no run in progress"]
    assert RunSession.take_on(None, 3, "view") is None
    with pytest.raises(OpsbookError, match="a takeover needs a reason"):
        RunSession.take_on(None, 4, "takeover", reason=" ")


def test_the_approved_errata_are_recorded_with_the_run_for_its_post_checks():
    approved = [Erratum("opsbook-demo-base", "1.1", {"web-1": "1.0"}, approved=True)]
    parameters = errata_parameters(approved)
    assert parameters["approved"] == ["opsbook-demo-base=1.1"]
    assert (
        wire.CreateRun.from_dict(
            wire.CreateRun(runbook="patching", stack="web", parameters=parameters).to_dict()
        ).parameters
        == parameters
    )  # plain JSON on the wire
    assert recorded_errata(parameters) == approved
    assert recorded_errata({}) == []


# the run's lifecycle: every play inside the run, the run finished after its post-checks


def held_until_post_checks(session: RunSession) -> RunSession:
    """Both batches done through the session's own lease keeper, as session.patch() does."""
    ledger = Ledger(session.client, session.run, keeper=session.keeper)
    results = [play_batch(ledger, 1), play_batch(ledger, 2)]
    ledger.finished(complete(session, results))
    session.run = ledger.run
    return session


def test_a_run_whose_batches_are_all_done_stays_running_until_its_post_checks_finish_it(
    runs_service,
):
    session = held_until_post_checks(start_run(runs_service))
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.RUNNING and run.finished_at is None
    assert session.awaiting_post_checks and not session.keeper.stopped
    assert (
        summary(run)
        .splitlines()[0]
        .endswith("every batch done; the post-checks and the finish are next")
    )
    assert "  next: the post-checks, then the run is finished (whoever holds it)" in summary(run)
    final = session.finish(PostChecks("web", None, ("web-2: base is 1.0, expected 1.1",)))
    assert final.state is wire.RunState.FAILED  # the post-checks failed
    assert final.summary.splitlines()[0].endswith("run 1: FAILED, every batch done")
    assert final.summary.endswith("  post-checks: web-2: base is 1.0, expected 1.1")
    assert session.keeper.stopped and not session.awaiting_post_checks
    assert [e.type for e in client(runs_service).events(run.id)][-1] == "finish"


def test_a_stopped_patch_fails_the_run_and_an_interrupted_one_pauses_it(runs_service):
    session = start_run(runs_service)
    ledger = Ledger(session.client, session.run, keeper=session.keeper)
    first = play_batch(ledger, 1, ok=False)
    plan = plan_of(session.run, Inventory.load(INVENTORY))
    stopped = RollingResult(plan, False, 1, (first,), "batch 1 of 2: 1 host failed", None)
    ledger.finished(stopped)
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.FAILED and "STOPPED: batch 1 of 2" in run.summary
    assert session.keeper.stopped
    other = approved(
        RunSession.start(client(runs_service), runbook="patching", stack="db"), runs_service
    )
    ledger = Ledger(other.client, other.run, keeper=other.keeper)
    ledger.finished(
        RollingResult(plan_of(other.run, Inventory.load(INVENTORY)), False, 1, (), "x", None)
    )  # stopped before any batch: failed too
    assert client(runs_service).run(other.run.id).state is wire.RunState.FAILED


def test_a_run_handed_off_after_its_last_batch_is_post_checked_and_finished_by_bob(
    runs_service,
):
    alice = start_run(runs_service)
    ledger = Ledger(alice.client, alice.run, keeper=alice.keeper)
    play_batch(ledger, 1)
    ledger.batch_starting(2, ["web-2"])
    alice.handoff("bob", "web-2 in flight; the post-checks are yours")
    ledger.event(runner_event("web-2"))
    second = batch_result(2, "web-2")
    ledger.batch_finished(2, second)
    ledger.finished(complete(alice, [second]))  # pauses: handed off during the last batch
    assert client(runs_service).run(alice.run.id).state is wire.RunState.HANDED_OFF
    assert alice.keeper.stopped
    bob = RunSession.accept(client(runs_service, "bob"), alice.run.id)
    assert bob.awaiting_post_checks  # no batch left: straight to the post-checks
    final = bob.finish(PostChecks("web", None, ()))
    assert (final.state, final.owner) == (wire.RunState.COMPLETED, "bob")


def test_a_handoff_once_every_batch_is_done_pauses_the_run_at_once(runs_service):
    alice = held_until_post_checks(start_run(runs_service))
    run = alice.handoff("bob", "all batches done; post-checks left")
    assert run.state is wire.RunState.HANDED_OFF and alice.keeper.stopped
    assert RunSession.accept(client(runs_service, "bob"), run.id).awaiting_post_checks


def test_the_approved_errata_decided_after_the_start_are_in_the_runs_record(runs_service):
    alice = start_run(runs_service)
    approved = [Erratum("opsbook-demo-base", "1.1", {"web-1": "1.0"}, approved=True)]
    run = alice.record_errata(approved)
    assert run.parameters["approved"] == ["opsbook-demo-base=1.1"]
    assert alice.approved_errata == approved
    recorded = [e for e in client(runs_service).events(run.id) if e.type == "parameters"]
    assert [e.actor for e in recorded] == ["alice"]
    alice.handoff("bob", "")
    client(runs_service).pause(run.id)
    bob = RunSession.accept(client(runs_service, "bob"), run.id)
    assert bob.approved_errata == approved  # read back from the ledger, not restated


class Recorder:
    """Stand-ins for the plays and the certificate step: what happened, in order, and the run's
    state in the ledger at that moment (a production stack's hosts accept a certificate only
    for a running run of the caller's)."""

    def __init__(self, service, monkeypatch: pytest.MonkeyPatch, *, check_ok: bool = True):
        self.calls: list[tuple] = []
        self.service = service
        self.check_ok = check_ok
        real_step = runs.sshcert.certificate_step

        def certificate_step(enabled, client_, run_id=None, **kwargs):
            real_step(enabled, client_, run_id, **kwargs)  # certificates are off here: no-op

            def before_play():
                self.calls.append(("certificate", run_id, self.run_state(run_id)))

            return before_play

        def run_play(playbook, inventory, *, hosts, **kwargs):
            self.calls.append(("play", Path(playbook).name, tuple(hosts)))
            record = Path("/runs/check")
            results = {
                host: HostResult(host, 3, 0, 0 if self.check_ok else 1, 0, 0, None, None)
                for host in hosts
            }
            status = "successful" if self.check_ok else "failed"
            return PlayResult(status, 0, results, [], record, record / "artifacts", "")

        def gate(url, instances, checks_):
            self.calls.append(("gate", tuple(instances)))
            return GateResult(tuple(CheckResult(h, "up", True, 1.0, "up") for h in instances))

        monkeypatch.setattr(runs.sshcert, "certificate_step", certificate_step)
        monkeypatch.setattr(checks, "run_play", run_play)
        monkeypatch.setattr(checks.health, "gate", gate)
        real_finish = RunsClient.finish

        def finish(client_, run_id, outcome, text):
            self.calls.append(("finish", outcome.value))
            return real_finish(client_, run_id, outcome, text)

        monkeypatch.setattr(RunsClient, "finish", finish)

    def run_state(self, run_id):
        runs_now = client(self.service).runs()
        ids = {run.id: run.state.value for run in runs_now}
        return ids.get(run_id) if run_id is not None else [r.state.value for r in runs_now]


def lifecycle_settings(tmp_path):
    """The fake fleet's settings: certificates off (local connection), nothing listening."""
    return fleet_settings("http://127.0.0.1:9", tmp_path / "runs")


def test_the_pre_checks_run_inside_the_registered_run_with_its_certificate(
    runs_service, monkeypatch, tmp_path
):
    recorder = Recorder(runs_service, monkeypatch)
    settings = lifecycle_settings(tmp_path)
    assert not settings.ssh_certificates  # the fake fleet's local connection
    session = RunSession.start(client(runs_service), runbook="patching", stack="db")
    approved(session, runs_service)  # production: bob approved it
    found = session.pre_checks(settings, Inventory.load(INVENTORY))
    assert found.passed
    run_id = session.run.id
    assert recorder.calls == [
        ("certificate", run_id, "running"),  # the production run is registered and running
        ("play", "check.yml", ("db-1", "db-2", "db-3")),
        ("gate", ("db-1", "db-2", "db-3")),
    ]
    assert client(runs_service).run(run_id).state is wire.RunState.RUNNING


def test_failed_pre_checks_finish_the_run_as_failed_with_their_report(
    runs_service, monkeypatch, tmp_path
):
    recorder = Recorder(runs_service, monkeypatch, check_ok=False)
    session = RunSession.start(client(runs_service), runbook="patching", stack="web")
    found = session.pre_checks(lifecycle_settings(tmp_path), Inventory.load(INVENTORY))
    assert not found.passed
    assert [c[0] for c in recorder.calls] == ["certificate", "play", "gate", "finish"]
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.FAILED and session.keeper.stopped
    assert "nothing was changed" in run.summary and "pre-checks of web FAILED" in run.summary
    assert all(batch.state is wire.BatchState.PENDING for batch in run.batches)
    with pytest.raises(checks.ChecksFailed, match="pre-checks of web failed"):
        found.raise_if_failed()
    # the stack is free again: the next run may start
    RunSession.start(client(runs_service), runbook="patching", stack="web").keeper.stop()


def test_pre_checks_that_cannot_run_fail_the_run_and_raise(runs_service, monkeypatch, tmp_path):
    Recorder(runs_service, monkeypatch)

    def no_certificate():
        raise runs.sshcert.CertificateError("no SSH certificate: refused")

    monkeypatch.setattr(RunSession, "certificate_step", lambda self, settings: no_certificate)
    session = approved(
        RunSession.start(client(runs_service), runbook="patching", stack="db"), runs_service
    )
    with pytest.raises(runs.sshcert.CertificateError):
        session.pre_checks(lifecycle_settings(tmp_path), Inventory.load(INVENTORY))
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.FAILED and "could not run" in run.summary


def test_the_post_checks_run_inside_the_run_before_it_is_finished(
    runs_service, monkeypatch, tmp_path
):
    session = held_until_post_checks(start_run(runs_service))
    approved = [Erratum("opsbook-demo-base", "1.1", {"web-1": "1.0"}, approved=True)]
    session.record_errata(approved)
    recorder = Recorder(runs_service, monkeypatch)
    settings = lifecycle_settings(tmp_path)
    found = session.post_checks(settings, Inventory.load(INVENTORY))
    final = session.finish(found)
    assert [c[:2] for c in recorder.calls] == [
        ("certificate", None),  # web is staging: a certificate without a run
        ("play", "check.yml"),
        ("finish", "failed"),  # the fake play read no versions: base 1.1 is not shown
    ]
    assert recorder.calls[1][2] == HOSTS
    assert "web-1: opsbook-demo-base: installed version unknown" in final.summary
    with pytest.raises(OpsbookError, match="no post-checks now"):
        session.post_checks(settings, Inventory.load(INVENTORY))


def test_a_batch_alertmanager_cannot_silence_does_not_start_and_the_runbook_says_why(
    runs_service, fake_server, tmp_path
):
    """The runs service silences each batch; without an answer from Alertmanager the batch does
    not start, and what the runbook shows names the service's setting and Alertmanager's URL."""
    fake_server.responder = lambda request: (500, "cluster not ready")  # Alertmanager sick
    session = RunSession.start(
        client(runs_service, retry_for=1), runbook="patching", stack="web", options=OPTIONS
    )
    result = session.patch(lifecycle_settings(tmp_path), Inventory.load(INVENTORY)).wait(60)
    assert not result.complete and result.not_started == ["web-1", "web-2"]
    assert result.stopped.startswith("before batch 1 of 2: the observer failed: ")
    assert "batch 1 of run 1 did not start" in result.stopped
    assert f"RUNS_ALERTMANAGER_URL={fake_server.url}" in result.stopped
    run = client(runs_service).run(session.run.id)
    assert run.batches[0].state is wire.BatchState.PENDING  # nothing recorded as started
    assert not [r for r in fake_server.requests if r.path.startswith("/test/")]  # no play


def test_the_batch_start_answer_names_the_silence_the_patch_reports(runs_service, tmp_path):
    session = RunSession.start(
        client(runs_service), runbook="patching", stack="web", options=wire.RunOptions(batch_size=2)
    )
    ledger = Ledger(session.client, session.run, keeper=session.keeper)
    silence_id = ledger.batch_starting(1, ["web-1", "web-2"])
    assert silence_id is not None
    assert runs.silence_of(ledger.run, 1) == silence_id
    assert ledger.run.batches[0].silence.instances == ["web-1:9100", "web-2:9100"]
    session.keeper.stop()
