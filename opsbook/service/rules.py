"""Who may do what to a run, and what state it is in afterwards: pure functions, no database.

The store calls these inside the transaction that holds the run's row, so a decision is always
made on the run as it is, never on a copy that changed meanwhile. Every refusal is a `Refused`
carrying the HTTP status, a wire error code and a message a person can act on ("run 12 is owned by
bob, not by you (alice)"), because the client shows these messages to engineers as they are.

Order of checks, so that the answer is the most useful one: the scope the action needs (403, naming
it), then whether the run is finished (409), then ownership and state (409).

Errata promotions (`check_promotion`): into a non-production environment with the write scope;
into production only for an approved, running production run of that environment, by its owner
while the lease holds.

Approvals (four eyes on production): `ApprovalPolicy` says how many approvers a run needs in its
environment, and `check_decision` who may approve or reject it: a holder of the production scope
(the on-call group) other than the engineer who requested the run and the one who owns it now,
with a reason, while the request stands.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import (
    FINISHED_STATES,
    RESULT_STATES,
    BatchState,
    ErrorCode,
    ErrorReply,
    HostState,
    RunState,
)

WHO_HOLDS = {
    SCOPE_READ: "everyone signed in to Opsbook",
    SCOPE_WRITE: "engineers in ops and on call",
    SCOPE_PRODUCTION: "on-call engineers, for production stacks",
    SCOPE_TAKEOVER: "on-call engineers",
}


class Refused(Exception):
    """A request the service turns down; becomes an ErrorReply on the wire."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        scope: str | None = None,
        run_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.scope = scope
        self.run_id = run_id

    def reply(self) -> ErrorReply:
        return ErrorReply(
            status=self.status,
            code=self.code,
            message=self.message,
            scope=self.scope,
            run_id=self.run_id,
        )


def bad_request(message: str) -> Refused:
    return Refused(400, ErrorCode.BAD_REQUEST, message)


