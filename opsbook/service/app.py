"""The runs service's web app (tornado): the JSON API for notebooks and the status pages.

Every handler does three things: find out who is asking (`Identity`), hand the work to the store in
a worker thread (the store is synchronous and enforces the rules), and answer in the wire format.
Refusals become `{"error": {...}}` with the status the rules chose; a bug becomes a 500 whose body
says so without a traceback (the log has it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from sqlalchemy.exc import OperationalError
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback

from opsbook.contract import wire
from opsbook.contract.scopes import SCOPES
from opsbook.contract.wire import (
    AppendEvents,
    ApprovalDecision,
    BatchFinish,
    BatchStart,
    CertificateRequest,
    CreateRun,
    ErrorCode,
    ErrorReply,
    Event,
    FinishRequest,
    GateReport,
    HandoffRequest,
    Health,
    Me,
    NoteIn,
    ParametersUpdate,
    PromotionList,
    PromotionRequest,
    ReasonRequest,
    ReplanRequest,
    RunList,
    SshCa,
    Wire,
    WireError,
)
from opsbook.contract.wire import Oncall as OncallReply
from opsbook.service import pages
from opsbook.service.identity import Identity
from opsbook.service.notify import Notifier
from opsbook.service.oncall import Oncall
from opsbook.service.promotions import Promoter
from opsbook.service.rules import (
    Caller,
    Refused,
    decision_refusal,
    may_get_certificate,
    may_read,
)
from opsbook.service.ssh_ca import CertificateAuthority
from opsbook.service.store import Store, facts_of

log = logging.getLogger("opsbook.runs")
T = TypeVar("T")
W = TypeVar("W", bound=Wire)

MAX_BODY = 8 * 1024 * 1024  # 1000 events of summaries fit with room to spare


@dataclass
class Context:
    """Everything the handlers share."""

    store: Store
    identity: Identity
    oncall: Oncall
    notifier: Notifier
    prefix: str = "/services/runs/"
    hub_auth: Any = None  # HubOAuth in the real service; None with a fake identity
    ssh_ca: CertificateAuthority | None = None  # None: no certificates (503); __main__ loads it
    promoter: Promoter | None = None  # None: no errata promotions (503); RUNS_PACKAGE_REPO_SSH
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="runs-db")
    )
    recent_runs: int = 20
    card_events: int = 8
    page_events: int = 200

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await IOLoop.current().run_in_executor(self.executor, partial(fn, *args, **kwargs))

    async def act(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store action and announce what it recorded on the webhook."""

        def recorded() -> tuple[T, list[Event]]:
            with self.store.recording() as events:
                result = fn(*args, **kwargs)
            return result, events

        result, events = await self.call(recorded)
        if events:
            run = result if hasattr(result, "batches") else None
            if run is None:
                run = await self.call(self.store.get_run, events[0].run_id)
            self.notifier.events(run, events)
        return result


def _path_int(text: str) -> int:
    """A run or batch number from the URL; one past any the database can hold does not exist."""
    value = int(text)
    if value > 2**31 - 1:
        raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run or batch {text}")
    return value


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    ctx: Context
    caller: Caller | None = None

    def initialize(self, ctx: Context) -> None:
        self.ctx = ctx
        if ctx.hub_auth is not None:
            self.hub_auth = ctx.hub_auth

    async def prepare(self) -> None:
        try:
            self.caller = await self.ctx.identity.caller(self)
        except web.HTTPError as error:
            # HubAuth's way of saying the hub did not answer (or refused our own token).
            log.error("cannot check a token with the hub: %s", error.log_message or error)
            raise Refused(
                503,
                ErrorCode.UNAVAILABLE,
                "cannot check who you are: the hub's API did not answer; try again shortly",
            ) from None

    def get_current_user(self) -> Caller | None:
        return self.caller

    def check_xsrf_cookie(self) -> None:
        # Cookie-authenticated writes are checked by HubOAuth when it reads the cookie; with a
        # fake identity (tests) there is no cookie at all.
        if self.ctx.hub_auth is not None:
            super().check_xsrf_cookie()


