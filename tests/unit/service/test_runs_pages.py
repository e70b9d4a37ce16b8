"""The status pages: what they show, that they escape everything, and that a big run is quick."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from fake_alertmanager import FakeAlertmanager

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import EventIn, HostResult, HostState, RunOptions, RunState
from opsbook.service.pages import RunCard, index_page, run_page
from opsbook.service.rules import Caller
from opsbook.service.store import Store

ALICE = Caller("alice", frozenset({SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER}))
BOB = Caller("bob", ALICE.scopes)
EVIL = "<script>alert('x')</script>"


@pytest.fixture
def store(tmp_path, inventory):
    store = Store(
        f"sqlite:///{tmp_path / 'runs.sqlite'}",
        fleet=inventory.current,
        alertmanager=FakeAlertmanager(),
    )
    yield store
    store.close()


def card(store: Store, run_id: int) -> RunCard:
    people = store.last_events(run_id, 50, people_only=True)
    return RunCard(
        run=store.get_run(run_id),
        last_events=store.last_events(run_id, 8),
        notes=[e for e in people if e.type in ("note", "handoff")],
    )


def test_the_index_shows_progress_owner_lease_handoff_and_notes_escaped(store):
    run = store.create_run(
        ALICE,
        runbook=f"patch{EVIL}",
        stack="db",  # production: db-1, db-2 | db-3
        options=RunOptions(batch_size=2),
    )
    store.approve(run.id, BOB, "maintenance window")  # production: another on-call approves
    store.start_batch(run.id, ALICE, 1)
    store.append_events(
        run.id,
        ALICE,
        [EventIn(type="runner_on_failed", uuid="1", host="db-2", task=EVIL, message=EVIL)],
    )
    store.finish_batch(
        run.id,
        ALICE,
        1,
        [
            HostResult(host="db-1", state=HostState.OK),
            HostResult(host="db-2", state=HostState.FAILED, message=f"apt: {EVIL}"),
        ],
    )
    store.add_note(run.id, ALICE, f"looking at db-2 {EVIL}")
    store.handoff(run.id, ALICE, to="bob", note="over to you", oncall=["bob"], oncall_group="oc")
    now = datetime.now(UTC)
    page = index_page([card(store, run.id)], [], who="carol", prefix="/services/runs/", now=now)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'http-equiv="refresh"' in page
    assert "signed in as carol" in page
    assert "owner <b>alice</b>" in page and "lease until" in page
    assert "Handed off by alice to <b>bob</b>" in page and "over to you" in page
    assert 'class="h h-failed"' in page and 'class="h h-pending"' in page
    assert "batch 1</td><td>done" in page and "<td>alice</td>" in page
    assert "looking at db-2" in page
    assert 'class="badge prod"' in page
    assert not re.search(r"https?://", page.replace("http-equiv", ""))  # no external assets


def test_the_run_page_pages_through_events(store):
    run = store.create_run(ALICE, runbook="patching", stack="web")
    store.append_events(run.id, ALICE, [EventIn(type="e", uuid=str(i)) for i in range(300)])
    now = datetime.now(UTC)
    events = store.last_events(run.id, 200)
    page = run_page(
        card(store, run.id), [], events, older=events[0].seq, who="x", prefix="/p/", now=now
    )
    assert "Events 102 to 301 of 301" in page and '/p/runs/1?before=102"' in page
    assert 'http-equiv="refresh"' in page
    store.finish(run.id, ALICE, RunState.FAILED, "stop")
    page = run_page(card(store, run.id), [], [], older=None, who="x", prefix="/p/", now=now)
    assert 'http-equiv="refresh"' not in page  # finished: nothing changes any more


def test_pages_are_quick_with_a_run_of_10000_events(store, inventory):
    hosts = [f"big-{i}" for i in range(50)]
    inventory.add_stack("big", hosts, "staging")
    run = store.create_run(
        ALICE, runbook="patching", stack="big", options=RunOptions(batch_size=10)
    )
    for chunk in range(10):
        store.append_events(
            run.id,
            ALICE,
            [
                EventIn(
                    type="runner_on_ok",
                    uuid=f"{chunk}-{i}",
                    host=hosts[i % 50],
                    task=f"task {i}",
                    data={"changed": True},
                )
                for i in range(1000)
            ],
        )
    started = time.perf_counter()
    page = index_page([card(store, run.id)], [], who="x", prefix="/p/", now=datetime.now(UTC))
    index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    events = store.last_events(run.id, 200)
    history = store.last_events(run.id, 1000, people_only=True)
    detail = run_page(
        card(store, run.id),
        history,
        events,
        older=events[0].seq,
        who="x",
        prefix="/p/",
        now=datetime.now(UTC),
    )
    detail_seconds = time.perf_counter() - started
    assert "big-49" in page and "Events 9802 to 10001 of 10001" in detail
    print(
        f"\nstatus page, run of 10,000 events: index {index_seconds * 1000:.0f} ms, "
        f"run page {detail_seconds * 1000:.0f} ms (SQLite)"
    )
    assert index_seconds < 1.0 and detail_seconds < 1.0