@dataclass(frozen=True)
class Caller:
    """A JupyterHub user (or service) and the scopes their token carries."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class Action(StrEnum):
    APPEND = "append events to"
    BATCH_START = "start a batch of"
    BATCH_FINISH = "finish a batch of"
    GATE = "record a health gate of"
    LEASE = "renew the lease of"
    NOTE = "add a note to"
    HANDOFF = "hand off"
    PAUSE = "pause"
    ACCEPT = "accept"
    TAKEOVER = "take over"
    RESUME = "resume"
    FINISH = "finish"
    ABORT = "abort"
    REPLAN = "re-plan"
    PARAMETERS = "record parameters of"
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class RunFacts:
    """What the rules need to know of a run."""

    id: int
    state: RunState
    owner: str
    production: bool
    handoff_to: str | None = None
    current_batch: int | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    created_by: str = ""  # who requested the run (started it)
    requested_by: str = ""  # who asked for the current approval (the requester, or a re-planner)
    approval_expires_at: datetime | None = None  # the request's (or the approval's) expiry; on
    # a finished run, set only if it was the expiry that ended it


@dataclass(frozen=True)
class ApprovalPolicy:
    """Which runs need approval, from whom and for how long (RUNS_APPROVAL_ENVIRONMENTS,
    RUNS_APPROVERS, RUNS_APPROVAL_TTL).

    Fail closed: every production environment needs approval unless `production` is False, which
    only the setting's word "none" gives; environment names add environments (a staging that is
    to be approved too) and never take approval away from a production one, so a misspelt name
    cannot switch approvals off."""

    production: bool = True
    environments: frozenset[str] = frozenset()  # lower-case names that need approval too
    approvers: int = 1  # distinct approvers a run needs
    ttl_seconds: int = 1800

    def needed(self, environment: str, production: bool) -> int:
        """How many distinct approvers a run in `environment` needs (0: none)."""
        if (production and self.production) or environment.strip().lower() in self.environments:
            return self.approvers
        return 0

    def describe(self) -> str:
        which = ["every production environment"] if self.production else []
        which += sorted(self.environments)
        where = ", ".join(which) or "no environment"
        return (
            f"approval needed in {where}; {self.approvers} approver(s); expires after "
            f"{self.ttl_seconds} s"
        )


NO_APPROVALS = ApprovalPolicy(production=False)


def require(caller: Caller, scope: str, doing: str) -> None:
    """403 naming the scope, who normally holds it, and what the caller holds."""
    if caller.has(scope):
        return
    held = sorted(s for s in caller.scopes if s.startswith("custom:runs:")) or ["no runs scope"]
    raise Refused(
        403,
        ErrorCode.MISSING_SCOPE,
        f"{caller.name} may not {doing}: that needs the JupyterHub scope {scope} "
        f"(given to {WHO_HOLDS[scope]}); you have {', '.join(held)}.",
        scope=scope,
    )


def may_read(caller: Caller) -> None:
    require(caller, SCOPE_READ, "read runs")


def may_create(caller: Caller, *, production: bool, stack: str, environment: str) -> None:
    require(caller, SCOPE_WRITE, f"start a run on {stack}")
    if production:
        require(
            caller,
            SCOPE_PRODUCTION,
            f"start a run on {stack}: the inventory puts it in {environment}, a production "
            "environment (only those declared non-production are not)",
        )


def awaiting_approval(run: RunFacts, doing: str) -> Refused:
    """409 for anything that needs a running run while the run waits for approval."""
    until = (
        f"; the request expires at {_clock(run.approval_expires_at)}"
        if run.approval_expires_at
        else ""
    )
    return Refused(
        409,
        ErrorCode.AWAITING_APPROVAL,
        f"run {run.id} is awaiting_approval: nothing may run until an on-call engineer other "
        f"than {run.created_by or run.owner} approves it, so it cannot {doing}{until}. Wait for "
        "the approval (the run page shows it), or abort the run.",
        run_id=run.id,
    )


_WAITING = {
    Action.APPEND: "take runner events",
    Action.BATCH_START: "start a batch",
    Action.BATCH_FINISH: "finish a batch",
    Action.GATE: "record a health gate",
    Action.LEASE: "be leased (it has no lease until it is approved)",
    Action.PARAMETERS: "take more parameters",
    Action.FINISH: "be finished (abort it instead)",
}


# States each action needs (the owner acting). Pause, accept and resume list the states where a
# repeat of the same request is harmless, so that a client retrying after a lost answer is fine.
_OWNER_STATES: dict[Action, frozenset[RunState]] = {
    Action.APPEND: frozenset({RunState.RUNNING}),
    Action.BATCH_START: frozenset({RunState.RUNNING}),
    Action.BATCH_FINISH: frozenset({RunState.RUNNING}),
    Action.GATE: frozenset({RunState.RUNNING}),
    Action.LEASE: frozenset({RunState.RUNNING}),
    Action.PARAMETERS: frozenset({RunState.RUNNING}),
    Action.HANDOFF: frozenset({RunState.RUNNING, RunState.PAUSED, RunState.HANDED_OFF}),
    Action.PAUSE: frozenset({RunState.RUNNING, RunState.PAUSED, RunState.HANDED_OFF}),
    Action.RESUME: frozenset({RunState.RUNNING, RunState.PAUSED, RunState.HANDED_OFF}),
    Action.FINISH: frozenset({RunState.RUNNING, RunState.PAUSED}),
    Action.ABORT: frozenset(
        {
            RunState.RUNNING,
            RunState.PAUSED,
            RunState.HANDED_OFF,
            RunState.ORPHANED,
            RunState.AWAITING_APPROVAL,
        }
    ),
}


def authorize(action: Action, run: RunFacts, caller: Caller) -> None:
    """Raise Refused unless `caller` may do `action` to `run` now; return None if they may."""
    doing = f"{action.value} run {run.id}"
    if action in (Action.APPROVE, Action.REJECT):
        raise ValueError("approve and reject are checked by check_decision")
    require(caller, SCOPE_WRITE, doing)
    if action is Action.NOTE:
        return  # anyone who may write may comment, on any run, finished ones included
    if action is Action.TAKEOVER and caller.name != run.owner:
        require(caller, SCOPE_TAKEOVER, doing)
    if run.production:
        require(caller, SCOPE_PRODUCTION, f"{doing}, which is on a production stack")
    if run.state in FINISHED_STATES:
        raise already_finished(run, f"it cannot {_verb(action)}. Start a new run instead.")
    if action is Action.ACCEPT:
        _authorize_accept(run, caller)
    elif action is Action.TAKEOVER:
        _authorize_takeover(run)
    elif action is Action.REPLAN:
        _authorize_replan(run, caller)
    elif action is Action.ABORT and caller.name != run.owner:
        if run.state is not RunState.ORPHANED:
            raise _not_owner(
                run, caller, action, hint=" An orphaned run may be aborted by on-call."
            )
        require(caller, SCOPE_TAKEOVER, f"abort the orphaned run {run.id}")
    else:
        _authorize_owner(action, run, caller)


def _authorize_owner(action: Action, run: RunFacts, caller: Caller) -> None:
    if caller.name != run.owner:
        raise _not_owner(run, caller, action)
    if run.state in _OWNER_STATES[action]:
        return
    if run.state is RunState.AWAITING_APPROVAL:
        raise awaiting_approval(run, _WAITING.get(action, action.value + " it"))
    if run.state is RunState.ORPHANED:
        raise Refused(
            409,
            ErrorCode.LEASE_EXPIRED,
            f"run {run.id} is orphaned: your lease ran out"
            + (f" at {_clock(run.lease_expires_at)}" if run.lease_expires_at else "")
            + ". Stop working on it: take it over again (with a reason) or abort it.",
            run_id=run.id,
        )
    allowed = " or ".join(sorted(state.value for state in _OWNER_STATES[action]))
    hint = {
        RunState.PAUSED: " Resume it first.",
        RunState.HANDED_OFF: f" It waits for {run.handoff_to} to accept it; resume it to cancel.",
    }.get(run.state, "")
    raise Refused(
        409,
        ErrorCode.WRONG_STATE,
        f"run {run.id} is {run.state.value}; to {action.value} it, it must be {allowed}.{hint}",
        run_id=run.id,
    )


def _authorize_accept(run: RunFacts, caller: Caller) -> None:
    if caller.name == run.owner and run.state is RunState.RUNNING and run.handoff_to is None:
        return  # already accepted: a repeat is harmless
    if run.handoff_to is None:
        raise Refused(
            409,
            ErrorCode.NOT_HANDED_TO_YOU,
            f"run {run.id} has not been handed off to anyone (it is {run.state.value}, owner "
            f"{run.owner}); ask {run.owner} to hand it to you.",
            run_id=run.id,
        )
    if run.handoff_to != caller.name:
        raise Refused(
            409,
            ErrorCode.NOT_HANDED_TO_YOU,
            f"run {run.id} was handed to {run.handoff_to}, not to you ({caller.name}); "
            f"only {run.handoff_to} may accept it.",
            run_id=run.id,
        )
    if run.state is RunState.RUNNING:
        batch = f"batch {run.current_batch} is still running" if run.current_batch else "running"
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is not paused yet: {run.owner}'s {batch}; it pauses at the end of "
            "the batch. Accept it when it shows handed_off.",
            run_id=run.id,
        )
    if run.state is not RunState.HANDED_OFF:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is {run.state.value}, not handed_off; it cannot be accepted now.",
            run_id=run.id,
        )


def _authorize_takeover(run: RunFacts) -> None:
    if run.state is RunState.ORPHANED:
        return
    if run.state is RunState.RUNNING:
        until = f" until {_clock(run.lease_expires_at)}" if run.lease_expires_at else ""
        detail = f"{run.owner} holds its lease{until}"
    else:
        detail = f"it is {run.state.value} (owner {run.owner})"
    raise Refused(
        409,
        ErrorCode.WRONG_STATE,
        f"run {run.id} is not orphaned: {detail}. Only a run whose lease ran out can be taken "
        f"over; ask {run.owner} to hand it off.",
        run_id=run.id,
    )


def _authorize_replan(run: RunFacts, caller: Caller) -> None:
    """Re-planning changes the batches a kernel executes, so never while one is at work: the
    owner re-plans a paused run, the owner or the engineer it was handed to a handed-off one,
    on-call an orphaned one (before taking it over)."""
    if run.state is RunState.ORPHANED:
        if caller.name != run.owner:  # as for takeover: one's own run needs no takeover scope
            require(caller, SCOPE_TAKEOVER, f"re-plan the orphaned run {run.id}")
        return
    if run.state is RunState.HANDED_OFF and caller.name in (run.owner, run.handoff_to):
        return
    if run.state is RunState.PAUSED and caller.name == run.owner:
        return
    if run.state is RunState.RUNNING:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is running ({run.owner}'s kernel executes its plan); pause it first, "
            "then re-plan it.",
            run_id=run.id,
        )
    if run.state is RunState.AWAITING_APPROVAL:
        raise awaiting_approval(run, "be re-planned (abort it and start it again instead)")
    raise _not_owner(run, caller, Action.REPLAN)


def already_finished(run: RunFacts, then: str) -> Refused:
    """409 for any action on a run that is over: its state, when it ended, and `then`."""
    return Refused(
        409,
        ErrorCode.RUN_FINISHED,
        f"run {run.id} is already {run.state.value}"
        + (f" (finished {_clock(run.finished_at)})" if run.finished_at else "")
        + f"; {then}",
        run_id=run.id,
    )


def _not_owner(run: RunFacts, caller: Caller, action: Action, *, hint: str = "") -> Refused:
    lost = (
        " Your kernel no longer holds this run: stop working on it."
        if action in (Action.APPEND, Action.LEASE, Action.BATCH_START, Action.BATCH_FINISH)
        else ""
    )
    return Refused(
        409,
        ErrorCode.NOT_OWNER,
        f"run {run.id} is owned by {run.owner}, not by you ({caller.name}); only the owner may "
        f"{action.value} it.{lost}{hint}",
        run_id=run.id,
    )


def state_after(action: Action, run: RunFacts) -> RunState:
    """The run's state once `action` (already authorized) is done."""
    if action is Action.PAUSE:
        return RunState.HANDED_OFF if run.handoff_to else RunState.PAUSED
    if action is Action.HANDOFF:
        # A running run pauses at its next batch boundary (the owner's kernel calls pause).
        return RunState.RUNNING if run.state is RunState.RUNNING else RunState.HANDED_OFF
    if action in (Action.ACCEPT, Action.TAKEOVER, Action.RESUME):
        return RunState.RUNNING
    if action is Action.ABORT:
        return RunState.ABORTED
    if action is Action.REJECT:
        return RunState.REJECTED
    return run.state