class ApiHandler(BaseHandler):
    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def signed_in(self) -> Caller:
        if self.caller is None:
            raise Refused(
                401,
                ErrorCode.UNAUTHENTICATED,
                "not signed in: send the header 'Authorization: token $JUPYTERHUB_API_TOKEN' "
                "(a notebook has it in its environment), or sign in to the hub in a browser",
            )
        return self.caller

    def who(self) -> Caller:
        """The caller, who must at least be allowed to read runs."""
        caller = self.signed_in()
        may_read(caller)
        return caller

    def body(self, kind: type[W]) -> W:
        raw = self.request.body or b"{}"
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise Refused(400, ErrorCode.BAD_REQUEST, f"the body is not JSON: {error}") from None
        try:
            return kind.from_dict(data)
        except WireError as error:
            raise Refused(400, ErrorCode.BAD_REQUEST, str(error)) from None

    def reply(self, value: Wire | dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(value.to_dict() if isinstance(value, Wire) else value))

    def int_arg(self, name: str, default: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise Refused(
                400, ErrorCode.BAD_REQUEST, f"{name}: expected a whole number, got {raw!r}"
            ) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, Refused):
            reply = error.reply()
        elif isinstance(error, OperationalError):
            reply = ErrorReply(
                status=503,
                code=ErrorCode.UNAVAILABLE,
                message="the runs database does not answer; try again shortly",
            )
        elif isinstance(error, web.HTTPError) and status_code < 500:
            reply = ErrorReply(
                status=status_code,
                code=ErrorCode.NOT_FOUND if status_code == 404 else ErrorCode.BAD_REQUEST,
                message=error.log_message or self._reason,
            )
        else:
            reply = ErrorReply(
                status=status_code if status_code >= 500 else 500,
                code=ErrorCode.INTERNAL,
                message="the runs service failed on this request; its log says why",
            )
        self.set_status(reply.status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(reply.to_body()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, Refused):
            self._refusal_logged = True  # one line per refusal, with its reason
            log.info(
                "%d %s %s (%s, %s): %s",
                value.status,
                self.request.method,
                self.request.path,
                self.request.remote_ip,
                self.caller.name if self.caller else "-",
                value.message,
            )
        else:
            super().log_exception(typ, value, tb)


# --- API ------------------------------------------------------------------------------------------


class HealthHandler(ApiHandler):
    """Unauthenticated: Docker's health check and the proxy's probes; says nothing private."""

    async def prepare(self) -> None:
        self.caller = None

    async def get(self) -> None:
        try:
            version = await self.ctx.call(self.ctx.store.schema_version)
        except Exception as error:
            log.error("health: database check failed: %s", error)
            raise Refused(503, ErrorCode.UNAVAILABLE, "the runs database does not answer") from None
        self.reply(Health(status="ok", schema_version=version, database=self.ctx.store.backend))


class MeHandler(ApiHandler):
    async def get(self) -> None:
        caller = self.signed_in()
        scopes = sorted(s for s in caller.scopes if s in SCOPES)
        self.reply(Me(name=caller.name, scopes=scopes))


class OncallHandler(ApiHandler):
    async def get(self) -> None:
        self.who()
        users = await self.ctx.oncall.members()
        self.reply(OncallReply(group=self.ctx.oncall.group, users=users))


class RunsHandler(ApiHandler):
    async def get(self) -> None:
        self.who()
        finished = max(0, min(self.int_arg("finished", self.ctx.recent_runs), 200))
        runs = await self.ctx.call(
            self.ctx.store.list_runs,
            finished=finished,
            runbook=self.get_query_argument("runbook", None),
            stack=self.get_query_argument("stack", None),
            active=self.get_query_argument("active", "1") not in ("0", "false", "no"),
        )
        self.reply(RunList(runs=runs))

    async def post(self) -> None:
        caller = self.who()
        request = self.body(CreateRun)
        run = await self.ctx.act(
            self.ctx.store.create_run,
            caller,
            runbook=request.runbook,
            stack=request.stack,
            options=request.options,
            parameters=request.parameters,
        )
        self.set_header("Location", f"{self.ctx.prefix}api/runs/{run.id}")
        self.reply(run, 201)


class StacksHandler(ApiHandler):
    """The stacks a run may start on, as this service resolves them from the inventory: the one
    answer to "which hosts, which environment, is it production?" for every client."""

    async def get(self) -> None:
        self.who()
        fleet = await self.ctx.call(self.ctx.store.fleet)
        self.reply(fleet.listing())


class RunHandler(ApiHandler):
    async def get(self, run_id: str) -> None:
        self.who()
        self.reply(await self.ctx.call(self.ctx.store.get_run, _path_int(run_id)))


class EventsHandler(ApiHandler):
    async def get(self, run_id: str) -> None:
        self.who()
        page = await self.ctx.call(
            self.ctx.store.events,
            _path_int(run_id),
            since=max(0, self.int_arg("since", 0)),
            limit=self.int_arg("limit", 500),
        )
        self.reply(page)

    async def post(self, run_id: str) -> None:
        caller = self.who()
        request = self.body(AppendEvents)
        result = await self.ctx.call(
            self.ctx.store.append_events, _path_int(run_id), caller, request.events
        )
        self.reply(result)


class BatchHandler(ApiHandler):
    async def post(self, run_id: str, number: str, what: str) -> None:
        caller = self.who()
        store = self.ctx.store
        if what == "start":
            hosts = self.body(BatchStart).hosts
            run = await self.ctx.act(
                store.start_batch, _path_int(run_id), caller, _path_int(number), hosts
            )
        elif what == "finish":
            results = self.body(BatchFinish).results
            run = await self.ctx.act(
                store.finish_batch, _path_int(run_id), caller, _path_int(number), results
            )
        else:
            report = self.body(GateReport)
            run = await self.ctx.act(
                store.record_gate, _path_int(run_id), caller, _path_int(number), report
            )
        self.reply(run)


async def _oncall_or_none(ctx: Context) -> list[str] | None:
    """The on-call group, to name who else may approve; None if the hub does not answer (the
    decision does not depend on it: the scope does)."""
    try:
        return await ctx.oncall.members()
    except Refused:
        return None


async def decide(ctx: Context, action: str, run_id: int, caller: Caller, reason: str) -> Any:
    """Approve or reject (the API and the status page's form both come here)."""
    method = ctx.store.approve if action == "approve" else ctx.store.reject
    oncall = await _oncall_or_none(ctx)
    return await ctx.act(
        method, run_id, caller, reason, oncall=oncall, oncall_group=ctx.oncall.group
    )


class ActionHandler(ApiHandler):
    """POST api/runs/{id}/{action}: lease, notes, handoff, pause, accept, takeover, resume,
    finish, abort, replan, parameters, approve, reject."""

    async def post(self, run_id: str, action: str) -> None:
        caller = self.who()
        rid = _path_int(run_id)
        store = self.ctx.store
        if action == "lease":
            self.reply(await self.ctx.call(store.renew_lease, rid, caller))
        elif action == "notes":
            note = self.body(NoteIn).text
            self.reply(await self.ctx.act(store.add_note, rid, caller, note), 201)
        elif action == "handoff":
            request = self.body(HandoffRequest)
            users = await self.ctx.oncall.members()
            run = await self.ctx.act(
                store.handoff,
                rid,
                caller,
                to=request.to,
                note=request.note,
                oncall=users,
                oncall_group=self.ctx.oncall.group,
            )
            self.reply(run)
        elif action in ("approve", "reject"):
            reason = self.body(ApprovalDecision).reason
            self.reply(await decide(self.ctx, action, rid, caller, reason))
        elif action == "parameters":
            parameters = self.body(ParametersUpdate).parameters
            self.reply(await self.ctx.act(store.update_parameters, rid, caller, parameters))
        elif action == "replan":
            reason = self.body(ReplanRequest).reason
            self.reply(await self.ctx.act(store.replan, rid, caller, reason))
        elif action in ("takeover", "abort"):
            reason = self.body(ReasonRequest).reason
            method = store.takeover if action == "takeover" else store.abort
            self.reply(await self.ctx.act(method, rid, caller, reason))
        elif action == "finish":
            request = self.body(FinishRequest)
            self.reply(
                await self.ctx.act(store.finish, rid, caller, request.outcome, request.summary)
            )
        else:
            method = {"pause": store.pause, "accept": store.accept, "resume": store.resume}[action]
            self.reply(await self.ctx.act(method, rid, caller))


class SshCertificateHandler(ApiHandler):
    """POST api/ssh/certificate: the caller's public key signed, with the principals the service
    chooses (ssh_ca.py); recorded in the ledger."""

    async def post(self) -> None:
        caller = self.signed_in()
        may_get_certificate(caller)  # before the body: a viewer hears about the scope first
        request = self.body(CertificateRequest)
        ca = _certificate_authority(self.ctx)
        certificate = await self.ctx.call(
            self.ctx.store.issue_certificate, caller, request.public_key, request.run_id, ca=ca
        )
        self.reply(certificate)


class SshCaHandler(ApiHandler):
    """GET api/ssh/ca, without sign-in: the user CA's public key (public by nature), so a host
    can be set up to trust it (TrustedUserCAKeys)."""

    async def prepare(self) -> None:
        self.caller = None

    async def get(self) -> None:
        self.reply(SshCa(user_ca=_certificate_authority(self.ctx).public_line))


def _certificate_authority(ctx: Context) -> CertificateAuthority:
    if ctx.ssh_ca is None:
        raise Refused(
            503,
            ErrorCode.UNAVAILABLE,
            "this runs service has no SSH certificate authority (setting RUNS_SSH_CA_KEY)",
        )
    return ctx.ssh_ca


class PromotionsHandler(ApiHandler):
    """POST api/errata/promotions: promote errata into an environment's suite, if the rules let
    the caller (store.check_promotion), on the repository host (promotions.py), then record what
    the repository did. GET: the recorded promotions, newest first (?environment=&run_id=)."""

    async def get(self) -> None:
        self.who()
        run_id = self.get_query_argument("run_id", None)
        promotions = await self.ctx.call(
            self.ctx.store.promotions,
            environment=self.get_query_argument("environment", None),
            run_id=self.int_arg("run_id", 0) if run_id else None,
            limit=self.int_arg("limit", 100),
        )
        self.reply(PromotionList(promotions=promotions))

    async def post(self) -> None:
        caller = self.who()
        request = self.body(PromotionRequest)
        pairs = [(item.package, item.version) for item in request.errata]
        store = self.ctx.store
        await self.ctx.call(
            store.check_promotion, caller, request.environment, pairs, request.run_id
        )
        if self.ctx.promoter is None:
            raise Refused(
                503,
                ErrorCode.REPOSITORY_UNREACHABLE,
                "this runs service promotes no errata: it has no package repository "
                "(setting RUNS_PACKAGE_REPO_SSH); ask its administrator",
            )
        outcome = await self.ctx.call(
            self.ctx.promoter.promote, request.environment, pairs, by=caller.name
        )
        promotion = await self.ctx.act(
            store.record_promotion,
            caller,
            request.environment,
            outcome,
            run_id=request.run_id,
            reason=request.reason,
        )
        self.reply(promotion, 201)


class NotFoundApiHandler(ApiHandler):
    async def prepare(self) -> None:
        raise Refused(
            404,
            ErrorCode.NOT_FOUND,
            f"no such API path: {self.request.method} {self.request.path}; "
            f"see {self.ctx.prefix}api/ in the service's README",
        )


# --- pages ----------------------------------------------------------------------------------------


class PageHandler(BaseHandler):
    def form_xsrf(self) -> str:
        """The `_xsrf` token a form of this page posts back (HubOAuth's; sets its cookie)."""
        if self.ctx.hub_auth is None:
            return ""  # a fake identity (tests): there is no cookie to protect
        token = self.xsrf_token
        return token.decode() if isinstance(token, bytes) else str(token)

    def who(self) -> Caller | None:
        """None when a redirect to the hub's login was sent."""
        if self.caller is None:
            url = self.ctx.identity.login_url(self)
            if url is None:
                raise Refused(401, ErrorCode.UNAUTHENTICATED, "Sign in to the hub first.")
            self.redirect(url)
            return None
        may_read(self.caller)
        return self.caller

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, Refused):
            status, message = error.status, error.message
        elif isinstance(error, web.HTTPError) and status_code < 500:
            status, message = status_code, error.log_message or self._reason
        else:
            status, message = 500, "The runs service failed on this page; its log says why."
        self.set_status(status)
        title = {
            400: "Not recorded",
            401: "Not signed in",
            403: "Not allowed",
            404: "Not found",
            409: "Not possible now",
        }.get(status, "Error")
        who = self.caller.name if self.caller else ""
        back = ""
        if isinstance(self, DecisionForm) and self.path_args:
            back = f"{self.ctx.prefix}runs/{self.path_args[0]}"
        self.finish(pages.message_page(title, message, who=who, prefix=self.ctx.prefix, back=back))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not isinstance(value, Refused):
            super().log_exception(typ, value, tb)

    def card(self, run_id: int) -> pages.RunCard:
        """Runs in a worker thread: the run, its last events and its notes."""
        store = self.ctx.store
        people = store.last_events(run_id, 50, people_only=True)
        return pages.RunCard(
            run=store.get_run(run_id),
            last_events=store.last_events(run_id, self.ctx.card_events),
            notes=[e for e in people if e.type in ("note", "handoff") and e.message][-5:],
        )


