"""The runs service's wire format: every request and response body, and the API's routes.

The runs service (opsbook/service/) and its client (opsbook/runsclient.py) share this package
(opsbook.contract) and nothing else, so either can change its code without the other noticing,
while the shapes they exchange are written down once. It imports only the standard library.

Conventions:
- `to_dict()` gives JSON-ready data; `from_dict()` checks types and raises `WireError` naming the
  field, so a bad request is answered with what was wrong, not a traceback.
- Unknown fields are ignored, so a newer client or service can add fields without breaking the
  other side; removing or renaming one is a breaking change.
- Times are ISO 8601 strings in UTC (`2026-11-26T12:00:00.000000+00:00`); see `wire_time`.
- Batches are numbered from 1, as people say them ("batch 2 by bob").
"""

from __future__ import annotations

import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

# --- routes: the JSON API lives under the service's prefix, /services/runs/api/... ----------------

API_PATH = "api"
# Paths below API_PATH; {run_id} and {number} are whole numbers, the rest one of the names below.
ROUTE_HEALTH = "health"
ROUTE_ME = "me"
ROUTE_ONCALL = "oncall"
ROUTE_STACKS = "stacks"
ROUTE_RUNS = "runs"
ROUTE_RUN = "runs/{run_id}"
ROUTE_EVENTS = "runs/{run_id}/events"
ROUTE_BATCH = "runs/{run_id}/batches/{number}/{step}"
ROUTE_ACTION = "runs/{run_id}/{action}"
ROUTE_SSH_CERTIFICATE = "ssh/certificate"  # POST CertificateRequest -> Certificate
ROUTE_SSH_CA = "ssh/ca"  # GET (no sign-in) -> SshCa
ROUTE_PROMOTIONS = "errata/promotions"  # POST PromotionRequest -> Promotion; GET -> PromotionList
BATCH_STEPS = ("start", "finish", "gate")
RUN_ACTIONS = (
    "lease",
    "notes",
    "handoff",
    "pause",
    "accept",
    "takeover",
    "resume",
    "finish",
    "abort",
    "replan",
    "parameters",
    "approve",  # POST ApprovalDecision: an on-call engineer other than the requester
    "reject",  # POST ApprovalDecision: the same; the run ends `rejected`, the reason its summary
)


class RunState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # created (or re-planned) in an environment that needs
    # approval: nothing runs, no lease, no production certificate, until enough on-call engineers
    # other than the requester approve it (then `running`, the requester owning it)
    RUNNING = "running"  # the owner's kernel works on it and renews the lease
    PAUSED = "paused"  # stopped by its owner at a batch boundary
    HANDED_OFF = "handed_off"  # paused, waiting for the engineer it was handed to
    ORPHANED = "orphaned"  # the owner's lease ran out: an on-call engineer may take it over
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"  # by a person, or by the service (an approval that expired)
    REJECTED = "rejected"  # an approver said no; the reason is the run's summary


FINISHED_STATES = frozenset(
    {RunState.COMPLETED, RunState.FAILED, RunState.ABORTED, RunState.REJECTED}
)
ACTIVE_STATES = frozenset(set(RunState) - FINISHED_STATES)


class HostState(StrEnum):
    PENDING = "pending"  # its batch has not run yet
    RUNNING = "running"  # its batch is in flight
    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    IN_DOUBT = "in_doubt"  # its batch was interrupted before its result was recorded


# What a client may report for a host at the end of a batch.
RESULT_STATES = frozenset(
    {HostState.OK, HostState.FAILED, HostState.UNREACHABLE, HostState.IN_DOUBT}
)


class BatchState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # every host of the batch has a result (which may be failed)
    INTERRUPTED = "interrupted"  # the run ended (failed, aborted) while the batch was in flight


class EventKind(StrEnum):
    RUNNER = "runner"  # an ansible-runner event, sent by the owner's kernel
    HUMAN = "human"  # something a person did: start, note, handoff, accept, takeover ...
    SYSTEM = "system"  # something the service did: lease_expired