# --- approvals ------------------------------------------------------------------------------------


def _interested(run: RunFacts) -> set[str]:
    """Who may not decide on `run`: whoever requested it or its current approval, owns it, or
    was handed it (and would run it)."""
    return {name for name in (run.created_by, run.requested_by, run.owner, run.handoff_to) if name}


def others_on_call(oncall: Sequence[str] | None, run: RunFacts, group: str) -> str:
    """Who may decide instead: the on-call group minus the requester and the owner."""
    if oncall is None:
        return f"another member of the on-call group {group}"
    others = sorted(set(oncall) - _interested(run))
    if not others:
        return f"nobody else is on call now (group {group}); ask for someone to join it"
    return f"{', '.join(others)} (on call, group {group})"


def check_decision(
    action: Action,
    run: RunFacts,
    caller: Caller,
    *,
    now: datetime,
    reason: str = "-",
    decided: Collection[str] = (),
    oncall: Sequence[str] | None = None,
    group: str = "oncall",
) -> bool:
    """Whether `caller` may approve or reject `run` now; raise Refused if not.

    `decided`: who already approved the current request. Returns False for a harmless repeat
    (the same person approving again, even after the run went on: counted once), True when the
    decision is to be recorded. Checks, in order: the production scope (403; the on-call group
    holds it), a finished or expired request (409), the requester or the owner deciding their own
    run (409, naming who else may), an empty reason (400), and the run's state (409)."""
    if action not in (Action.APPROVE, Action.REJECT):
        raise ValueError(f"not a decision: {action}")
    doing = f"{action.value} run {run.id}"
    require(caller, SCOPE_PRODUCTION, f"{doing}: approvals are given by on-call engineers")
    repeat = action is Action.APPROVE and caller.name in decided
    if run.state in FINISHED_STATES:
        if run.approval_expires_at is not None:
            raise _approval_expired(run)
        raise already_finished(run, f"there is nothing to {action.value}.")
    if caller.name in _interested(run):
        role = (
            "requested"
            if caller.name == run.created_by
            else "own"
            if caller.name == run.owner
            else "asked for the approval of"
            if caller.name == run.requested_by
            else "were handed"
        )
        raise Refused(
            409,
            ErrorCode.SELF_APPROVAL,
            f"you ({caller.name}) {role} run {run.id}, so you may not {action.value} it: four "
            f"eyes means someone else decides, and no one may do it on your behalf. Ask "
            f"{others_on_call(oncall, run, group)}.",
            run_id=run.id,
        )
    if not reason.strip():
        raise bad_request(
            f"reason: say why you {action.value} run {run.id}; it goes into the record"
            + (" and is the run's summary" if action is Action.REJECT else "")
        )
    if repeat:
        return False
    if run.state is not RunState.AWAITING_APPROVAL:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is {run.state.value}, not awaiting approval; there is nothing to "
            f"{action.value}.",
            run_id=run.id,
        )
    if run.approval_expires_at is not None and run.approval_expires_at <= now:
        raise _approval_expired(run)
    return True


