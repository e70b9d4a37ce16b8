"""The runs ledger (opsbook.service.store) on a real database: SQLite here, in a temporary file.

tests/e2e/test_runs_postgres.py imports this module and runs every test again on a real PostgreSQL
server, by giving `database_url` another value; so the tests use only the `store`/`open_store`
fixtures (and `inventory`, from conftest.py) and never assume SQLite.

The store resolves every run from the inventory: these tests run on conftest.py's fleet (stack web:
web-1 ... web-5 in staging; db: db-1 ... db-3 in production), two hosts a batch unless they say.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, insert, text

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import (
    BatchOrder,
    BatchState,
    ErrorCode,
    EventIn,
    EventKind,
    GateReport,
    HostResult,
    HostState,
    RunOptions,
    RunState,
    wire_time,
)
from opsbook.service import tables
from opsbook.service.rules import ApprovalPolicy, Caller, Refused
from opsbook.service.store import Store
from opsbook.service.tables import metadata

ONCALL = frozenset({SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER})
ALICE = Caller("alice", ONCALL)
BOB = Caller("bob", ONCALL)
ERIN = Caller("erin", frozenset({SCOPE_READ, SCOPE_WRITE}))
CAROL = Caller("carol", frozenset({SCOPE_READ}))
DAVE = Caller("dave", ONCALL)
ON_CALL_NOW = ["alice", "bob"]
PLAN = [["web-1", "web-2"], ["web-3", "web-4"], ["web-5"]]  # stack web, two hosts a batch
WEB_HOSTS = [host for batch in PLAN for host in batch]


class Clock:
    """The store's idea of now, moved by the tests (leases run out without waiting)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_store(
    database_url: str, clock: Clock, inventory, alertmanager
) -> Iterator[Callable[..., Store]]:
    """Open the ledger (again): every call is like a start of the service."""
    opened: list[Store] = []

    def open_(**options) -> Store:
        options.setdefault("lease_seconds", 60)
        options.setdefault("fleet", inventory.current)
        options.setdefault("alertmanager", alertmanager)
        store = Store(database_url, now=clock, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store) -> Store:
    return open_store()


def start(store: Store, caller: Caller = ALICE, **overrides):
    request = {
        "runbook": "patching",
        "stack": "web",
        "options": RunOptions(batch_size=2),
        "parameters": {"errata": ["DSA-1", "DSA-2"]},
    }
    request.update(overrides)
    return store.create_run(caller, **request)


def run_batch(store: Store, run_id: int, caller: Caller, number: int, state=HostState.OK):
    run = store.start_batch(run_id, caller, number)
    hosts = run.batches[number - 1].hosts
    store.append_events(
        run_id,
        caller,
        [
            EventIn(type="runner_on_ok", uuid=f"{run_id}-{number}-{host}", host=host, task="apt")
            for host in hosts
        ],
    )
    return store.finish_batch(
        run_id, caller, number, [HostResult(host=host, state=state) for host in hosts]
    )


def refused(call, *args, **kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    return caught.value


# --- starting -------------------------------------------------------------------------------------


def test_a_new_run_is_running_owned_by_its_starter_with_a_lease(store, clock):
    run = start(store)
    assert run.state is RunState.RUNNING
    assert run.owner == run.created_by == "alice"
    assert run.lease_expires_at is not None
    assert [b.hosts for b in run.batches] == PLAN
    assert all(b.state is BatchState.PENDING for b in run.batches)
    assert set(run.host_states().values()) == {HostState.PENDING}
    assert run.parameters == {"errata": ["DSA-1", "DSA-2"]}
    assert (run.stack, run.environment, run.production) == ("web", "staging", False)
    assert run.options == RunOptions(batch_size=2)
    events = store.events(run.id).events
    assert [(e.seq, e.type, e.actor) for e in events] == [(1, "start", "alice")]
    assert events[0].data["plan"] == PLAN and events[0].data["environment"] == "staging"


def test_a_second_start_of_the_same_runbook_on_the_same_stack_names_the_run_and_owner(store):
    first = start(store)
    error = refused(start, store, BOB)
    assert (error.status, error.code, error.run_id) == (409, ErrorCode.RUN_ACTIVE, first.id)
    assert f"run {first.id}" in error.message and "alice" in error.message
    # another stack, or another runbook, is fine
    assert start(store, BOB, stack="db").owner == "bob"
    assert start(store, BOB, runbook="reboot").owner == "bob"


def test_simultaneous_starts_give_exactly_one_run(store, open_store):
    """Eight engineers (threads, half of them through a second connection pool, as a second
    process would) press start at the same moment."""
    other = open_store()
    callers = [Caller(f"eng{i}", ONCALL) for i in range(8)]
    barrier = threading.Barrier(len(callers))
    results: list[object] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        barrier.wait()
        try:
            outcome: object = start(store if index % 2 else other, callers[index])
        except Refused as error:
            outcome = error
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(callers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    runs = [r for r in results if not isinstance(r, Refused)]
    refusals = [r for r in results if isinstance(r, Refused)]
    assert len(runs) == 1 and len(refusals) == len(callers) - 1
    winner = runs[0]
    assert {(e.code, e.run_id) for e in refusals} == {(ErrorCode.RUN_ACTIVE, winner.id)}
    assert all(winner.owner in e.message for e in refusals)
    assert [r.id for r in store.list_runs(finished=0)] == [winner.id]


def test_a_finished_run_frees_its_stack(store):
    run = start(store)
    store.abort(run.id, ALICE, "wrong errata")
    assert start(store, BOB).owner == "bob"


def test_production_needs_the_production_scope(store):
    error = refused(start, store, ERIN, stack="db")
    assert (error.status, error.code, error.scope) == (
        403,
        ErrorCode.MISSING_SCOPE,
        SCOPE_PRODUCTION,
    )
    assert "erin" in error.message and SCOPE_PRODUCTION in error.message
    assert "production" in error.message and store.list_runs() == []
    run = start(store, ALICE, stack="db")
    assert (run.environment, run.production) == ("production", True)


def test_viewers_cannot_start_runs(store):
    error = refused(start, store, CAROL)
    assert (error.status, error.scope) == (403, SCOPE_WRITE)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (RunOptions(batch_size=0), "options.batch_size: expected 1 to"),
        (RunOptions(batch_size=10_001), "options.batch_size"),
        (RunOptions(max_fail=-1), "options.max_fail"),
        (RunOptions(gate_timeout=3601), "options.gate_timeout"),
        (RunOptions(max_load_per_cpu=0), "options.max_load_per_cpu"),
        (RunOptions(limit=["web-1", "web-1"]), "options.limit"),
        (RunOptions(limit=["web-1", "db-1"]), "options.limit: db-1 not in stack web"),
    ],
)
def test_bad_options_are_refused_naming_the_field_and_nothing_is_recorded(store, options, words):
    error = refused(start, store, options=options)
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert words in error.message
    assert store.list_runs() == []
    assert start(store).stack == "web"  # and the stack is not held