class ErrorCode(StrEnum):
    """Why a request was refused; the client maps these to its exceptions, people read `message`."""

    BAD_REQUEST = "bad_request"  # 400: the body or a parameter is wrong
    UNAUTHENTICATED = "unauthenticated"  # 401: no valid JupyterHub token or cookie
    MISSING_SCOPE = "missing_scope"  # 403: `scope` names what is needed
    NOT_FOUND = "not_found"  # 404
    RUN_ACTIVE = "run_active"  # 409: that runbook already runs on that stack (`run_id`)
    NOT_OWNER = "not_owner"  # 409: someone else owns the run now (a kernel that lost it stops)
    LEASE_EXPIRED = "lease_expired"  # 409: the caller's lease ran out; the run is orphaned
    RUN_FINISHED = "run_finished"  # 409: completed, failed or aborted: nothing more to do
    WRONG_STATE = "wrong_state"  # 409: not possible in the run's (or batch's) present state
    NOT_ON_CALL = "not_on_call"  # 400: a handoff to someone who is not on call
    NOT_HANDED_TO_YOU = "not_handed_to_you"  # 409: accepting a run handed to someone else
    PLAN_CHANGED = "plan_changed"  # 409: the inventory no longer matches the run's plan: re-plan
    NOT_PRODUCTION = "not_production"  # 409: an SSH certificate for a run is for production runs
    # only (a non-production run's environment is in every certificate without a run)
    AWAITING_APPROVAL = "awaiting_approval"  # 409: the run waits for approval: nothing may run
    # (batch start, its certificate, parameters ...) until it is approved
    SELF_APPROVAL = "self_approval"  # 409: the caller requested the run or owns it now, and may
    # not approve or reject it; the message names who else may (on call, minus the requester)
    APPROVAL_EXPIRED = "approval_expired"  # 409: the request (or the approval, if the run never
    # started a batch) is older than RUNS_APPROVAL_TTL; the message names when it expired
    UNAVAILABLE = "unavailable"  # 503: the hub, the database or the inventory cannot be read
    REPOSITORY_FAILED = "repository_failed"  # 502: the package repository refused or failed a
    # promotion; the message has its reason; nothing is recorded as promoted
    REPOSITORY_UNREACHABLE = "repository_unreachable"  # 503: no package repository configured,
    # or its host did not answer; nothing is recorded as promoted. Not retried by the client (a
    # 502/503 without a service error body is a proxy's "not now", and is)
    INTERNAL = "internal"  # 500: a bug in the service; its log has the details


class WireError(ValueError):
    """A body that does not have the expected shape; the message names the field."""