def _approval_expired(run: RunFacts) -> Refused:
    return Refused(
        409,
        ErrorCode.APPROVAL_EXPIRED,
        f"the approval of run {run.id} expired at {_clock(run.approval_expires_at)} (nobody "
        "decided in time, or the run did not start within the time): it is aborted, or will be "
        "in a few seconds. Its requester starts a new run for a new request.",
        run_id=run.id,
    )


def decision_refusal(
    run: RunFacts, caller: Caller, *, now: datetime, decided: Collection[str] = ()
) -> str | None:
    """Why `caller` may not approve or reject `run` now (None: they may): the status page shows
    the form only to those who may use it."""
    if run.state is not RunState.AWAITING_APPROVAL:
        return f"run {run.id} is {run.state.value}, not awaiting approval"
    try:
        if not check_decision(Action.APPROVE, run, caller, now=now, decided=decided):
            return f"you ({caller.name}) approved it already"
    except Refused as refused:
        return refused.message
    return None


def may_get_certificate(caller: Caller) -> None:
    """An SSH certificate for the fleet is for those who may drive runs."""
    require(caller, SCOPE_WRITE, "get an SSH certificate for the fleet")


def check_certificate_run(run: RunFacts, caller: Caller, now: datetime) -> None:
    """Whether a certificate may carry `run`'s environment (production): only for the run's owner,
    with the production scope, while the run is running and its lease holds. A refusal says which
    of these failed (409; 403 for the scope), and no certificate is issued."""
    doing = f"get an SSH certificate for run {run.id}"
    if run.state in FINISHED_STATES:
        raise already_finished(
            run,
            "it gives no access to its hosts any more. Ask for a certificate without a run for "
            "the non-production environments.",
        )
    if not run.production:
        raise Refused(
            409,
            ErrorCode.NOT_PRODUCTION,
            f"run {run.id} is not on a production stack: its environment is already among the "
            "principals of a certificate without a run; ask without run_id.",
            run_id=run.id,
        )
    require(caller, SCOPE_PRODUCTION, f"{doing}, which is on a production stack")
    if caller.name != run.owner:
        raise Refused(
            409,
            ErrorCode.NOT_OWNER,
            f"run {run.id} is owned by {run.owner}, not by you ({caller.name}); only the owner "
            "of a running production run gets a certificate for its hosts. Stop working on it.",
            run_id=run.id,
        )
    expired = run.lease_expires_at is not None and run.lease_expires_at <= now
    if run.state is RunState.ORPHANED or (run.state is RunState.RUNNING and expired):
        raise Refused(
            409,
            ErrorCode.LEASE_EXPIRED,
            f"run {run.id}: your lease ran out"
            + (f" at {_clock(run.lease_expires_at)}" if run.lease_expires_at else "")
            + "; no certificate for its hosts. Take it over again (with a reason) first.",
            run_id=run.id,
        )
    if run.state is RunState.AWAITING_APPROVAL:
        raise awaiting_approval(run, "give a certificate for its hosts")
    if run.state is not RunState.RUNNING:
        hint = {
            RunState.PAUSED: " Resume it first.",
            RunState.HANDED_OFF: f" It waits for {run.handoff_to} to accept it.",
        }.get(run.state, "")
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is {run.state.value}, not running; its hosts need a running run "
            f"for a certificate.{hint}",
            run_id=run.id,
        )