# --- events ---------------------------------------------------------------------------------------


def test_events_are_idempotent_by_uuid(store):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    batch = [
        EventIn(type="runner_on_ok", uuid=f"u{i}", host="web-1", task=f"t{i}") for i in range(5)
    ]
    first = store.append_events(run.id, ALICE, batch)
    assert (first.stored, first.duplicates) == (5, 0)
    # the client did not get the answer and sends the same batch again, plus one new event
    again = store.append_events(run.id, ALICE, [*batch, EventIn(type="runner_on_ok", uuid="u5")])
    assert (again.stored, again.duplicates) == (1, 5)
    # the same uuid twice within one request is stored once too
    twice = store.append_events(run.id, ALICE, [EventIn(type="x", uuid="u6")] * 2)
    assert (twice.stored, twice.duplicates) == (1, 1)
    runner = [e for e in store.events(run.id).events if e.kind is EventKind.RUNNER]
    assert [e.uuid for e in runner] == [f"u{i}" for i in range(7)]
    seqs = [e.seq for e in store.events(run.id).events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_events_page_by_sequence_number(store):
    run = start(store)
    store.append_events(run.id, ALICE, [EventIn(type="e", uuid=f"u{i}") for i in range(25)])
    page = store.events(run.id, since=0, limit=10)
    assert [e.seq for e in page.events] == list(range(1, 11)) and page.more
    page = store.events(run.id, since=page.next_since, limit=10)
    assert page.events[0].seq == 11
    last = store.events(run.id, since=20, limit=10)
    assert [e.seq for e in last.events] == [21, 22, 23, 24, 25, 26] and not last.more
    assert store.last_events(run.id, 3)[-1].seq == 26


def test_runner_events_show_each_hosts_latest_task_but_not_its_result(store):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    store.append_events(
        run.id,
        ALICE,
        [
            EventIn(type="runner_on_start", uuid="a", host="web-1", task="Install updates"),
            EventIn(type="runner_on_failed", uuid="b", host="web-2", task="Reboot"),
        ],
    )
    hosts = {h.name: h for h in store.get_run(run.id).hosts}
    assert hosts["web-1"].activity == "Install updates"
    assert hosts["web-2"].state is HostState.RUNNING  # results come with the batch's end


def test_oversized_event_data_is_kept_as_a_note_not_refused(store):
    run = start(store)
    store.append_events(run.id, ALICE, [EventIn(type="x", uuid="big", data={"s": "x" * 50_000})])
    (event,) = [e for e in store.events(run.id).events if e.uuid == "big"]
    assert "truncated" in event.data


def test_only_the_owner_of_a_running_run_appends_events(store):
    run = start(store)
    error = refused(store.append_events, run.id, BOB, [EventIn(type="x")])
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)
    assert "owned by alice" in error.message and "stop" in error.message


# --- batches --------------------------------------------------------------------------------------


def test_batches_run_in_order_one_at_a_time(store):
    run = start(store)
    error = refused(store.start_batch, run.id, ALICE, 2)
    assert error.status == 409 and "batch 1" in error.message
    store.start_batch(run.id, ALICE, 1)
    error = refused(store.start_batch, run.id, ALICE, 2)
    assert error.status == 409 and "in flight" in error.message
    error = refused(store.start_batch, run.id, ALICE, 7)
    assert error.status == 404 and "batches 1 to 3" in error.message


def test_finishing_a_batch_records_each_hosts_result_and_who(store):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    error = refused(
        store.finish_batch, run.id, ALICE, 1, [HostResult(host="web-1", state=HostState.OK)]
    )
    assert error.status == 400 and "web-2" in error.message
    error = refused(
        store.finish_batch, run.id, ALICE, 1, [HostResult(host="db-1", state=HostState.OK)]
    )
    assert error.status == 400 and "db-1" in error.message
    results = [
        HostResult(host="web-1", state=HostState.OK),
        HostResult(host="web-2", state=HostState.FAILED, message="dpkg lock held"),
    ]
    run = store.finish_batch(run.id, ALICE, 1, results)
    assert run.current_batch is None
    assert run.batches[0].state is BatchState.DONE and run.batches[0].finished_by == "alice"
    hosts = {h.name: h for h in run.hosts}
    assert hosts["web-2"].state is HostState.FAILED and hosts["web-2"].message == "dpkg lock held"
    # a retry of the same finish (lost answer) changes nothing and is not an error
    again = store.finish_batch(run.id, ALICE, 1, results)
    assert again.last_seq == run.last_seq


def test_the_gate_comes_after_the_batch(store):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    error = refused(store.record_gate, run.id, ALICE, 1, GateReport(passed=True))
    assert error.status == 409 and "after the batch" in error.message
    run_batch(store, run.id, ALICE, 1)
    run = store.record_gate(
        run.id, ALICE, 1, GateReport(passed=False, message="web-2 down", details={"web-2": "up=0"})
    )
    assert run.batches[0].gate_passed is False and run.batches[0].gate_message == "web-2 down"


# --- leases, orphans, takeover --------------------------------------------------------------------