class IndexPage(PageHandler):
    async def get(self) -> None:
        caller = self.who()
        if caller is None:
            return

        def gather() -> str:
            runs = self.ctx.store.list_runs(finished=self.ctx.recent_runs)
            active = [self.card(run.id) for run in runs if not run.finished]
            recent = [run for run in runs if run.finished]
            return pages.index_page(
                active, recent, who=caller.name, prefix=self.ctx.prefix, now=datetime.now(UTC)
            )

        self.set_header("Cache-Control", "no-store")
        self.finish(await self.ctx.call(gather))


class RunPage(PageHandler):
    async def get(self, run_id: str) -> None:
        caller = self.who()
        if caller is None:
            return
        before_raw = self.get_query_argument("before", "")
        before = int(before_raw) if before_raw.isdigit() else None
        rid = _path_int(run_id)
        store = self.ctx.store

        outcome = self.get_query_argument("decided", "")
        xsrf = self.form_xsrf()

        def gather() -> str:
            card = self.card(rid)
            events = store.last_events(rid, self.ctx.page_events, before=before)
            history = store.last_events(rid, 1000, people_only=True)
            older = events[0].seq if events and events[0].seq > 1 else None
            now = datetime.now(UTC)
            return pages.run_page(
                card,
                history,
                events,
                older=older,
                latest=before is None,
                who=caller.name,
                prefix=self.ctx.prefix,
                now=now,
                approval=pages.ApprovalForm(
                    refusal=_page_refusal(card.run, caller, now),
                    xsrf=xsrf,
                    decided=outcome if outcome in ("approve", "reject") else "",
                ),
            )

        self.set_header("Cache-Control", "no-store")
        self.finish(await self.ctx.call(gather))


