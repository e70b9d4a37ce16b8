"""Four eyes on production, from the runbook's side: the run waits for an on-call engineer other
than its requester, visibly, and stops with the reason if it is not approved.

Against the real runs service app on loopback (opsbook_runs_service): alice and bob are on call;
erin is an engineer of `ops` only, carol a viewer. A production run (db) needs one approval (the
service's default), a staging one (web) none.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from opsbook_fleet import FLEET_DIR, fleet_settings
from opsbook_runs_service import Service

from opsbook import runs, runwidgets
from opsbook.contract import wire
from opsbook.errors import OpsbookError
from opsbook.inventory import Inventory
from opsbook.runs import ApprovalStatus, NotApproved, RunSession
from opsbook.runsclient import RunsClient, RunsError

INVENTORY = FLEET_DIR / "inventories" / "demo"


def client(service: Service, who: str = "alice") -> RunsClient:
    return RunsClient(service.url, f"{who}-token", retry_for=10)


def request_db(service: Service, **parameters) -> RunSession:
    return RunSession.start(
        client(service),
        runbook="patching",
        stack="db",
        options=wire.RunOptions(limit=["db-1", "db-2"]),
        parameters=parameters,
    )


def lifecycle_settings(tmp_path):
    """The fake fleet's settings: certificates off, nothing listening (nothing may run anyway)."""
    return fleet_settings("http://127.0.0.1:9", tmp_path / "runs")


def later(seconds: float, action) -> threading.Thread:
    """`action` from another thread (another engineer) after `seconds`."""

    def act() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_a_production_run_waits_visibly_until_bob_approves_it(runs_service, tmp_path):
    session = request_db(runs_service, approved_errata="all")
    run = session.run
    assert run.state is wire.RunState.AWAITING_APPROVAL
    assert run.approvals_needed == 1 and run.approval_expires_at
    assert session.keeper is None  # no lease while it waits: nothing to renew
    with pytest.raises(OpsbookError, match="awaits approval: no pre-checks until"):
        session.pre_checks(lifecycle_settings(tmp_path), Inventory.load(INVENTORY))
    with pytest.raises(OpsbookError, match="call wait_for_approval"):
        session.patch(lifecycle_settings(tmp_path), Inventory.load(INVENTORY))

    seen: list[ApprovalStatus] = []
    view = runwidgets.ApprovalWait()

    def progress(status: ApprovalStatus) -> None:
        seen.append(status)
        view.update(status)

    bob = later(1.0, lambda: client(runs_service, "bob").approve(run.id, "change CHG-42 agreed"))
    approved = session.wait_for_approval(10, on_progress=progress)
    bob.join()

    assert approved.state is wire.RunState.RUNNING and approved.owner == "alice"
    waiting = seen[0]
    assert waiting.waiting
    assert waiting.approvers == ["bob"]  # the on-call group, alice (the requester) left out
    assert waiting.link == f"{runs_service.url}/runs/{run.id}"
    assert 0 < waiting.time_left <= 10  # the runbook's deadline is the sooner here
    assert 1700 < waiting.expires_in <= 1800  # the service's default: 30 minutes
    described = waiting.describe()
    assert "awaits approval" in described and "who may approve: bob" in described
    assert f"{runs_service.url}/runs/{run.id}" in described
    assert len(seen) >= 2  # updated while waiting
    assert seen[-1].run.state is wire.RunState.RUNNING
    assert "approved: it runs" in view.widget.value and "change CHG-42 agreed" in view.widget.value
    (decision,) = approved.approvals
    assert (decision.approver, decision.decision, decision.reason) == (
        "bob",
        wire.ApprovalDecisionKind.APPROVE,
        "change CHG-42 agreed",
    )
    # The lease is the requester's from the approval on, renewed by the session's keeper.
    assert session.keeper is not None and not session.keeper.stopped
    assert session.keeper.lost is None
    assert "approved by bob at" in session.describe()
    assert "change CHG-42 agreed" in runwidgets.run_html(session.refresh())
    session.client.abort(run.id, "test over")
    session.keeper.stop()


def test_a_staging_run_needs_no_approval(runs_service):
    session = RunSession.start(client(runs_service), runbook="patching", stack="web")
    assert session.run.state is wire.RunState.RUNNING and session.run.approvals_needed == 0
    seen: list[ApprovalStatus] = []
    assert session.wait_for_approval(1, on_progress=seen.append).state is wire.RunState.RUNNING
    assert "needs no approval" in seen[-1].describe()
    session.keeper.stop()


def test_the_requester_viewers_and_engineers_off_call_cannot_approve(runs_service):
    run = request_db(runs_service).run
    with pytest.raises(RunsError) as own:
        client(runs_service, "alice").approve(run.id, "I know what I am doing")
    assert own.value.code is wire.ErrorCode.SELF_APPROVAL and own.value.reply.status == 409
    assert "bob" in str(own.value)  # who else may
    for who in ("erin", "carol"):  # ops only; a viewer
        with pytest.raises(RunsError) as refused:
            client(runs_service, who).approve(run.id, "fine by me")
        assert refused.value.code is wire.ErrorCode.MISSING_SCOPE
        assert refused.value.reply.status == 403
        assert "custom:runs:production" in str(refused.value)
    with pytest.raises(RunsError) as empty:
        client(runs_service, "bob").approve(run.id, " ")
    assert empty.value.reply.status == 400
    assert client(runs_service).run(run.id).state is wire.RunState.AWAITING_APPROVAL
    # approving twice is harmless, and counted once
    client(runs_service, "bob").approve(run.id, "fine")
    again = client(runs_service, "bob").approve(run.id, "fine")
    assert [a.approver for a in again.approvals] == ["bob"]
    with pytest.raises(RunsError) as late:
        client(runs_service, "bob").reject(run.id, "changed my mind")
    assert late.value.reply.status == 409  # running now, not awaiting approval