def test_a_lease_that_runs_out_orphans_the_run(store, clock):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    clock.advance(30)
    store.renew_lease(run.id, ALICE)
    clock.advance(59)
    assert store.expire_leases() == []
    clock.advance(2)
    (orphan,) = store.expire_leases()
    assert orphan.state is RunState.ORPHANED and orphan.owner == "alice"
    lease, silence = store.last_events(run.id, 2)
    assert (lease.type, lease.kind, lease.actor) == ("lease_expired", EventKind.SYSTEM, "runs")
    # the batch in flight had its hosts silenced: nobody runs it now, so their alerts are back
    assert (silence.type, silence.actor) == ("silence_expired", "runs")
    assert "alice's lease ran out" in silence.message
    assert store.expire_leases() == []  # once
    # the kernel that lost it finds out at its next renewal or event
    error = refused(store.renew_lease, run.id, ALICE)
    assert (error.status, error.code) == (409, ErrorCode.LEASE_EXPIRED)
    error = refused(store.append_events, run.id, ALICE, [EventIn(type="x")])
    assert error.code is ErrorCode.LEASE_EXPIRED


def test_renewal_by_someone_else_is_refused(store):
    run = start(store)
    error = refused(store.renew_lease, run.id, BOB)
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)


def test_a_lease_tells_the_owner_about_a_pending_handoff(store):
    run = start(store)
    assert store.renew_lease(run.id, ALICE).handoff is None
    store.handoff(run.id, ALICE, to="bob", note="", oncall=ON_CALL_NOW, oncall_group="oncall")
    assert store.renew_lease(run.id, ALICE).handoff.to == "bob"


def test_takeover_puts_the_interrupted_hosts_in_doubt_and_they_run_again(store, clock):
    run = start(store)
    run_batch(store, run.id, ALICE, 1)
    store.start_batch(run.id, ALICE, 2)
    store.append_events(run.id, ALICE, [EventIn(type="runner_on_ok", uuid="x", host="web-3")])
    clock.advance(61)
    store.expire_leases()

    error = refused(store.takeover, run.id, ERIN, "alice is gone")
    assert (error.status, error.scope) == (403, SCOPE_TAKEOVER)
    error = refused(store.takeover, run.id, BOB, "  ")
    assert error.status == 400 and "reason" in error.message

    run = store.takeover(run.id, BOB, "alice's container died")
    assert (run.state, run.owner) == (RunState.RUNNING, "bob")
    states = run.host_states()
    assert states["web-3"] is states["web-4"] is HostState.IN_DOUBT
    assert states["web-1"] is HostState.OK and states["web-5"] is HostState.PENDING
    assert run.batches[1].state is BatchState.INTERRUPTED and run.current_batch == 2
    event = store.last_events(run.id, 1)[0]
    assert event.type == "takeover" and event.actor == "bob"
    assert event.data == {
        "from": "alice",
        "reason": "alice's container died",
        "in_doubt": ["web-3", "web-4"],
    }
    # completion is refused while hosts are in doubt
    error = refused(store.finish, run.id, BOB, RunState.COMPLETED, "")
    assert error.status == 409 and "web-3" in error.message

    run = store.start_batch(run.id, BOB, 2, ["web-3", "web-4"])
    assert run.batches[1].attempts == 2 and run.batches[1].started_by == "bob"
    store.finish_batch(
        run.id,
        BOB,
        2,
        [HostResult(host=h, state=HostState.OK) for h in ("web-3", "web-4")],
    )
    run_batch(store, run.id, BOB, 3)
    run = store.finish(run.id, BOB, RunState.COMPLETED, "all patched")
    assert run.state is RunState.COMPLETED
    assert set(run.host_states().values()) == {HostState.OK}


def test_after_a_takeover_the_new_owner_may_pause_and_hand_off_before_rerunning(store, clock):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    clock.advance(61)
    store.expire_leases()
    store.takeover(run.id, BOB, "alice's kernel died")
    store.handoff(run.id, BOB, to="alice", note="", oncall=ON_CALL_NOW, oncall_group="oncall")
    run = store.pause(run.id, BOB)
    assert run.state is RunState.HANDED_OFF and run.current_batch == 1
    store.accept(run.id, ALICE)
    run = store.start_batch(run.id, ALICE, 1, ["web-1", "web-2"])
    assert run.batches[0].attempts == 2


def test_only_an_orphaned_run_can_be_taken_over(store):
    run = start(store)
    error = refused(store.takeover, run.id, BOB, "I want it")
    assert error.status == 409 and "alice" in error.message and "not orphaned" in error.message


def test_the_owner_may_reclaim_their_own_orphaned_run(store, clock):
    run = start(store, ERIN)
    clock.advance(61)
    store.expire_leases()
    run = store.takeover(run.id, ERIN, "my kernel restarted")
    assert (run.state, run.owner) == (RunState.RUNNING, "erin")


def test_restart_grace_keeps_running_runs_from_being_orphaned(store, open_store, clock):
    run = start(store)
    clock.advance(300)  # the service was down; nobody could renew
    reopened = open_store()
    assert reopened.extend_leases_after_restart() == 1
    assert reopened.expire_leases() == []
    assert reopened.get_run(run.id).state is RunState.RUNNING


# --- handoff --------------------------------------------------------------------------------------


def test_handoff_pause_accept_and_the_receiver_continues(store):
    run = start(store)
    run_batch(store, run.id, ALICE, 1)
    store.start_batch(run.id, ALICE, 2)
    run = store.handoff(
        run.id, ALICE, to="bob", note="web-4 is slow", oncall=ON_CALL_NOW, oncall_group="oncall"
    )
    assert run.state is RunState.RUNNING and run.handoff.to == "bob"
    # bob cannot accept before alice's batch has finished
    error = refused(store.accept, run.id, BOB)
    assert error.status == 409 and "not paused yet" in error.message
    error = refused(store.pause, run.id, ALICE)
    assert error.status == 409 and "in flight" in error.message
    store.finish_batch(
        run.id, ALICE, 2, [HostResult(host=h, state=HostState.OK) for h in ("web-3", "web-4")]
    )
    run = store.pause(run.id, ALICE)
    assert run.state is RunState.HANDED_OFF and run.lease_expires_at is None
    assert store.pause(run.id, ALICE).last_seq == run.last_seq  # a retry is harmless

    error = refused(store.accept, run.id, ERIN)
    assert (error.code, error.status) == (ErrorCode.NOT_HANDED_TO_YOU, 409)
    assert "handed to bob, not to you (erin)" in error.message

    run = store.accept(run.id, BOB)
    assert (run.state, run.owner, run.handoff) == (RunState.RUNNING, "bob", None)
    assert run.lease_expires_at is not None
    assert store.accept(run.id, BOB).last_seq == run.last_seq  # a retry is harmless
    error = refused(store.append_events, run.id, ALICE, [EventIn(type="x")])
    assert error.code is ErrorCode.NOT_OWNER

    run = run_batch(store, run.id, BOB, 3)
    run = store.finish(run.id, BOB, RunState.COMPLETED, "done")
    assert [b.started_by for b in run.batches] == ["alice", "alice", "bob"]
    history = [(e.type, e.actor) for e in store.last_events(run.id, 100, people_only=True)]
    assert ("handoff", "alice") in history and ("accept", "bob") in history
    handoff = next(
        e for e in store.last_events(run.id, 100, people_only=True) if e.type == "handoff"
    )
    assert "web-4 is slow" in handoff.message