def wire_time(moment: datetime) -> str:
    """A timezone-aware time as it travels: ISO 8601 in UTC."""
    if moment.tzinfo is None:
        raise WireError(f"time {moment} has no timezone; expected an aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_wire_time(text: str) -> datetime:
    """The inverse of `wire_time`; raises WireError for anything but an aware ISO 8601 time."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as error:
        raise WireError(f"expected an ISO 8601 time, got {text!r}") from error
    if moment.tzinfo is None:
        raise WireError(f"time {text!r} has no timezone; expected e.g. 2026-11-26T12:00:00Z")
    return moment.astimezone(UTC)


# --- generic conversion between dataclasses and JSON-ready data -----------------------------------

W = TypeVar("W", bound="Wire")


class Wire:
    """Base of every wire type: `to_dict()` and a checking `from_dict()`."""

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls: type[W], data: Any, *, where: str = "") -> W:
        if not isinstance(data, dict):
            raise WireError(f"{where or cls.__name__}: expected a JSON object, got {_kind(data)}")
        hints = cls._hints.get(cls)
        if hints is None:
            hints = cls._hints[cls] = get_type_hints(cls)
        values: dict[str, Any] = {}
        for item in fields(cls):  # type: ignore[arg-type]
            path = f"{where}.{item.name}" if where else item.name
            if item.name not in data:
                if item.default is MISSING and item.default_factory is MISSING:
                    raise WireError(f"{path}: missing (expected {_describe(hints[item.name])})")
                continue
            values[item.name] = _convert(data[item.name], hints[item.name], path)
        return cls(**values)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def _convert(value: Any, hint: Any, path: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        if value is None and len(options) < len(get_args(hint)):
            return None
        try:
            return _convert(value, options[0], path)
        except WireError:
            if isinstance(value, dict | list):
                raise  # the nested field's own message says more
            raise WireError(f"{path}: expected {_describe(hint)}, got {_kind(value)}") from None
    if origin is list:
        if not isinstance(value, list):
            raise WireError(f"{path}: expected {_describe(hint)}, got {_kind(value)}")
        (inner,) = get_args(hint)
        return [_convert(item, inner, f"{path}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise WireError(f"{path}: expected {_describe(hint)}, got {_kind(value)}")
        _, inner = get_args(hint)
        return {str(key): _convert(item, inner, f"{path}.{key}") for key, item in value.items()}
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        try:
            return hint(value)
        except ValueError:
            raise WireError(f"{path}: expected {_describe(hint)}, got {value!r}") from None
    if isinstance(hint, type) and issubclass(hint, Wire):
        return hint.from_dict(value, where=path)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise WireError(f"{path}: expected {_describe(hint)}, got {_kind(value)}")


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0])}"
    if origin is dict:
        return "an object"
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return "one of " + ", ".join(member.value for member in hint)
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, Wire):
        return f"an object ({hint.__name__})"
    return names.get(hint, str(hint))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"{value!r}"
    if isinstance(value, int | float):
        return f"{value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


wire = dataclass(frozen=True, kw_only=True)


# --- requests -------------------------------------------------------------------------------------


class BatchOrder(StrEnum):
    INVENTORY = "inventory"  # the stack's hosts in natural order (web-2 before web-10)
    REVERSE = "reverse"  # the same, last host first


@wire
class RunOptions(Wire):
    """How a run goes: typed, checked once (`problems`), recorded with the run and read back by
    whoever goes on with it. The service plans the batches from the first three; the runbook
    executes with the rest."""

    batch_size: int = 1  # hosts patched at a time
    order: BatchOrder = BatchOrder.INVENTORY
    limit: list[str] = field(default_factory=list)  # only these hosts of the stack (none: all)
    max_fail: int = 0  # hosts that may fail the play, in all, before the run stops
    gate_timeout: float = 120.0  # seconds a batch's hosts get to pass the health gate
    max_load_per_cpu: float = 1.0  # health gate: highest 1-minute load per CPU
    check_mode: bool = False  # a dry run: ansible --check, nothing installed or rebooted

    def problems(self) -> list[str]:
        """One line per option out of range, naming it; empty when all are fine."""
        found = []
        if not 1 <= self.batch_size <= MAX_HOSTS:
            found.append(f"options.batch_size: expected 1 to {MAX_HOSTS}, got {self.batch_size}")
        if not 0 <= self.max_fail <= MAX_HOSTS:
            found.append(f"options.max_fail: expected 0 to {MAX_HOSTS}, got {self.max_fail}")
        if not 0 <= self.gate_timeout <= 3600:
            found.append(f"options.gate_timeout: expected 0 to 3600 s, got {self.gate_timeout}")
        if not 0 < self.max_load_per_cpu <= 100:
            found.append(
                f"options.max_load_per_cpu: expected above 0, at most 100, got "
                f"{self.max_load_per_cpu}"
            )
        if len(self.limit) > MAX_HOSTS or len(set(self.limit)) != len(self.limit):
            found.append("options.limit: expected each host of the stack at most once")
        return found


MAX_HOSTS = 10_000  # hosts in one run


@wire
class CreateRun(Wire):
    """POST api/runs: start a run; the caller becomes its owner and gets its lease.

    The service, not the caller, decides what the run is: it reads the inventory, resolves the
    stack to its hosts and environment, checks the caller's scopes against that and plans the
    batches from `options`. A body that also names an environment or a plan (older clients) has
    those fields ignored."""

    runbook: str  # e.g. "patching"
    stack: str  # a stack of the inventory, written as there: one run per (runbook, stack)
    options: RunOptions = field(default_factory=RunOptions)
    parameters: dict[str, Any] = field(default_factory=dict)  # the rest of the record (approved
    # errata ...); no secrets: everybody reads them


@wire
class EventIn(Wire):
    """One ansible-runner event, summarised by the client (no raw stdout: the status page is
    readable by every signed-in user). `uuid` is the runner's event uuid: the same uuid twice is
    stored once, so resending a batch after a lost response duplicates nothing."""

    type: str  # the runner's event name: runner_on_ok, runner_on_failed, playbook_on_stats ...
    uuid: str | None = None
    host: str | None = None
    task: str | None = None
    batch: int | None = None
    message: str | None = None  # e.g. the msg of a failed task
    data: dict[str, Any] = field(default_factory=dict)  # small result summary (changed, rc ...)
    at: str | None = None  # when the runner saw it (the service also records when it got it)


@wire
class AppendEvents(Wire):
    """POST api/runs/{id}/events: up to 1000 events at a time."""

    events: list[EventIn]


@wire
class BatchStart(Wire):
    """POST api/runs/{id}/batches/{n}/start. `hosts`: the hosts run in this attempt (default:
    every host of the batch); after a takeover, the in-doubt ones."""

    hosts: list[str] | None = None


@wire
class HostResult(Wire):
    host: str
    state: HostState  # ok, failed, unreachable or in_doubt
    message: str | None = None  # why it failed, for people


@wire
class BatchFinish(Wire):
    """POST api/runs/{id}/batches/{n}/finish: the per-host results of the batch, which are what the
    run's host states are made of (runner events are the history, not the result)."""

    results: list[HostResult]


@wire
class GateReport(Wire):
    """POST api/runs/{id}/batches/{n}/gate: the health gate's verdict on a finished batch."""

    passed: bool
    message: str = ""
    details: dict[str, str] = field(default_factory=dict)  # host -> what the check said


@wire
class Empty(Wire):
    """The body of the verbs that need nothing else: lease, pause, accept, resume."""


@wire
class NoteIn(Wire):
    text: str


@wire
class HandoffRequest(Wire):
    """POST api/runs/{id}/handoff: `to` must be on call; the run pauses at the batch boundary."""

    to: str
    note: str = ""


@wire
class ReasonRequest(Wire):
    """Body of takeover and abort: the reason goes into the record."""

    reason: str


@wire
class CertificateRequest(Wire):
    """POST api/ssh/certificate: sign the caller's own public key (one OpenSSH line, e.g. the
    contents of id_ed25519.pub; ed25519, or RSA of at least 3072 bits). The service chooses the
    principals: the non-production environments and `repo`; with `run_id`, also that run's
    environment if the caller owns it, it is production, running, and its lease holds (else 409,
    saying which, and no certificate)."""

    public_key: str
    run_id: int | None = None


@wire
class ParametersUpdate(Wire):
    """POST api/runs/{id}/parameters: add to the run's record what its owner decided after it
    started (e.g. the approved errata, reviewed once the pre-checks passed). Each key given
    replaces that key; the others stay. Only the owner of a running run; no secrets: everybody
    reads them. Recorded as a `parameters` event."""

    parameters: dict[str, Any]


@wire
class ReplanRequest(Wire):
    """POST api/runs/{id}/replan: plan the batches not yet done again from the inventory as it
    is now (after a host left the stack, or its environment changed); the ledger keeps both."""

    reason: str


@wire
class ApprovalDecision(Wire):
    """Body of POST api/runs/{id}/approve and .../reject: the reason goes into the ledger (and, for
    a rejection, is the run's summary). An empty reason is refused (400)."""

    reason: str


@wire
class ErratumVersion(Wire):
    """One package version, as the package repository names it."""

    package: str
    version: str


@wire
class PromotionRequest(Wire):
    """POST api/errata/promotions: approve package versions for one environment, i.e. add them
    to that environment's suite of the package repository (its hosts update from it). Into a
    non-production environment: custom:runs:write. Into production: only with `run_id`, an
    approved production run on a stack of that environment, running, called by its owner while
    the lease holds. The service performs it on the repository host; all or nothing."""

    environment: str
    errata: list[ErratumVersion]
    run_id: int | None = None  # the run it is part of (required for production): recorded
    # with the promotion and as the run's `errata_promoted` event
    reason: str = ""


@wire
class FinishRequest(Wire):
    outcome: RunState  # completed or failed
    summary: str = ""


# --- responses ------------------------------------------------------------------------------------


@wire
class Handoff(Wire):
    to: str
    note: str
    by: str
    at: str


class ApprovalDecisionKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@wire
class ApprovalView(Wire):
    """One decision on a run's approval request (the current request's: a re-plan clears them)."""

    approver: str
    decision: ApprovalDecisionKind
    reason: str
    at: str


@wire
class SilenceView(Wire):
    """The Alertmanager silence the runs service set for a batch's attempt: exactly its hosts'
    exporter instances, from the batch's start until its end (`expired_at`, `why`), or at the
    latest until `ends_at` should the service die. None on a batch of a check-mode run."""

    id: str  # Alertmanager's silenceID
    hosts: list[str]
    instances: list[str]
    set_at: str
    ends_at: str
    expired_at: str | None = None  # None: in force
    why: str | None = None  # why it ended (or is to end, while Alertmanager refuses)
    expire_error: str | None = None  # the last failure to expire it; the service tries again


@wire
class BatchView(Wire):
    number: int  # from 1
    hosts: list[str]
    state: BatchState
    attempts: int = 0
    started_by: str | None = None  # who ran it (the last attempt)
    started_at: str | None = None
    finished_by: str | None = None
    finished_at: str | None = None
    gate_passed: bool | None = None
    gate_message: str | None = None
    silence: SilenceView | None = None  # the last attempt's silence (None: none was set)


@wire
class HostView(Wire):
    name: str
    batch: int
    state: HostState
    message: str | None = None  # failure message of its last result
    activity: str | None = None  # last task seen in its events (live progress)
    attempts: int = 0
    updated_by: str | None = None
    updated_at: str | None = None


@wire
class Run(Wire):
    id: int
    runbook: str
    stack: str
    environment: str
    production: bool
    options: RunOptions
    parameters: dict[str, Any]
    state: RunState
    owner: str  # the owner now (for an orphaned run: whose lease ran out)
    lease_expires_at: str | None
    lease_seconds: int
    created_by: str
    created_at: str
    updated_at: str
    finished_at: str | None = None
    summary: str | None = None
    handoff: Handoff | None = None  # pending handoff
    current_batch: int | None = None  # the batch in flight
    last_seq: int = 0  # sequence number of the run's latest event
    batches: list[BatchView] = field(default_factory=list)
    hosts: list[HostView] = field(default_factory=list)
    approvals: list[ApprovalView] = field(default_factory=list)  # the current request's decisions
    approvals_needed: int = 0  # distinct approvers the run needs (0: its environment needs none)
    approval_expires_at: str | None = None  # awaiting approval: when the request expires;
    # approved but no batch started yet: when the approval expires; aborted because it expired:
    # when it did; else None
    approval_requested_by: str | None = None  # who asked for the current approval (the
    # requester; after a re-plan, whoever re-planned): neither they, the requester nor the owner
    # may decide it

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def host_states(self) -> dict[str, HostState]:
        return {host.name: host.state for host in self.hosts}


@wire
class StackView(Wire):
    """One stack of the inventory, as the service resolves it."""

    name: str
    environment: str
    production: bool
    hosts: list[str]


@wire
class StackList(Wire):
    """GET api/stacks: the stacks a run may be started on, and which environments are not
    production (every other one is)."""

    stacks: list[StackView]
    nonproduction: list[str]


@wire
class RunList(Wire):
    """GET api/runs: the active runs, then the most recently finished."""

    runs: list[Run]


@wire
class Event(Wire):
    seq: int  # 1, 2, 3 ... per run
    run_id: int
    at: str  # when the service recorded it
    actor: str  # who: the engineer, or "runs" for the service itself
    kind: EventKind
    type: str  # runner event name, or start, note, handoff, accept, takeover, pause, resume,
    # batch_started, batch_finished, gate, lease_expired, abort, finish, handoff_cancelled,
    # parameters, approval_requested, approved, rejected, approval_expired, silence_set,
    # silence_expired, silence_expire_failed
    batch: int | None = None
    host: str | None = None
    task: str | None = None
    uuid: str | None = None
    message: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    client_at: str | None = None  # for runner events: when the runner saw it


@wire
class EventPage(Wire):
    """GET api/runs/{id}/events?since=N&limit=M: events with seq > N, oldest first."""

    events: list[Event]
    next_since: int  # pass as `since` to get the next page
    more: bool


@wire
class AppendResult(Wire):
    stored: int
    duplicates: int  # events whose uuid was already recorded (ignored)
    last_seq: int


@wire
class LeaseGrant(Wire):
    """POST api/runs/{id}/lease. The owner's kernel renews well before `lease_expires_at`, and
    checks `handoff`: a pending handoff means finish the batch in flight, then pause."""

    run_id: int
    owner: str
    state: RunState
    lease_expires_at: str
    lease_seconds: int
    handoff: Handoff | None = None


@wire
class Oncall(Wire):
    """GET api/oncall: who a run may be handed to."""

    group: str
    users: list[str]


@wire
class Me(Wire):
    """GET api/me: who the service thinks the caller is, and which runs scopes they hold."""

    name: str
    scopes: list[str]


@wire
class Certificate(Wire):
    """A signed OpenSSH user certificate: write `certificate` beside the key as
    <key>-cert.pub. The ledger records every one (serial, KeyID, principals, validity)."""

    certificate: str  # one line: ssh-ed25519-cert-v01@openssh.com AAAA... <key_id>
    key_id: str  # opsbook:<user> or opsbook:<user>:run-<id>; sshd logs it with each login
    serial: int  # random, below 2**63
    principals: list[str]  # environments (staging, production ...) and repo
    valid_after: str
    valid_before: str  # renew before this


@wire
class SshCa(Wire):
    """GET api/ssh/ca (no sign-in): the user CA's public key, for hosts' TrustedUserCAKeys."""

    user_ca: str  # one OpenSSH public key line


@wire
class Promotion(Wire):
    """A promotion as the ledger has it: what the repository added (`promoted`) and what its
    suite had already (`unchanged`), who asked, when, and for which run."""

    id: int
    environment: str
    promoted: list[ErratumVersion]
    unchanged: list[ErratumVersion]
    by: str
    at: str
    run_id: int | None = None
    reason: str = ""


@wire
class PromotionList(Wire):
    """GET api/errata/promotions[?environment=E&run_id=N&limit=M]: the latest first."""

    promotions: list[Promotion]


@wire
class Health(Wire):
    status: str  # "ok"
    schema_version: int
    database: str  # sqlite or postgresql


@wire
class ErrorReply(Wire):
    """Every error answer: {"error": {...}} with this inside."""

    status: int
    code: ErrorCode
    message: str  # for people: what was wrong and what to do
    scope: str | None = None  # missing_scope: the scope needed
    run_id: int | None = None  # run_active: the run that holds the stack

    def to_body(self) -> dict[str, Any]:
        return {"error": self.to_dict()}

    @classmethod
    def from_body(cls, body: Any) -> ErrorReply:
        if not isinstance(body, dict) or "error" not in body:
            raise WireError("expected an error body {'error': {...}}")
        return cls.from_dict(body["error"], where="error")