# --- errata promotions ---------------------------------------------------------------------------


def check_promotion(
    caller: Caller,
    *,
    environment: str,
    production: bool,
    run: RunFacts | None,
    run_environment: str | None,
    now: datetime,
) -> None:
    """Whether `caller` may promote errata into `environment`'s suite now; Refused if not.

    Why here and not in the runbook: the suite is what every host of the environment installs
    next, so a promotion into production is a production change and needs what a production
    change needs: an approved production run of that environment that the caller owns and
    drives now (running, lease held, production scope still held). Into a non-production
    environment the write scope is enough. A run given for a non-production promotion must be
    of that environment and not finished (it is recorded with the promotion)."""
    doing = f"promote errata into {environment}"
    require(caller, SCOPE_WRITE, doing)
    if production:
        require(
            caller,
            SCOPE_PRODUCTION,
            f"{doing}: a production environment (every environment not declared "
            "non-production is); on-call engineers promote into it inside an approved run",
        )
        if run is None:
            raise Refused(
                409,
                ErrorCode.WRONG_STATE,
                f"{caller.name} may not {doing} without a run: {environment} is production, so "
                "its errata are promoted only inside an approved production run of that "
                "environment, by its owner. Start the run (patching.ipynb), get it approved, "
                "and promote from it (run_id).",
            )
    if run is None:
        return
    _check_promotion_run(run, caller, environment, run_environment, production, now)