def test_handoff_only_to_someone_on_call(store):
    run = start(store)
    error = refused(
        store.handoff, run.id, ALICE, to="erin", note="", oncall=ON_CALL_NOW, oncall_group="oncall"
    )
    assert (error.status, error.code) == (400, ErrorCode.NOT_ON_CALL)
    assert "erin is not on call" in error.message and "alice, bob" in error.message
    error = refused(
        store.handoff, run.id, ALICE, to="bob", note="", oncall=[], oncall_group="oncall"
    )
    assert "nobody" in error.message
    error = refused(
        store.handoff, run.id, ALICE, to="alice", note="", oncall=ON_CALL_NOW, oncall_group="x"
    )
    assert error.status == 400 and "already yours" in error.message


def test_only_the_owner_hands_off(store):
    run = start(store)
    error = refused(
        store.handoff, run.id, BOB, to="bob", note="", oncall=ON_CALL_NOW, oncall_group="oncall"
    )
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)


def test_a_paused_run_handed_off_waits_at_once_and_resume_cancels_it(store):
    run = start(store)
    run = store.pause(run.id, ALICE)
    assert run.state is RunState.PAUSED
    error = refused(store.start_batch, run.id, ALICE, 1)
    assert error.status == 409 and "Resume it first" in error.message
    run = store.handoff(run.id, ALICE, to="bob", note="", oncall=ON_CALL_NOW, oncall_group="oc")
    assert run.state is RunState.HANDED_OFF
    run = store.resume(run.id, ALICE)
    assert (run.state, run.handoff, run.owner) == (RunState.RUNNING, None, "alice")
    types = [e.type for e in store.last_events(run.id, 2)]
    assert types == ["handoff_cancelled", "resume"]


def test_accepting_a_run_that_was_handed_to_nobody(store):
    run = start(store)
    error = refused(store.accept, run.id, BOB)
    assert error.code is ErrorCode.NOT_HANDED_TO_YOU and "not been handed off" in error.message


# --- what the run is: resolved from the inventory ------------------------------------------------


def test_the_inventory_decides_the_hosts_and_the_environment(store, inventory):
    run = start(store, options=RunOptions(batch_size=3, order=BatchOrder.REVERSE))
    assert [b.hosts for b in run.batches] == [["web-5", "web-4", "web-3"], ["web-2", "web-1"]]
    assert (run.environment, run.production) == ("staging", False)
    run = start(store, runbook="reboot", options=RunOptions(limit=["web-4", "web-2"]))
    assert [b.hosts for b in run.batches] == [["web-2"], ["web-4"]]  # the stack's order


@pytest.mark.parametrize("look_alike", ["DB", "db\u200b", "\uff44\uff42", " db", "Db"])
def test_a_look_alike_stack_is_refused_and_never_a_second_lock(store, look_alike):
    run = start(store, ALICE, stack="db")
    error = refused(start, store, BOB, stack=look_alike)
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert "db" in error.message
    assert [r.id for r in store.list_runs()] == [run.id]
    store.abort(run.id, ALICE, "test")
    assert refused(start, store, BOB, stack=look_alike).status == 400  # free stack: still refused


@pytest.mark.parametrize(
    ("stack", "words"),
    [
        ("cache", "unknown stack 'cache'; known stacks: db, mixed, web"),
        ("  ", "expected the name of a stack of the inventory (db, mixed, web)"),
        ("mixed", "app-1 in staging; app-2 in production"),
    ],
)
def test_stacks_no_run_may_start_on(store, stack, words):
    error = refused(start, store, stack=stack)
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert words in error.message
    assert store.list_runs() == []


def test_an_environment_not_declared_non_production_is_production(store, inventory):
    inventory.add_stack("lab", ["lab-1"], "lab")
    error = refused(start, store, ERIN, stack="lab")
    assert (error.status, error.scope) == (403, SCOPE_PRODUCTION)
    assert "lab" in error.message
    run = start(store, ALICE, stack="lab")
    assert (run.environment, run.production) == ("lab", True)


def test_an_unreadable_inventory_refuses_new_runs_and_records_nothing(store, inventory):
    inventory.broken = "YAML parsing failed"
    error = refused(start, store)
    assert (error.status, error.code) == (503, ErrorCode.UNAVAILABLE)
    assert "test-inventory" in error.message and "YAML parsing failed" in error.message
    assert store.list_runs() == []


# --- the inventory changes under a run: plan_changed, replan --------------------------------------


def handed_to_bob(store: Store, caller: Caller = ALICE):
    """A run of stack web whose batch 1 is done, handed off to bob and paused."""
    run = start(store, caller)
    run_batch(store, run.id, caller, 1)
    store.handoff(run.id, caller, to="bob", note="", oncall=ON_CALL_NOW, oncall_group="oncall")
    return store.pause(run.id, caller)


def orphaned(store: Store, clock: Clock, caller: Caller = ALICE):
    """A run of stack web whose batch 1 is done and whose owner's lease ran out in batch 2."""
    run = start(store, caller)
    run_batch(store, run.id, caller, 1)
    store.start_batch(run.id, caller, 2)
    clock.advance(61)
    (run,) = store.expire_leases()
    return run


