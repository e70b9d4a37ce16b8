"""The state machine and permissions of runs (opsbook.service.rules), as pure functions.

Every action against every state, by the owner and by someone else: allowed, or refused with the
status, code and words a person needs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import (
    BatchState,
    ErrorCode,
    HostState,
    RunState,
)
from opsbook.service import rules
from opsbook.service.rules import Action, Caller, Refused, RunFacts

ONCALL = frozenset({SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER})
OPS = frozenset({SCOPE_READ, SCOPE_WRITE})
ALICE = Caller("alice", ONCALL)
BOB = Caller("bob", ONCALL)
ERIN = Caller("erin", OPS)
CAROL = Caller("carol", frozenset({SCOPE_READ}))
MALLORY = Caller("mallory", frozenset())

S = RunState
OWNER_ACTIONS = [
    Action.APPEND,
    Action.BATCH_START,
    Action.BATCH_FINISH,
    Action.GATE,
    Action.LEASE,
    Action.HANDOFF,
    Action.PAUSE,
    Action.RESUME,
    Action.FINISH,
    Action.ABORT,
]
# What the owner (alice) may do in each state; the rest is refused.
OWNER_MAY = {
    S.RUNNING: set(OWNER_ACTIONS),
    S.PAUSED: {Action.HANDOFF, Action.PAUSE, Action.RESUME, Action.FINISH, Action.ABORT},
    S.HANDED_OFF: {Action.HANDOFF, Action.PAUSE, Action.RESUME, Action.ABORT},
    S.ORPHANED: {Action.ABORT},
    S.AWAITING_APPROVAL: {Action.ABORT},  # nothing runs before the approval; it may be dropped
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.ABORTED: set(),
    S.REJECTED: set(),
}
FINISHED = (S.COMPLETED, S.FAILED, S.ABORTED, S.REJECTED)


def facts(state: RunState, **kw) -> RunFacts:
    base = {
        "id": 7,
        "state": state,
        "owner": "alice",
        "production": False,
        "lease_expires_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "finished_at": datetime(2026, 11, 26, 13, 0, tzinfo=UTC) if state in FINISHED else None,
    }
    base.update(kw)
    return RunFacts(**base)


def refusal(action: Action, run: RunFacts, caller: Caller) -> Refused:
    with pytest.raises(Refused) as caught:
        rules.authorize(action, run, caller)
    return caught.value


@pytest.mark.parametrize("state", list(RunState))
@pytest.mark.parametrize("action", OWNER_ACTIONS)
def test_the_owner_in_each_state(action, state):
    run = facts(state)
    if action in OWNER_MAY[state]:
        rules.authorize(action, run, ALICE)
        return
    error = refusal(action, run, ALICE)
    assert error.status == 409 and error.run_id == 7
    if state in FINISHED:
        assert error.code is ErrorCode.RUN_FINISHED
        assert f"run 7 is already {state.value}" in error.message
        assert "2026-11-26 13:00:00 UTC" in error.message
    elif state is S.ORPHANED:
        assert error.code is ErrorCode.LEASE_EXPIRED
        assert "lease ran out at 2026-11-26 12:00:00 UTC" in error.message
    elif state is S.AWAITING_APPROVAL:
        assert error.code is ErrorCode.AWAITING_APPROVAL
        assert "run 7 is awaiting_approval: nothing may run until" in error.message
    else:
        assert error.code is ErrorCode.WRONG_STATE
        assert f"run 7 is {state.value}" in error.message


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED, S.HANDED_OFF])
@pytest.mark.parametrize("action", sorted(set(OWNER_ACTIONS) - {Action.ABORT}))
def test_someone_else_is_told_who_owns_the_run(action, state):
    error = refusal(action, facts(state), BOB)
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)
    assert "run 7 is owned by alice, not by you (bob)" in error.message


@pytest.mark.parametrize("action", [Action.APPEND, Action.LEASE])
def test_a_kernel_that_lost_its_run_is_told_to_stop(action):
    error = refusal(action, facts(S.RUNNING, owner="bob"), ALICE)
    assert "stop working on it" in error.message


@pytest.mark.parametrize("action", [*OWNER_ACTIONS, Action.NOTE, Action.ACCEPT, Action.TAKEOVER])
def test_viewers_may_change_nothing(action):
    error = refusal(action, facts(S.RUNNING, owner="carol"), CAROL)
    assert (error.status, error.code, error.scope) == (403, ErrorCode.MISSING_SCOPE, SCOPE_WRITE)
    assert "carol may not" in error.message and SCOPE_WRITE in error.message
    assert "custom:runs:read" in error.message  # what they do have


def test_no_scope_at_all():
    with pytest.raises(Refused) as caught:
        rules.may_read(MALLORY)
    assert caught.value.scope == SCOPE_READ and "no runs scope" in caught.value.message


@pytest.mark.parametrize("action", OWNER_ACTIONS)
def test_production_runs_need_the_production_scope(action):
    error = refusal(action, facts(S.RUNNING, owner="erin", production=True), ERIN)
    assert (error.status, error.scope) == (403, SCOPE_PRODUCTION)
    assert "production stack" in error.message


def test_creating():
    rules.may_create(ERIN, production=False, stack="web", environment="staging")
    rules.may_create(ALICE, production=True, stack="db", environment="production")
    with pytest.raises(Refused) as caught:
        rules.may_create(ERIN, production=True, stack="db", environment="lab")
    assert caught.value.scope == SCOPE_PRODUCTION
    assert "db" in caught.value.message and "lab" in caught.value.message
    with pytest.raises(Refused) as caught:
        rules.may_create(CAROL, production=False, stack="web", environment="staging")
    assert caught.value.scope == SCOPE_WRITE


# --- accept ---------------------------------------------------------------------------------------


def test_accept_by_the_receiver_of_a_handed_off_run():
    rules.authorize(Action.ACCEPT, facts(S.HANDED_OFF, handoff_to="bob"), BOB)
    assert rules.state_after(Action.ACCEPT, facts(S.HANDED_OFF, handoff_to="bob")) is S.RUNNING


@pytest.mark.parametrize(
    ("run", "caller", "code", "words"),
    [
        (facts(S.HANDED_OFF, handoff_to="bob"), ERIN, ErrorCode.NOT_HANDED_TO_YOU, "not to you"),
        (facts(S.PAUSED), BOB, ErrorCode.NOT_HANDED_TO_YOU, "not been handed off"),
        (
            facts(S.RUNNING, handoff_to="bob", current_batch=2),
            BOB,
            ErrorCode.WRONG_STATE,
            "batch 2 is still running",
        ),
        (facts(S.ORPHANED, handoff_to="bob"), BOB, ErrorCode.WRONG_STATE, "orphaned"),
        (facts(S.COMPLETED, handoff_to="bob"), BOB, ErrorCode.RUN_FINISHED, "already completed"),
    ],
)
def test_accept_refused(run, caller, code, words):
    error = refusal(Action.ACCEPT, run, caller)
    assert (error.status, error.code) == (409, code) and words in error.message


def test_accept_on_production_needs_the_production_scope():
    run = facts(S.HANDED_OFF, handoff_to="erin", production=True)
    assert refusal(Action.ACCEPT, run, ERIN).scope == SCOPE_PRODUCTION


def test_accepting_again_is_harmless():
    rules.authorize(Action.ACCEPT, facts(S.RUNNING, owner="bob"), BOB)


# --- takeover and abort ---------------------------------------------------------------------------


def test_takeover_of_an_orphaned_run_by_on_call():
    rules.authorize(Action.TAKEOVER, facts(S.ORPHANED), BOB)
    assert rules.state_after(Action.TAKEOVER, facts(S.ORPHANED)) is S.RUNNING


def test_takeover_needs_the_takeover_scope_except_for_the_owner():
    error = refusal(Action.TAKEOVER, facts(S.ORPHANED), ERIN)
    assert (error.status, error.scope) == (403, SCOPE_TAKEOVER)
    assert "on-call engineers" in error.message
    rules.authorize(Action.TAKEOVER, facts(S.ORPHANED, owner="erin"), ERIN)


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED, S.HANDED_OFF])
def test_takeover_only_when_orphaned(state):
    error = refusal(Action.TAKEOVER, facts(state), BOB)
    assert (error.status, error.code) == (409, ErrorCode.WRONG_STATE)
    assert "not orphaned" in error.message and "alice" in error.message
    if state is S.RUNNING:
        assert "holds its lease until 2026-11-26 12:00:00 UTC" in error.message


def test_abort_of_an_orphaned_run_by_on_call_but_not_by_ops():
    rules.authorize(Action.ABORT, facts(S.ORPHANED), BOB)
    assert refusal(Action.ABORT, facts(S.ORPHANED), ERIN).scope == SCOPE_TAKEOVER
    assert refusal(Action.ABORT, facts(S.RUNNING), BOB).code is ErrorCode.NOT_OWNER


def test_reasons_are_required():
    with pytest.raises(Refused) as caught:
        rules.require_reason("  ", Action.TAKEOVER)
    assert caught.value.status == 400 and "take over" in caught.value.message
    assert rules.require_reason(" kernel died ", Action.ABORT) == "kernel died"


# --- notes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(RunState))
def test_anyone_who_may_write_may_note_in_any_state(state):
    rules.authorize(Action.NOTE, facts(state), ERIN)


# --- state after ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "run", "after"),
    [
        (Action.PAUSE, facts(S.RUNNING), S.PAUSED),
        (Action.PAUSE, facts(S.RUNNING, handoff_to="bob"), S.HANDED_OFF),
        (Action.HANDOFF, facts(S.RUNNING), S.RUNNING),
        (Action.HANDOFF, facts(S.PAUSED), S.HANDED_OFF),
        (Action.HANDOFF, facts(S.HANDED_OFF), S.HANDED_OFF),
        (Action.RESUME, facts(S.PAUSED), S.RUNNING),
        (Action.RESUME, facts(S.HANDED_OFF), S.RUNNING),
        (Action.ABORT, facts(S.ORPHANED), S.ABORTED),
        (Action.LEASE, facts(S.RUNNING), S.RUNNING),
    ],
)
def test_state_after(action, run, after):
    assert rules.state_after(action, run) is after


def test_pause_waits_for_the_batch_in_flight():
    rules.check_pause(facts(S.RUNNING))
    rules.check_pause(facts(S.RUNNING, current_batch=3), BatchState.INTERRUPTED)
    with pytest.raises(Refused) as caught:
        rules.check_pause(facts(S.RUNNING, current_batch=3))
    assert caught.value.status == 409 and "batch 3" in caught.value.message


# --- contents -------------------------------------------------------------------------------------


def test_batch_order():
    done, pending = BatchState.DONE, BatchState.PENDING
    rules.check_batch_start(facts(S.RUNNING), 1, [pending, pending])
    rules.check_batch_start(facts(S.RUNNING), 2, [done, pending])
    rules.check_batch_start(facts(S.RUNNING, current_batch=2), 2, [done, BatchState.INTERRUPTED])
    with pytest.raises(Refused) as caught:
        rules.check_batch_start(facts(S.RUNNING), 3, [done, pending, pending])
    assert "before batch 2 is done" in caught.value.message
    with pytest.raises(Refused) as caught:
        rules.check_batch_start(facts(S.RUNNING, current_batch=1), 2, [BatchState.RUNNING, pending])
    assert "batch 1 of run 7 is still in flight" in caught.value.message
    with pytest.raises(Refused) as caught:
        rules.check_batch_start(facts(S.RUNNING), 0, [pending])
    assert caught.value.status == 404


def test_batch_results_cover_every_host_that_ran():
    running = {"a": HostState.RUNNING, "b": HostState.RUNNING, "c": HostState.OK}
    run = facts(S.RUNNING, current_batch=1)
    rules.check_batch_finish(run, 1, 2, {"a": HostState.OK, "b": HostState.UNREACHABLE}, running)
    with pytest.raises(Refused) as caught:
        rules.check_batch_finish(run, 1, 2, {"a": HostState.OK}, running)
    assert "no result for b" in caught.value.message
    with pytest.raises(Refused) as caught:
        rules.check_batch_finish(run, 1, 2, {"a": HostState.PENDING, "b": HostState.OK}, running)
    assert "a: a host's result is" in caught.value.message.replace("results for ", "")
    with pytest.raises(Refused) as caught:
        rules.check_batch_finish(facts(S.RUNNING), 1, 2, {"a": HostState.OK}, running)
    assert "not in flight" in caught.value.message


def test_completion_needs_everything_done_and_nothing_in_doubt():
    done = BatchState.DONE
    run = facts(S.RUNNING)
    rules.check_finish(run, S.COMPLETED, [done, done], {"a": HostState.FAILED})
    rules.check_finish(run, S.FAILED, [done, BatchState.PENDING], {"a": HostState.IN_DOUBT})
    with pytest.raises(Refused) as caught:
        rules.check_finish(run, S.COMPLETED, [done, BatchState.PENDING], {"a": HostState.IN_DOUBT})
    assert "batch 2 has not run" in caught.value.message
    assert "hosts in doubt: a" in caught.value.message
    with pytest.raises(Refused) as caught:
        rules.check_finish(run, S.PAUSED, [done], {})
    assert caught.value.status == 400


def test_handoff_targets():
    run = facts(S.RUNNING)
    rules.check_handoff_target(run, "bob", ["alice", "bob"], "oncall")
    with pytest.raises(Refused) as caught:
        rules.check_handoff_target(run, "erin", ["bob", "alice"], "oncall")
    assert caught.value.code is ErrorCode.NOT_ON_CALL
    assert caught.value.message == (
        "erin is not on call (group oncall), so run 7 cannot be handed to them; "
        "on call now: alice, bob."
    )
    with pytest.raises(Refused):
        rules.check_handoff_target(run, "", ["bob"], "oncall")


# --- replan ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "caller", "handoff_to"),
    [
        (S.PAUSED, ALICE, None),  # the owner, paused
        (S.HANDED_OFF, ALICE, "bob"),  # the owner, handed off
        (S.HANDED_OFF, BOB, "bob"),  # the engineer it was handed to
        (S.ORPHANED, BOB, None),  # on-call, before taking it over
    ],
)
def test_replan_when_no_kernel_executes_the_plan(state, caller, handoff_to):
    rules.authorize(Action.REPLAN, facts(state, handoff_to=handoff_to), caller)


def test_replan_is_refused_while_running_by_strangers_and_without_takeover_scope():
    error = refusal(Action.REPLAN, facts(S.RUNNING), ALICE)
    assert (error.status, error.code) == (409, ErrorCode.WRONG_STATE)
    assert "pause it first" in error.message
    error = refusal(Action.REPLAN, facts(S.PAUSED), BOB)
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)
    assert "owned by alice, not by you (bob)" in error.message
    error = refusal(Action.REPLAN, facts(S.ORPHANED, owner="frank"), ERIN)
    assert (error.status, error.scope) == (403, SCOPE_TAKEOVER)
    error = refusal(Action.REPLAN, facts(S.COMPLETED), ALICE)
    assert error.code is ErrorCode.RUN_FINISHED


# --- approvals ------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def waiting(**kw) -> RunFacts:
    base = {
        "owner": "alice",
        "created_by": "alice",
        "production": True,
        "lease_expires_at": None,
        "approval_expires_at": NOW + timedelta(minutes=30),
    }
    base.update(kw)
    return facts(S.AWAITING_APPROVAL, **base)


def decision_refusal(action: Action, run: RunFacts, caller: Caller, **kw) -> Refused:
    with pytest.raises(Refused) as caught:
        rules.check_decision(action, run, caller, now=NOW, **kw)
    return caught.value


@pytest.mark.parametrize(
    ("policy", "environment", "production", "needed"),
    [
        (rules.ApprovalPolicy(), "production", True, 1),
        (rules.ApprovalPolicy(), "lab", True, 1),  # undeclared: production, so approved
        (rules.ApprovalPolicy(approvers=2), "production", True, 2),
        (rules.ApprovalPolicy(), "staging", False, 0),
        (rules.ApprovalPolicy(environments=frozenset({"staging"})), "Staging", False, 1),
        (rules.NO_APPROVALS, "production", True, 0),
        # names add environments; they never take approval away from a production one
        (rules.ApprovalPolicy(environments=frozenset({"prodution"})), "production", True, 1),
    ],
)
def test_which_runs_need_approval(policy, environment, production, needed):
    assert policy.needed(environment, production) == needed


@pytest.mark.parametrize("action", [Action.APPROVE, Action.REJECT])
def test_another_on_call_engineer_decides(action):
    assert rules.check_decision(action, waiting(), BOB, now=NOW) is True


@pytest.mark.parametrize("action", [Action.APPROVE, Action.REJECT])
@pytest.mark.parametrize("caller", [ERIN, CAROL, MALLORY])
def test_viewers_and_ops_engineers_may_not_decide_naming_the_scope(action, caller):
    error = decision_refusal(action, waiting(), caller)
    assert (error.status, error.code, error.scope) == (
        403,
        ErrorCode.MISSING_SCOPE,
        SCOPE_PRODUCTION,
    )
    assert f"{caller.name} may not {action.value} run 7" in error.message
    assert SCOPE_PRODUCTION in error.message


@pytest.mark.parametrize("action", [Action.APPROVE, Action.REJECT])
def test_the_requester_may_not_decide_and_is_told_who_may(action):
    error = decision_refusal(action, waiting(), ALICE, oncall=["alice", "bob", "dave"])
    assert (error.status, error.code, error.run_id) == (409, ErrorCode.SELF_APPROVAL, 7)
    assert f"you (alice) requested run 7, so you may not {action.value} it" in error.message
    assert "no one may do it on your behalf" in error.message
    assert "Ask bob, dave (on call, group oncall)" in error.message


def test_the_owner_after_a_handoff_may_not_decide_either():
    run = waiting(owner="bob")
    error = decision_refusal(Action.APPROVE, run, BOB, oncall=["alice", "bob"], group="oc")
    assert error.code is ErrorCode.SELF_APPROVAL and "you (bob) own run 7" in error.message
    assert "nobody else is on call now (group oc)" in error.message
    error = decision_refusal(Action.APPROVE, run, ALICE)
    assert "another member of the on-call group oncall" in error.message
    # whoever re-planned it, or was handed it, runs it: they may not decide either
    dave = Caller("dave", ONCALL)
    for run, words in (
        (waiting(requested_by="dave"), "asked for the approval of run 7"),
        (waiting(handoff_to="dave"), "were handed run 7"),
    ):
        error = decision_refusal(Action.REJECT, run, dave, oncall=["alice", "bob", "dave"])
        assert error.code is ErrorCode.SELF_APPROVAL and words in error.message
        assert "Ask bob (on call" in error.message


def test_a_decision_needs_a_reason_after_who_may_decide():
    error = decision_refusal(Action.REJECT, waiting(), BOB, reason="  ")
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert "reason: say why you reject run 7" in error.message and "summary" in error.message
    assert decision_refusal(Action.APPROVE, waiting(), ALICE, reason="").code is (
        ErrorCode.SELF_APPROVAL
    )
    assert decision_refusal(Action.APPROVE, waiting(), CAROL, reason="").status == 403


def test_approving_twice_is_harmless_even_once_the_run_goes_on():
    assert rules.check_decision(Action.APPROVE, waiting(), BOB, now=NOW, decided=["bob"]) is False
    running = facts(S.RUNNING, created_by="alice", production=True)
    assert rules.check_decision(Action.APPROVE, running, BOB, now=NOW, decided=["bob"]) is False
    # a rejection after one's own approval is a decision of its own
    assert rules.check_decision(Action.REJECT, waiting(), BOB, now=NOW, decided=["bob"]) is True


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED, S.HANDED_OFF, S.ORPHANED])
def test_a_run_not_awaiting_approval_names_its_state(state):
    error = decision_refusal(Action.APPROVE, facts(state, created_by="alice"), BOB)
    assert (error.status, error.code) == (409, ErrorCode.WRONG_STATE)
    assert f"run 7 is {state.value}, not awaiting approval" in error.message


def test_a_finished_run_and_an_expired_request():
    error = decision_refusal(Action.REJECT, facts(S.COMPLETED, created_by="alice"), BOB)
    assert error.code is ErrorCode.RUN_FINISHED and "already completed" in error.message
    expired = waiting(approval_expires_at=NOW - timedelta(seconds=1))
    error = decision_refusal(Action.APPROVE, expired, BOB)
    assert (error.status, error.code) == (409, ErrorCode.APPROVAL_EXPIRED)
    assert "expired at 2026-11-26 11:59:59 UTC" in error.message
    swept = facts(S.ABORTED, created_by="alice", approval_expires_at=NOW - timedelta(minutes=1))
    error = decision_refusal(Action.APPROVE, swept, BOB)
    assert error.code is ErrorCode.APPROVAL_EXPIRED and "11:59:00 UTC" in error.message


def test_the_page_asks_the_same_rules_whether_to_show_the_form():
    assert rules.decision_refusal(waiting(), BOB, now=NOW) is None
    assert "requested run 7" in rules.decision_refusal(waiting(), ALICE, now=NOW)
    assert SCOPE_PRODUCTION in rules.decision_refusal(waiting(), CAROL, now=NOW)
    assert "approved it already" in rules.decision_refusal(waiting(), BOB, now=NOW, decided={"bob"})
    assert "not awaiting approval" in rules.decision_refusal(facts(S.RUNNING), BOB, now=NOW)


def test_nothing_runs_and_no_certificate_while_awaiting_approval():
    for action in (Action.BATCH_START, Action.LEASE, Action.PARAMETERS, Action.APPEND):
        error = refusal(action, waiting(), ALICE)
        assert (error.status, error.code) == (409, ErrorCode.AWAITING_APPROVAL)
        assert "other than alice approves it" in error.message
    with pytest.raises(Refused) as caught:
        rules.check_certificate_run(waiting(), ALICE, NOW)
    assert caught.value.code is ErrorCode.AWAITING_APPROVAL
    error = refusal(Action.REPLAN, waiting(), ALICE)
    assert error.code is ErrorCode.AWAITING_APPROVAL
    assert rules.state_after(Action.REJECT, waiting()) is S.REJECTED


def test_decisions_are_not_authorized_as_owner_actions():
    with pytest.raises(ValueError):
        rules.authorize(Action.APPROVE, waiting(), BOB)