def _check_promotion_run(
    run: RunFacts,
    caller: Caller,
    environment: str,
    run_environment: str | None,
    production: bool,
    now: datetime,
) -> None:
    doing = f"promote errata into {environment} for run {run.id}"
    if run_environment != environment:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is on a stack of {run_environment}, not {environment}: "
            f"{caller.name} may not {doing}. Promote into {run_environment} for it, or name a "
            f"run of {environment}.",
            run_id=run.id,
        )
    if run.state in FINISHED_STATES:
        raise already_finished(run, "nothing may be promoted for it any more. Start a new run.")
    if not production:
        return
    if caller.name != run.owner:
        raise Refused(
            409,
            ErrorCode.NOT_OWNER,
            f"run {run.id} is owned by {run.owner}, not by you ({caller.name}); only the owner "
            f"of a running production run may promote errata into {environment} for it.",
            run_id=run.id,
        )
    if run.state is RunState.AWAITING_APPROVAL:
        raise awaiting_approval(run, "have errata promoted into production")
    expired = run.lease_expires_at is not None and run.lease_expires_at <= now
    if run.state is RunState.ORPHANED or (run.state is RunState.RUNNING and expired):
        raise Refused(
            409,
            ErrorCode.LEASE_EXPIRED,
            f"run {run.id}: your lease ran out"
            + (f" at {_clock(run.lease_expires_at)}" if run.lease_expires_at else "")
            + "; nothing is promoted into production for it. Take it over again (with a "
            "reason) first.",
            run_id=run.id,
        )
    if run.state is not RunState.RUNNING:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} is {run.state.value}, not running; promotions into production need "
            "a running, approved run. Resume it (or accept it) first.",
            run_id=run.id,
        )


# --- checks on the request's contents, given the run's batches and hosts --------------------------


def check_batch_start(run: RunFacts, number: int, batch_states: Sequence[BatchState]) -> None:
    """Batches run in order, one at a time. `batch_states[i]` is batch i+1's."""
    _check_batch_number(run, number, len(batch_states))
    if run.current_batch is not None and run.current_batch != number:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"batch {run.current_batch} of run {run.id} is still in flight; finish it before "
            f"starting batch {number}.",
            run_id=run.id,
        )
    unfinished = [
        str(index)
        for index, state in enumerate(batch_states[: number - 1], start=1)
        if state is not BatchState.DONE
    ]
    if unfinished:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id}: batch {number} cannot start before batch "
            f"{', '.join(unfinished)} is done; batches run in order.",
            run_id=run.id,
        )


def check_pause(run: RunFacts, batch_state: BatchState | None = None) -> None:
    """A run pauses at a batch boundary: the batch in flight finishes first. A batch that was
    interrupted (a takeover) is not running, so its new owner may pause before running it again."""
    if (
        run.state is RunState.RUNNING
        and run.current_batch is not None
        and batch_state is not BatchState.INTERRUPTED
    ):
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"batch {run.current_batch} of run {run.id} is in flight; pause when it has "
            "finished (a pending handoff waits for that too).",
            run_id=run.id,
        )