def test_accept_is_refused_when_a_host_left_the_stack_and_works_after_replan(store, inventory):
    run = handed_to_bob(store)
    inventory.remove_host("web-4", "web")
    error = refused(store.accept, run.id, BOB)
    assert (error.status, error.code, error.run_id) == (409, ErrorCode.PLAN_CHANGED, run.id)
    assert "web-4 left stack web" in error.message and "replan" in error.message
    assert store.get_run(run.id).state is RunState.HANDED_OFF  # nothing changed

    run = store.replan(run.id, BOB, "web-4 was decommissioned")
    assert [b.hosts for b in run.batches] == [["web-1", "web-2"], ["web-3", "web-5"]]
    assert run.batches[0].state is BatchState.DONE and run.batches[0].started_by == "alice"
    assert run.host_states()["web-1"] is HostState.OK  # the done batch is kept as it was
    assert "web-4" not in run.host_states()
    assert run.state is RunState.HANDED_OFF and run.handoff.to == "bob"
    event = store.last_events(run.id, 1)[0]
    assert (event.type, event.actor) == ("replan", "bob")
    assert event.data["before"] == [["web-3", "web-4"], ["web-5"]]
    assert event.data["after"] == [["web-3", "web-5"]]
    assert event.data["reason"] == "web-4 was decommissioned"
    assert "web-3, web-4 | web-5" in event.message and "now web-3, web-5" in event.message

    run = store.accept(run.id, BOB)
    assert (run.owner, run.state) == ("bob", RunState.RUNNING)
    run = run_batch(store, run.id, BOB, 2)
    run = store.finish(run.id, BOB, RunState.COMPLETED, "")
    assert [b.started_by for b in run.batches] == ["alice", "bob"]


def test_takeover_is_refused_when_the_environment_changed_and_works_after_replan(
    store, inventory, clock
):
    run = orphaned(store, clock)
    inventory.move_hosts(WEB_HOSTS, source="staging", target="preprod")  # undeclared: production
    error = refused(store.takeover, run.id, BOB, "alice's kernel died")
    assert (error.status, error.code) == (409, ErrorCode.PLAN_CHANGED)
    assert "now in preprod, not staging" in error.message
    assert store.get_run(run.id).state is RunState.ORPHANED

    run = store.replan(run.id, BOB, "web moved to preprod")
    assert (run.environment, run.production) == ("preprod", True)
    assert [b.hosts for b in run.batches] == [["web-1", "web-2"], ["web-3", "web-4"], ["web-5"]]
    assert [b.state for b in run.batches] == [
        BatchState.DONE,
        BatchState.PENDING,
        BatchState.PENDING,
    ]
    replanned, asked = store.last_events(run.id, 2)
    assert (replanned.data["was_environment"], replanned.data["environment"]) == (
        "staging",
        "preprod",
    )
    # now production: a changed plan needs an approval, by neither alice nor bob (who re-planned)
    assert (asked.type, run.state, run.approvals_needed) == (
        "approval_requested",
        RunState.AWAITING_APPROVAL,
        1,
    )
    assert refused(store.approve, run.id, BOB, "ok").code is ErrorCode.SELF_APPROVAL
    assert store.approve(run.id, DAVE, "preprod move checked").state is RunState.ORPHANED
    run = store.takeover(run.id, BOB, "alice's kernel died")
    assert (run.owner, run.state, run.current_batch) == ("bob", RunState.RUNNING, None)


def test_a_non_production_environment_declared_production_later_is_a_change(store, inventory):
    run = handed_to_bob(store)
    inventory.nonproduction = frozenset()
    error = refused(store.accept, run.id, BOB)
    assert error.code is ErrorCode.PLAN_CHANGED and "staging is now production" in error.message


def test_replan_refused_while_running_by_a_stranger_and_without_the_scopes(store, inventory, clock):
    run = start(store)
    error = refused(store.replan, run.id, ALICE, "web-4 left")
    assert (error.status, error.code) == (409, ErrorCode.WRONG_STATE)
    assert "pause it first" in error.message
    store.pause(run.id, ALICE)
    error = refused(store.replan, run.id, BOB, "web-4 left")
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)
    assert refused(store.replan, run.id, ALICE, " ").status == 400
    store.abort(run.id, ALICE, "test")

    run = orphaned(store, clock, ERIN)
    error = refused(store.replan, run.id, Caller("frank", ERIN.scopes), "erin left")
    assert (error.status, error.scope) == (403, SCOPE_TAKEOVER)
    assert store.replan(run.id, BOB, "on-call re-plans before taking over").state is (
        RunState.ORPHANED
    )
    store.abort(run.id, BOB, "test")

    # erin's paused run, whose stack moved to production under her: she may not re-plan it there
    run = start(store, ERIN)
    store.pause(run.id, ERIN)
    inventory.move_hosts(WEB_HOSTS, source="staging", target="production")
    error = refused(store.replan, run.id, ERIN, "web is production now")
    assert (error.status, error.scope) == (403, SCOPE_PRODUCTION)
    assert "production" in error.message
    assert store.get_run(run.id).environment == "staging"  # nothing recorded


def test_replan_that_leaves_nothing_to_do_keeps_the_done_batches(store, inventory):
    run = handed_to_bob(store)
    for host in ("web-3", "web-4", "web-5"):
        inventory.remove_host(host, "web")
    run = store.replan(run.id, ALICE, "the rest was retired")
    assert [b.hosts for b in run.batches] == [["web-1", "web-2"]]
    run = store.accept(run.id, BOB)
    assert store.finish(run.id, BOB, RunState.COMPLETED, "").state is RunState.COMPLETED


# --- the end --------------------------------------------------------------------------------------


def test_a_finished_run_cannot_be_resumed_or_finished_again(store):
    run = start(store)
    store.finish(run.id, ALICE, RunState.FAILED, "gate failed on batch 1")
    for action in (
        lambda: store.resume(run.id, ALICE),
        lambda: store.finish(run.id, ALICE, RunState.FAILED, ""),
        lambda: store.pause(run.id, ALICE),
        lambda: store.renew_lease(run.id, ALICE),
    ):
        error = refused(action)
        assert (error.status, error.code) == (409, ErrorCode.RUN_FINISHED)
        assert f"run {run.id} is already failed" in error.message
    # notes are still welcome (a post-mortem)
    assert store.add_note(run.id, BOB, "root cause: full /var").actor == "bob"


def test_completing_needs_every_batch_done(store):
    run = start(store)
    run_batch(store, run.id, ALICE, 1)
    error = refused(store.finish, run.id, ALICE, RunState.COMPLETED, "")
    assert error.status == 409 and "batch 2, 3 has not run" in error.message