def _page_refusal(run: Any, caller: Caller, now: datetime) -> str | None:
    """Why the run page shows `caller` no approval form (None: it shows one)."""
    if run.approvals_needed == 0 and run.state is not wire.RunState.AWAITING_APPROVAL:
        return "no approval needed"
    facts = facts_of(run)
    decided = {a.approver for a in run.approvals if a.decision is wire.ApprovalDecisionKind.APPROVE}
    return decision_refusal(facts, caller, now=now, decided=decided)


class DecisionForm(PageHandler):
    """POST runs/{id}/approve or runs/{id}/reject from the run page's form (field `reason`):
    the same decision as the API, for a browser. HubOAuth accepts the cookie of a POST only
    with the page's `_xsrf` token; without it there is no caller, and the answer is 403. Success
    redirects to the run page, which says what was recorded; a refusal is a page saying why."""

    async def post(self, run_id: str, action: str) -> None:
        if self.caller is None:
            raise Refused(
                403,
                ErrorCode.UNAUTHENTICATED,
                "This form was not accepted: it came without a valid XSRF token, or you are not "
                "signed in. Open the run page again (it carries a fresh token) and decide there.",
            )
        may_read(self.caller)
        rid = _path_int(run_id)
        reason = self.get_body_argument("reason", "")
        await decide(self.ctx, action, rid, self.caller, reason)
        query = urlencode({"decided": action})
        self.redirect(f"{self.ctx.prefix}runs/{rid}?{query}", status=303)