def check_hosts_in_batch(number: int, wanted: Iterable[str], batch_hosts: Iterable[str]) -> None:
    unknown = sorted(set(wanted) - set(batch_hosts))
    if unknown:
        raise bad_request(
            f"hosts {', '.join(unknown)} are not in batch {number} "
            f"(it has {', '.join(sorted(batch_hosts))})"
        )


def check_batch_finish(
    run: RunFacts,
    number: int,
    batch_count: int,
    results: dict[str, HostState],
    host_states: dict[str, HostState],
) -> None:
    """`host_states`: the batch's hosts now. Every host running in the batch needs a result."""
    _check_batch_number(run, number, batch_count)
    if run.current_batch != number:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"batch {number} of run {run.id} is not in flight"
            + (f" (batch {run.current_batch} is)" if run.current_batch else "")
            + "; start it before finishing it.",
            run_id=run.id,
        )
    bad = sorted(host for host, state in results.items() if state not in RESULT_STATES)
    if bad:
        raise bad_request(
            f"results for {', '.join(bad)}: a host's result is ok, failed, unreachable or in_doubt"
        )
    check_hosts_in_batch(number, results, host_states)
    missing = sorted(
        host
        for host, state in host_states.items()
        if state is HostState.RUNNING and host not in results
    )
    if missing:
        raise bad_request(
            f"batch {number}: no result for {', '.join(missing)}; every host that ran needs one "
            "(in_doubt if you cannot tell)"
        )


def check_gate(run: RunFacts, number: int, batch_count: int, state: BatchState) -> None:
    _check_batch_number(run, number, batch_count)
    if state is not BatchState.DONE:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"batch {number} of run {run.id} is {state.value}; the health gate comes after the "
            "batch is finished.",
            run_id=run.id,
        )


def check_finish(
    run: RunFacts,
    outcome: RunState,
    batch_states: Sequence[BatchState],
    host_states: dict[str, HostState],
) -> None:
    if outcome not in (RunState.COMPLETED, RunState.FAILED):
        raise bad_request(f"outcome: expected completed or failed, got {outcome.value}")
    if outcome is RunState.FAILED:
        return
    problems = []
    if run.current_batch is not None:
        problems.append(f"batch {run.current_batch} is still in flight")
    not_run = [
        str(index)
        for index, state in enumerate(batch_states, start=1)
        if state is not BatchState.DONE and index != run.current_batch
    ]
    if not_run:
        problems.append(f"batch {', '.join(not_run)} has not run")
    doubtful = sorted(h for h, s in host_states.items() if s is HostState.IN_DOUBT)
    if doubtful:
        problems.append(f"hosts in doubt: {', '.join(doubtful)}")
    if problems:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            f"run {run.id} cannot be completed: {'; '.join(problems)}. Run them, or finish "
            "the run as failed.",
            run_id=run.id,
        )


def check_handoff_target(run: RunFacts, to: str, oncall: Sequence[str], group: str) -> None:
    if not to.strip():
        raise bad_request("to: expected the user name of the on-call engineer to hand off to")
    if to == run.owner:
        raise bad_request(f"run {run.id} is already yours ({to}); hand it to someone else")
    if to not in oncall:
        listed = ", ".join(sorted(oncall)) if oncall else f"nobody (group {group} is empty)"
        raise Refused(
            400,
            ErrorCode.NOT_ON_CALL,
            f"{to} is not on call (group {group}), so run {run.id} cannot be handed to them; "
            f"on call now: {listed}.",
            run_id=run.id,
        )


def require_reason(reason: str, action: Action) -> str:
    if not reason.strip():
        raise bad_request(f"reason: say why you {action.value} the run; it goes into the record")
    return reason.strip()


def _check_batch_number(run: RunFacts, number: int, count: int) -> None:
    if not 1 <= number <= count:
        raise Refused(
            404,
            ErrorCode.NOT_FOUND,
            f"run {run.id} has batches 1 to {count}; there is no batch {number}.",
            run_id=run.id,
        )


def _verb(action: Action) -> str:
    return {
        Action.RESUME: "be resumed",
        Action.FINISH: "be finished again",
        Action.ABORT: "be aborted",
        Action.ACCEPT: "be accepted",
        Action.TAKEOVER: "be taken over",
        Action.HANDOFF: "be handed off",
        Action.PAUSE: "be paused",
        Action.LEASE: "be leased",
        Action.PARAMETERS: "take more parameters",
    }.get(action, "take more events or batches")


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"