def test_failing_mid_batch_leaves_the_batch_in_doubt(store):
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    run = store.finish(run.id, ALICE, RunState.FAILED, "kernel panic on web-1")
    assert run.state is RunState.FAILED and run.finished_at
    assert run.host_states()["web-1"] is HostState.IN_DOUBT
    assert run.batches[0].state is BatchState.INTERRUPTED


def test_abort_by_the_owner_or_by_on_call_when_orphaned(store, clock):
    run = start(store, ERIN)
    error = refused(store.abort, run.id, BOB, "no")
    assert error.code is ErrorCode.NOT_OWNER
    clock.advance(61)
    store.expire_leases()
    error = refused(store.abort, run.id, Caller("frank", ERIN.scopes), "cleanup")
    assert (error.status, error.scope) == (403, SCOPE_TAKEOVER)
    run = store.abort(run.id, BOB, "erin is on leave; restarting tomorrow")
    assert run.state is RunState.ABORTED and run.summary.startswith("erin is on leave")


def test_notes_from_anyone_who_may_write_but_not_viewers(store):
    run = start(store)
    assert store.add_note(run.id, ERIN, "watching web-2").message == "watching web-2"
    error = refused(store.add_note, run.id, CAROL, "hi")
    assert (error.status, error.scope) == (403, SCOPE_WRITE)


def test_parameters_decided_after_the_start_are_recorded_by_the_owner_of_the_running_run(
    store, clock
):
    run = start(store)
    errata = {"approved": ["base=1.1"], "errata": [{"package": "base", "version": "1.1"}]}
    run = store.update_parameters(run.id, ALICE, errata)
    assert run.parameters == {"errata": errata["errata"], "approved": ["base=1.1"]}  # replaced
    event = store.events(run.id).events[-1]
    assert (event.type, event.actor, event.data) == ("parameters", "alice", errata)
    assert event.message == "alice recorded approved, errata"
    assert refused(store.update_parameters, run.id, ALICE, {}).status == 400
    too_big = {"approved": ["x" * 20_000]}
    error = refused(store.update_parameters, run.id, ALICE, too_big)
    assert "more than 16384 bytes" in error.message
    assert store.get_run(run.id).parameters == run.parameters  # nothing of a refusal kept
    assert refused(store.update_parameters, run.id, BOB, {"a": 1}).code is ErrorCode.NOT_OWNER
    assert refused(store.update_parameters, run.id, CAROL, {"a": 1}).scope == SCOPE_WRITE
    store.pause(run.id, ALICE)
    assert refused(store.update_parameters, run.id, ALICE, {"a": 1}).code is ErrorCode.WRONG_STATE
    store.resume(run.id, ALICE)
    clock.advance(61)
    store.expire_leases()
    error = refused(store.update_parameters, run.id, ALICE, {"a": 1})
    assert error.code is ErrorCode.LEASE_EXPIRED
    run = store.takeover(run.id, BOB, "alice's kernel died")
    store.finish(run.id, BOB, RunState.FAILED, "")
    error = refused(store.update_parameters, run.id, BOB, {"a": 1})
    assert error.code is ErrorCode.RUN_FINISHED


def test_production_runs_need_the_production_scope_for_every_write(store, clock):
    run = start(store, ALICE, stack="db")
    error = refused(store.renew_lease, run.id, Caller("alice", ERIN.scopes))
    assert error.scope == SCOPE_PRODUCTION


def test_hostile_input_is_refused_or_cleaned_on_every_database(store):
    """PostgreSQL refuses NUL in text and numbers past its integers; neither may become a 500."""
    run = start(store)
    assert store.add_note(run.id, ALICE, "a\x00b").message == "ab"
    error = refused(store.append_events, run.id, ALICE, [EventIn(type="x", host="web\x00")])
    assert error.status == 400 and "control characters" in error.message
    error = refused(store.append_events, run.id, ALICE, [EventIn(type="x", batch=10**12)])
    assert error.status == 400
    assert store.events(run.id, since=10**30).events == []
    assert store.last_events(run.id, 5, before=10**30)[-1].type == "note"
    assert refused(start, store, stack="web\x00").status == 400


def test_unknown_runs(store):
    error = refused(store.get_run, 999)
    assert (error.status, error.code) == (404, ErrorCode.NOT_FOUND)
    assert refused(store.events, 999).status == 404


# --- durability -----------------------------------------------------------------------------------


def test_reopening_the_database_loses_nothing(store, open_store):
    run = start(store)
    run_batch(store, run.id, ALICE, 1)
    store.handoff(run.id, ALICE, to="bob", note="n", oncall=ON_CALL_NOW, oncall_group="oncall")
    before = store.get_run(run.id)
    events_before = store.events(run.id, limit=1000).events
    store.close()

    reopened = open_store()
    assert reopened.get_run(run.id) == before
    assert reopened.events(run.id, limit=1000).events == events_before
    # and it carries on: sequence numbers continue, the stack is still taken
    assert reopened.pause(run.id, ALICE).last_seq == before.last_seq + 1
    assert refused(start, reopened, BOB).code is ErrorCode.RUN_ACTIVE
    assert reopened.schema_version() == 6