def test_a_rejected_run_stops_the_runbook_with_the_reason(runs_service):
    session = request_db(runs_service)
    later(0.5, lambda: client(runs_service, "bob").reject(session.run.id, "not during the freeze"))
    with pytest.raises(NotApproved, match=r"rejected by bob at \d\d:\d\d:\d\d UTC: not during"):
        session.wait_for_approval(10)
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.REJECTED and "not during the freeze" in run.summary
    assert session.keeper is None  # never held
    assert "REJECTED by bob" in runs.describe_approval(run)
    fresh = request_db(runs_service)  # the stack is free again
    fresh.client.abort(fresh.run.id, "test over")


def test_past_the_runbooks_deadline_the_run_is_aborted(runs_service):
    session = request_db(runs_service)
    started = time.monotonic()
    with pytest.raises(NotApproved, match="not approved within the runbook's deadline of 1 s"):
        session.wait_for_approval(1)
    assert time.monotonic() - started < 5
    run = client(runs_service).run(session.run.id)
    assert run.state is wire.RunState.ABORTED  # nobody approves a run no kernel waits for
    with pytest.raises(RunsError):
        client(runs_service, "bob").approve(run.id, "too late")


def test_an_expired_request_stops_the_runbook_with_when(runs_service):
    session = request_db(runs_service)
    runs_service.clock.now += timedelta(seconds=1801)
    expired = runs_service.store.expire_approvals()
    assert [r.id for r in expired] == [session.run.id]
    with pytest.raises(NotApproved, match=r"approval expired at \d\d:\d\d:\d\d UTC"):
        session.wait_for_approval(10)
    assert client(runs_service).run(session.run.id).state is wire.RunState.ABORTED


def test_who_may_approve_leaves_out_the_requester_owner_and_whoever_it_is_handed_to(
    runs_service,
):
    run = request_db(runs_service).run
    assert runs.approvers_of(run, ["alice", "bob", "dave"]) == ["bob", "dave"]
    handed = wire.Run.from_dict(
        run.to_dict() | {"handoff": {"to": "dave", "note": "", "by": "alice", "at": run.created_at}}
    )
    assert runs.approvers_of(handed, ["alice", "bob", "dave"]) == ["bob"]
    status = runs.approval_status(client(runs_service), run, oncall=["alice"])
    assert "nobody: no one else is on call now" in status.describe()
    assert "nobody else is on call now" in runwidgets.approval_html(status)


def test_the_link_is_the_public_address_when_the_hub_gives_one(runs_service, monkeypatch):
    monkeypatch.setenv("OPSBOOK_RUNS_PUBLIC_URL", "https://ops.example.org/services/runs/")
    assert runs.run_page(client(runs_service), 7) == "https://ops.example.org/services/runs/runs/7"


def test_the_approvers_side_lists_pending_runs_and_decides_with_a_reason(runs_service):
    waiting = request_db(runs_service, approved_errata=["opsbook-demo-db=1.0.1"]).run
    staging = RunSession.start(client(runs_service), runbook="patching", stack="web")
    bob = client(runs_service, "bob")
    (pending,) = runs.pending_approvals(bob.runs())
    assert pending.id == waiting.id
    described = runs.describe_approval(pending)
    assert f"run {waiting.id}: patching of db (production, PRODUCTION), requested by alice" in (
        described
    )
    assert "  batch 1: db-1" in described and "  batch 2: db-2" in described
    assert "errata: opsbook-demo-db=1.0.1 (as the requester's runbook asks" in described
    assert "options: batch_size=1" in described and "limit=db-1,db-2" in described
    assert "approvals: 0 of 1" in described and "expires at" in described
    listed = runs.describe_runs(bob.runs())
    line = f"run {waiting.id}: patching on db (production), awaiting_approval, owner alice"
    assert f"{line}, requested by alice" in listed

    controls = runwidgets.ApprovalControls(client(runs_service, "alice"), waiting.id, "mine")
    assert controls.decide("approve") is None  # the service's refusal, shown as it is
    assert "you (alice) requested run" in controls.status.value
    with pytest.raises(OpsbookError, match="decision 'maybe'"):
        runs.decide(bob, waiting.id, "maybe", "x")
    assert runs.decide(bob, waiting.id, "view", "").state is wire.RunState.AWAITING_APPROVAL
    decided = runs.decide(bob, waiting.id, "approve", "errata reviewed with the DBAs")
    assert decided.state is wire.RunState.RUNNING
    assert runs.pending_approvals(bob.runs()) == []
    staging.keeper.stop()