class OAuthCallback(HubOAuthCallbackHandler):
    def initialize(self, hub_auth: Any) -> None:
        self.hub_auth = hub_auth


def make_app(ctx: Context, *, cookie_secret: bytes | None = None) -> web.Application:
    p = ctx.prefix
    api = f"{p}{wire.API_PATH}"
    routes = {
        wire.ROUTE_HEALTH: HealthHandler,
        wire.ROUTE_ME: MeHandler,
        wire.ROUTE_ONCALL: OncallHandler,
        wire.ROUTE_STACKS: StacksHandler,
        wire.ROUTE_RUNS: RunsHandler,
        wire.ROUTE_RUN: RunHandler,
        wire.ROUTE_EVENTS: EventsHandler,
        wire.ROUTE_BATCH: BatchHandler,
        wire.ROUTE_ACTION: ActionHandler,
        wire.ROUTE_SSH_CERTIFICATE: SshCertificateHandler,
        wire.ROUTE_SSH_CA: SshCaHandler,
        wire.ROUTE_PROMOTIONS: PromotionsHandler,
    }
    handlers: list[Any] = [
        (p, IndexPage, {"ctx": ctx}),
        (rf"{p}runs/(\d+)", RunPage, {"ctx": ctx}),
        (rf"{p}runs/(\d+)/(approve|reject)", DecisionForm, {"ctx": ctx}),
        *((f"{api}/{_pattern(route)}", handler, {"ctx": ctx}) for route, handler in routes.items()),
        (f"{api}/.*", NotFoundApiHandler, {"ctx": ctx}),
        (p.rstrip("/"), web.RedirectHandler, {"url": p}),
    ]
    if ctx.hub_auth is not None:
        handlers.insert(0, (f"{p}oauth_callback", OAuthCallback, {"hub_auth": ctx.hub_auth}))
    return web.Application(
        handlers,
        log_function=_log_request,
        cookie_secret=cookie_secret,
        xsrf_cookies=False,  # HubOAuth checks XSRF on cookie-authenticated writes itself
        max_body_size=MAX_BODY,
    )