def test_a_schema_1_database_is_migrated_to_5_and_its_runs_go_on(database_url, open_store, clock):
    """Schema 1 (before runs.options): made by hand, with a run in progress, then opened."""
    engine = create_engine(database_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE runs DROP COLUMN options"))
            at = clock.now.replace(tzinfo=None)
            conn.execute(insert(tables.schema).values(version=1, created_at=at))
            run_id = conn.execute(
                insert(tables.runs).values(
                    runbook="patching",
                    stack="web",
                    environment="staging",
                    production=False,
                    parameters={"errata": ["DSA-1"]},
                    state="running",
                    owner="alice",
                    lease_expires_at=at + timedelta(seconds=60),
                    lease_seconds=60,
                    created_by="alice",
                    created_at=at,
                    updated_at=at,
                    active_key="patching\nweb",
                    last_seq=0,
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(tables.batches),
                [{"run_id": run_id, "number": n, "state": "pending"} for n in (1, 2)],
            )
            conn.execute(
                insert(tables.hosts),
                [
                    {"run_id": run_id, "name": h, "batch": b, "position": i, "state": "pending"}
                    for i, (b, h) in enumerate([(1, "web-1"), (1, "web-2"), (2, "web-3")])
                ],
            )
    finally:
        engine.dispose()

    store = open_store()
    assert store.schema_version() == 6
    run = store.get_run(run_id)
    assert run.options == RunOptions()  # a schema-1 run: the defaults
    assert [b.hosts for b in run.batches] == [["web-1", "web-2"], ["web-3"]]
    run_batch(store, run_id, ALICE, 1)
    assert refused(start, store, BOB).code is ErrorCode.RUN_ACTIVE  # still holds its stack
    assert start(store, runbook="reboot").options == RunOptions(batch_size=2)
    assert open_store().schema_version() == 6  # opening again changes nothing


def test_list_runs_active_first_then_recent(store):
    finished = start(store, stack="web")
    store.abort(finished.id, ALICE, "test")
    active = start(store, stack="db")
    listed = store.list_runs()
    assert [r.id for r in listed] == [active.id, finished.id]
    assert [r.id for r in store.list_runs(finished=0)] == [active.id]
    assert [r.id for r in store.list_runs(stack="web")] == [finished.id]
    assert [r.id for r in store.list_runs(runbook="patching", stack="db")] == [active.id]


# --- approvals ------------------------------------------------------------------------------------


def approved(store: Store, caller: Caller = ALICE, approver: Caller = BOB, **overrides):
    """A production run (stack db) requested by `caller` and approved by `approver`."""
    run = start(store, caller, stack="db", **overrides)
    return store.approve(run.id, approver, "maintenance window agreed")


def test_a_production_run_waits_for_approval_with_nothing_running(store, clock):
    run = start(store, ALICE, stack="db")
    assert (run.state, run.owner, run.lease_expires_at) == (
        RunState.AWAITING_APPROVAL,
        "alice",
        None,
    )
    assert (run.approvals_needed, run.approvals) == (1, [])
    assert run.approval_expires_at == wire_time(clock.now + timedelta(seconds=1800))
    started, asked = store.last_events(run.id, 2)
    assert (started.type, asked.type, asked.actor) == ("start", "approval_requested", "alice")
    assert "nothing runs until an on-call engineer other than alice approves it" in asked.message
    assert asked.data["plan"] == [["db-1", "db-2"], ["db-3"]]
    for call, args in (
        (store.start_batch, (1,)),
        (store.renew_lease, ()),
        (store.update_parameters, ({"approved_errata": ["DSA-1"]},)),
        (store.append_events, ([EventIn(type="runner_on_ok")],)),
        (store.pause, ()),
        (store.handoff, ()),
    ):
        kwargs = (
            {"to": "bob", "note": "", "oncall": ON_CALL_NOW, "oncall_group": "oncall"}
            if call == store.handoff
            else {}
        )
        error = refused(call, run.id, ALICE, *args, **kwargs)
        assert (error.status, error.code) == (409, ErrorCode.AWAITING_APPROVAL), call
        assert "awaiting_approval" in error.message
    assert store.get_run(run.id).last_seq == run.last_seq  # nothing recorded
    # a staging run needs none
    staging = start(store, ERIN)
    assert (staging.state, staging.approvals_needed, staging.approval_expires_at) == (
        RunState.RUNNING,
        0,
        None,
    )


def test_another_on_call_engineer_approves_and_the_requester_gets_the_lease(store, clock):
    run = start(store, ALICE, stack="db")
    clock.advance(120)
    run = store.approve(run.id, BOB, "  window agreed with the DBAs  ")
    assert (run.state, run.owner) == (RunState.RUNNING, "alice")
    assert run.lease_expires_at == wire_time(clock.now + timedelta(seconds=60))
    assert [(a.approver, a.decision.value, a.reason, a.at) for a in run.approvals] == [
        ("bob", "approve", "window agreed with the DBAs", wire_time(clock.now))
    ]
    # the approval expires unless a batch starts within the TTL
    assert run.approval_expires_at == wire_time(clock.now + timedelta(seconds=1800))
    event = store.last_events(run.id, 1)[0]
    assert (event.type, event.actor) == ("approved", "bob")
    assert event.message.startswith("bob approved the run (1 of 1): window agreed with the DBAs")
    assert "alice holds its lease" in event.message
    store.renew_lease(run.id, ALICE)
    run = store.start_batch(run.id, ALICE, 1)
    assert run.approval_expires_at is None
    clock.advance(3600)
    store.renew_lease(run.id, ALICE)
    assert store.expire_approvals() == []  # started: the approval stands


def test_who_may_not_approve_and_why(store):
    run = start(store, ALICE, stack="db")
    error = refused(store.approve, run.id, ALICE, "mine", oncall=["alice", "bob"])
    assert (error.status, error.code) == (409, ErrorCode.SELF_APPROVAL)
    assert "you (alice) requested run" in error.message and "Ask bob (on call" in error.message
    for caller in (ERIN, CAROL):
        error = refused(store.approve, run.id, caller, "looks fine")
        assert (error.status, error.scope) == (403, SCOPE_PRODUCTION)
    error = refused(store.reject, run.id, BOB, "   ")
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert "reason" in error.message
    assert store.get_run(run.id).state is RunState.AWAITING_APPROVAL
    assert store.get_run(run.id).approvals == []
    store.approve(run.id, BOB, "ok")
    error = refused(store.reject, run.id, DAVE, "too late")
    assert (error.code, "run 1 is running, not awaiting approval") == (
        ErrorCode.WRONG_STATE,
        error.message.split(";")[0],
    )


def test_approving_twice_counts_once(open_store):
    store = open_store(approval=ApprovalPolicy(approvers=2))
    run = start(store, ALICE, stack="db")
    assert run.approvals_needed == 2
    run = store.approve(run.id, BOB, "ok")
    seq = run.last_seq
    again = store.approve(run.id, BOB, "ok, again")
    assert (again.state, again.last_seq, len(again.approvals)) == (
        RunState.AWAITING_APPROVAL,
        seq,
        1,
    )
    assert "(1 of 2)" in store.last_events(run.id, 1)[0].message
    run = store.approve(run.id, DAVE, "agreed")
    assert run.state is RunState.RUNNING and [a.approver for a in run.approvals] == ["bob", "dave"]
    assert store.approve(run.id, BOB, "retry after a lost answer").last_seq == run.last_seq


def test_a_rejection_ends_the_run_with_the_reason_and_frees_the_stack(store):
    run = start(store, ALICE, stack="db")
    run = store.reject(run.id, BOB, "not during the sale")
    assert (run.state, run.finished, run.lease_expires_at) == (RunState.REJECTED, True, None)
    assert run.summary == "rejected by bob: not during the sale"
    assert run.approval_expires_at is None
    assert [(a.approver, a.decision.value) for a in run.approvals] == [("bob", "reject")]
    event = store.last_events(run.id, 1)[0]
    assert (event.type, event.message) == ("rejected", "bob rejected the run: not during the sale")
    assert refused(store.approve, run.id, DAVE, "x").code is ErrorCode.RUN_FINISHED
    assert start(store, ALICE, stack="db").id != run.id  # the stack is free


def test_an_undecided_request_expires_and_the_run_is_aborted_by_the_service(store, clock):
    run = start(store, ALICE, stack="db")
    clock.advance(1799)
    assert store.expire_approvals() == []
    clock.advance(1)
    expires = clock.now
    error = refused(store.approve, run.id, BOB, "just in time?")
    assert (error.status, error.code) == (409, ErrorCode.APPROVAL_EXPIRED)
    assert f"expired at {expires:%Y-%m-%d %H:%M:%S} UTC" in error.message
    (run,) = store.expire_approvals()
    assert (run.state, run.summary) == (
        RunState.ABORTED,
        f"approval expired at {expires:%H:%M:%S} UTC",
    )
    event = store.last_events(run.id, 1)[0]
    assert (event.type, event.actor, event.kind) == ("approval_expired", "runs", EventKind.SYSTEM)
    assert event.message.startswith(f"approval expired at {expires:%H:%M:%S} UTC: nobody decided")
    error = refused(store.approve, run.id, BOB, "late")
    assert error.code is ErrorCode.APPROVAL_EXPIRED and f"{expires:%H:%M:%S}" in error.message
    assert store.expire_approvals() == []


def test_an_approval_expires_if_no_batch_starts_in_time(store, clock):
    run = approved(store)
    clock.advance(1000)
    store.pause(run.id, ALICE)  # paused, handed off or orphaned: the approval still runs out
    clock.advance(800)
    (run,) = store.expire_approvals()
    assert run.state is RunState.ABORTED and run.summary.startswith("approval expired at")
    assert "did not start a batch in time" in store.last_events(run.id, 1)[0].message


def test_a_handed_off_run_keeps_its_approval(store):
    run = approved(store)
    run_batch(store, run.id, ALICE, 1)
    store.handoff(run.id, ALICE, to="bob", note="", oncall=ON_CALL_NOW, oncall_group="oncall")
    store.pause(run.id, ALICE)
    run = store.accept(run.id, BOB)
    assert (run.state, run.owner, run.approvals_needed) == (RunState.RUNNING, "bob", 1)
    assert [a.approver for a in run.approvals] == ["bob"]
    run_batch(store, run.id, BOB, 2)


def test_a_replan_asks_for_approval_again_and_the_run_returns_to_its_state(store, inventory):
    run = approved(store)
    run_batch(store, run.id, ALICE, 1)
    store.pause(run.id, ALICE)
    inventory.add_host("db-4", "db")
    inventory.add_host("db-4", "production")
    run = store.replan(run.id, ALICE, "db-4 joined")
    assert (run.state, run.approvals, run.lease_expires_at) == (
        RunState.AWAITING_APPROVAL,
        [],
        None,
    )
    assert [b.hosts for b in run.batches] == [["db-1", "db-2"], ["db-3", "db-4"]]
    assert refused(store.resume, run.id, ALICE).code is ErrorCode.AWAITING_APPROVAL
    assert refused(store.approve, run.id, ALICE, "x").code is ErrorCode.SELF_APPROVAL
    run = store.approve(run.id, BOB, "db-4 is fine")
    assert run.state is RunState.PAUSED and [a.reason for a in run.approvals] == ["db-4 is fine"]
    assert "it is paused again" in store.last_events(run.id, 1)[0].message
    run = store.resume(run.id, ALICE)
    run_batch(store, run.id, ALICE, 2)
    # the ledger keeps the first round's decision too
    assert [e.type for e in store.events(run.id).events].count("approved") == 2


def test_which_environments_need_approval_is_a_setting(open_store, inventory):
    store = open_store(approval=ApprovalPolicy(production=False))
    assert start(store, ALICE, stack="db").state is RunState.RUNNING
    store = open_store(approval=ApprovalPolicy(environments=frozenset({"staging"}), approvers=1))
    assert start(store, ERIN, runbook="reboot").state is RunState.AWAITING_APPROVAL
    # an ops engineer may not approve, not even a staging run
    run = store.list_runs(runbook="reboot")[0]
    assert refused(store.approve, run.id, ERIN, "ok").status == 403
    assert store.approve(run.id, BOB, "ok").state is RunState.RUNNING


def test_the_owner_may_abort_a_run_awaiting_approval(store):
    run = start(store, ALICE, stack="db")
    run = store.abort(run.id, ALICE, "wrong stack")
    assert run.state is RunState.ABORTED and run.approval_expires_at is None
    assert refused(store.approve, run.id, BOB, "x").code is ErrorCode.RUN_FINISHED


def test_a_schema_3_database_is_migrated_to_5(database_url, open_store, clock):
    engine = create_engine(database_url)
    try:
        for table in metadata.sorted_tables:
            if table is not tables.approvals:
                table.create(engine)
        with engine.begin() as conn:
            for column in (
                "approvals_needed",
                "approval_round",
                "approval_expires_at",
                "approval_requested_by",
                "resume_state",
            ):
                conn.execute(text(f"ALTER TABLE runs DROP COLUMN {column}"))
            at = clock.now.replace(tzinfo=None)
            for version in (1, 2, 3):
                conn.execute(insert(tables.schema).values(version=version, created_at=at))
    finally:
        engine.dispose()
    store = open_store()
    assert store.schema_version() == 6
    run = start(store, ALICE, stack="db")
    assert run.state is RunState.AWAITING_APPROVAL
    assert store.approve(run.id, BOB, "ok").state is RunState.RUNNING
    assert open_store().schema_version() == 6