def _pattern(route: str) -> str:
    """A contract route as a tornado pattern: numbers and the known verbs are captured."""
    return route.format(
        run_id=r"(\d+)",
        number=r"(\d+)",
        step=f"({'|'.join(wire.BATCH_STEPS)})",
        action=f"({'|'.join(wire.RUN_ACTIONS)})",
    )


def _log_request(handler: web.RequestHandler) -> None:
    """Tornado's access log, without the health checks Docker makes every few seconds."""
    status = handler.get_status()
    if (isinstance(handler, HealthHandler) and status == 200) or getattr(
        handler, "_refusal_logged", False
    ):
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    who = getattr(handler, "caller", None)
    logging.getLogger("tornado.access").log(
        level,
        "%d %s %s (%s, %s) %.1f ms",
        status,
        request.method,
        request.path,  # not the query: nothing secret travels there, but keep logs short
        request.remote_ip,
        who.name if who else "-",
        request.request_time() * 1000,
    )


def start_sweeper(ctx: Context, every_seconds: float) -> PeriodicCallback:
    """Every few seconds: expire the silences whose batch is no longer in flight (again, those
    Alertmanager did not expire before), orphan runs whose lease ran out (their silences end
    too), abort those whose approval expired, and announce them."""

    async def sweep() -> None:
        try:
            await ctx.call(ctx.store.sweep_silences)
        except Exception:
            log.exception("silence sweep failed; will try again")
        try:
            with_events = await ctx.call(_expire_with_events, ctx.store)
        except Exception:
            log.exception("lease sweep failed; will try again")
            return
        for run, events in with_events:
            if run.finished:
                log.warning("run %d aborted: %s", run.id, run.summary)
            else:
                log.warning("run %d orphaned: %s's lease ran out", run.id, run.owner)
            ctx.notifier.events(run, events)

    callback = PeriodicCallback(sweep, every_seconds * 1000)
    callback.start()
    return callback


def _expire_with_events(store: Store) -> list[tuple[Any, list[Event]]]:
    with store.recording() as events:
        changed = store.expire_leases() + store.expire_approvals()
    return [(run, [e for e in events if e.run_id == run.id]) for run in changed]
