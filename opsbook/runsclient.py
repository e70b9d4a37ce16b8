"""The runs service's JSON API, as an engineer's kernel calls it (shapes: opsbook.contract.wire).

Every call is retried while the service does not answer (502, 503, 504, or no connection), so a
service that restarts or hiccups costs a few seconds, not a run; a refusal raises RunsError with
the service's code and message. The run's driver (the ledger observer, the lease, the session a
runbook holds) is opsbook.runs; this module is only the transport and the API's calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests

from opsbook.contract import wire
from opsbook.errors import OpsbookError

W = TypeVar("W", bound=wire.Wire)

# Answers that mean "not now" rather than "no": retried until the budget runs out.
RETRY_STATUSES = frozenset({502, 503, 504})


class RunsError(OpsbookError):
    """The runs service refused: `code` (opsbook.contract.wire.ErrorCode) and its message."""

    def __init__(self, reply: wire.ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply

    @property
    def code(self) -> wire.ErrorCode:
        return self.reply.code


# Seconds a promotion may take to answer: the service's ssh to the repository host (30 s at most),
# signing included, with room to spare.
PROMOTION_TIMEOUT = 60.0

# The service's own 502/503 that are answers, not "not now": the package repository failed or is
# unreachable (a promotion); retrying would only hide the reason.
FINAL_CODES = frozenset({"repository_failed", "repository_unreachable"})


def _final(answer: requests.Response) -> bool:
    try:
        body = answer.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("code") in FINAL_CODES


class LedgerUnavailable(OpsbookError):
    """The runs service did not answer within the retry budget."""


def _unavailable(answer: requests.Response) -> str:
    """Why the service says "not now": its status, and its own message if it sent one (a batch
    it did not start because Alertmanager did not answer names Alertmanager's setting)."""
    try:
        reply = wire.ErrorReply.from_body(answer.json())
    except (ValueError, wire.WireError):
        return f"HTTP {answer.status_code}"
    return f"HTTP {answer.status_code}: {reply.message}"


def _run(run_id: int) -> str:
    return wire.ROUTE_RUN.format(run_id=run_id)


def _action(run_id: int, action: str) -> str:
    assert action in wire.RUN_ACTIONS, action
    return wire.ROUTE_ACTION.format(run_id=run_id, action=action)


def _batch(run_id: int, number: int, step: str) -> str:
    assert step in wire.BATCH_STEPS, step
    return wire.ROUTE_BATCH.format(run_id=run_id, number=number, step=step)


@dataclass
class RunsClient:
    """The runs service's API, as the engineer whose token it is.

    url: the service's base URL, e.g. http://runs:8000/services/runs (OPSBOOK_RUNS_URL);
    token: a JupyterHub token of the engineer (their server's JUPYTERHUB_API_TOKEN).
    retry_for: seconds a request keeps being retried while the service does not answer.
    """

    url: str
    token: str = field(repr=False)
    timeout: float = 5.0
    retry_for: float = 60.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    @classmethod
    def from_env(cls, **options: Any) -> RunsClient:
        missing = [n for n in ("OPSBOOK_RUNS_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(n)]
        if missing:
            raise OpsbookError(
                f"{' and '.join(missing)} not set: the runs service is reached from an engineer's "
                "server, where the hub sets them"
            )
        return cls(os.environ["OPSBOOK_RUNS_URL"], os.environ["JUPYTERHUB_API_TOKEN"], **options)

    # --- transport ---

    def call(
        self,
        method: str,
        path: str,
        body: wire.Wire | None,
        reply: type[W],
        *,
        timeout: float | None = None,
    ) -> W:
        """One API call, retried while the service does not answer; refusals raise RunsError.
        `timeout`: seconds for one answer, when the service's work takes longer than most."""
        url = f"{self.url.rstrip('/')}/{wire.API_PATH}/{path}"
        headers = {"Authorization": f"token {self.token}"}
        payload = body.to_dict() if body is not None else None
        deadline = time.monotonic() + self.retry_for
        pause = 0.2
        while True:
            try:
                answer = self.session.request(
                    method, url, json=payload, headers=headers, timeout=timeout or self.timeout
                )
            except requests.RequestException as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if answer.status_code not in RETRY_STATUSES or _final(answer):
                    return self._read(answer, reply)
                problem = _unavailable(answer)
            if time.monotonic() + pause > deadline:
                raise LedgerUnavailable(
                    f"the runs service at {self.url} did not answer {method} {path} for "
                    f"{self.retry_for:.0f} s ({problem})"
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    @staticmethod
    def _read(answer: requests.Response, reply: type[W]) -> W:
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.ok:
            return reply.from_dict(body)
        try:
            error = wire.ErrorReply.from_body(body)
        except wire.WireError:
            error = wire.ErrorReply(
                status=answer.status_code,
                code=wire.ErrorCode.INTERNAL,
                message=f"HTTP {answer.status_code} from the runs service: {answer.text[:200]}",
            )
        raise RunsError(error)

    # --- the API ---

    def me(self) -> wire.Me:
        return self.call("GET", wire.ROUTE_ME, None, wire.Me)

    def oncall(self) -> list[str]:
        return self.call("GET", wire.ROUTE_ONCALL, None, wire.Oncall).users

    def stacks(self) -> wire.StackList:
        """The stacks a run may be started on, with their environment, production flag and
        hosts, as the service resolves them from the inventory."""
        return self.call("GET", wire.ROUTE_STACKS, None, wire.StackList)

    def runs(self) -> list[wire.Run]:
        return self.call("GET", wire.ROUTE_RUNS, None, wire.RunList).runs

    def run(self, run_id: int) -> wire.Run:
        return self.call("GET", _run(run_id), None, wire.Run)

    def events(self, run_id: int, since: int = 0) -> Iterator[wire.Event]:
        """Every event of the run after `since`, oldest first, page by page."""
        route = wire.ROUTE_EVENTS.format(run_id=run_id)
        while True:
            path = f"{route}?{urlencode({'since': since})}"
            page = self.call("GET", path, None, wire.EventPage)
            yield from page.events
            if not page.more:
                return
            since = page.next_since

    def create(self, request: wire.CreateRun) -> wire.Run:
        """Start a run: the service resolves the stack, checks the caller and plans the batches."""
        return self.call("POST", wire.ROUTE_RUNS, request, wire.Run)

    def append(self, run_id: int, events: Sequence[wire.EventIn]) -> wire.AppendResult:
        body = wire.AppendEvents(events=list(events))
        return self.call("POST", wire.ROUTE_EVENTS.format(run_id=run_id), body, wire.AppendResult)

    def start_batch(self, run_id: int, number: int, hosts: Sequence[str]) -> wire.Run:
        """Batch `number` (from 1) starts, on `hosts` (all of it, or its hosts in doubt)."""
        body = wire.BatchStart(hosts=list(hosts))
        return self.call("POST", _batch(run_id, number, "start"), body, wire.Run)

    def finish_batch(
        self, run_id: int, number: int, results: Sequence[wire.HostResult]
    ) -> wire.Run:
        body = wire.BatchFinish(results=list(results))
        return self.call("POST", _batch(run_id, number, "finish"), body, wire.Run)

    def gate(self, run_id: int, number: int, report: wire.GateReport) -> wire.Run:
        return self.call("POST", _batch(run_id, number, "gate"), report, wire.Run)

    def lease(self, run_id: int) -> wire.LeaseGrant:
        return self.call("POST", _action(run_id, "lease"), wire.Empty(), wire.LeaseGrant)

    def note(self, run_id: int, text: str) -> wire.Event:
        return self.call("POST", _action(run_id, "notes"), wire.NoteIn(text=text), wire.Event)

    def handoff(self, run_id: int, to: str, note: str = "") -> wire.Run:
        body = wire.HandoffRequest(to=to, note=note)
        return self.call("POST", _action(run_id, "handoff"), body, wire.Run)

    def pause(self, run_id: int) -> wire.Run:
        return self.call("POST", _action(run_id, "pause"), wire.Empty(), wire.Run)

    def accept(self, run_id: int) -> wire.Run:
        return self.call("POST", _action(run_id, "accept"), wire.Empty(), wire.Run)

    def takeover(self, run_id: int, reason: str) -> wire.Run:
        body = wire.ReasonRequest(reason=reason)
        return self.call("POST", _action(run_id, "takeover"), body, wire.Run)

    def resume(self, run_id: int) -> wire.Run:
        return self.call("POST", _action(run_id, "resume"), wire.Empty(), wire.Run)

    def replan(self, run_id: int, reason: str) -> wire.Run:
        """Plan the batches not yet done again from the inventory as it is now (after a host
        left the stack, say); the ledger records the reason and both plans."""
        body = wire.ReplanRequest(reason=reason)
        return self.call("POST", _action(run_id, "replan"), body, wire.Run)

    def approve(self, run_id: int, reason: str) -> wire.Run:
        """Approve a run awaiting approval (custom:runs:production; never the run's requester
        or owner: 409 naming who else may). The reason goes into the ledger; once enough
        distinct engineers approved, the run is running and its requester holds the lease."""
        body = wire.ApprovalDecision(reason=reason)
        return self.call("POST", _action(run_id, "approve"), body, wire.Run)

    def reject(self, run_id: int, reason: str) -> wire.Run:
        """Reject a run awaiting approval (as approve): it ends `rejected`, the reason its
        summary."""
        body = wire.ApprovalDecision(reason=reason)
        return self.call("POST", _action(run_id, "reject"), body, wire.Run)

    def update_parameters(self, run_id: int, parameters: dict[str, Any]) -> wire.Run:
        """Add to the run's record what was decided after it started (the approved errata ...):
        each key given replaces that key. Only the owner of the running run."""
        body = wire.ParametersUpdate(parameters=dict(parameters))
        return self.call("POST", _action(run_id, "parameters"), body, wire.Run)

    def certificate(self, public_key: str, run_id: int | None = None) -> wire.Certificate:
        """An SSH user certificate for `public_key` (one OpenSSH line, never the private key).

        The service chooses its principals from the caller's scopes: the non-production
        environments; with `run_id`, also that run's environment,
        if the caller owns it, it is production, running and its lease holds (else 409, why).
        opsbook.sshcert.ensure_certificate is what plays call."""
        body = wire.CertificateRequest(public_key=public_key, run_id=run_id)
        return self.call("POST", wire.ROUTE_SSH_CERTIFICATE, body, wire.Certificate)

    def promote_errata(
        self,
        environment: str,
        errata: Sequence[tuple[str, str]],
        *,
        run_id: int | None = None,
        reason: str = "",
    ) -> wire.Promotion:
        """Promote (package, version) pairs into `environment`'s suite of the package repository:
        the service checks who may (production: only the owner of the approved, running
        production run `run_id` of that environment) and performs it on the repository host;
        the answer says what was promoted and what was there already (403/409 why not; 502/503
        if the repository failed or is unreachable: then nothing was promoted)."""
        body = wire.PromotionRequest(
            environment=environment,
            errata=[wire.ErratumVersion(package=p, version=v) for p, v in errata],
            run_id=run_id,
            reason=reason,
        )
        # The service answers once the repository host has signed the suite: wait for that,
        # or a retry would report the versions it just promoted as "unchanged".
        return self.call(
            "POST", wire.ROUTE_PROMOTIONS, body, wire.Promotion, timeout=PROMOTION_TIMEOUT
        )

    def promotions(
        self, *, environment: str | None = None, run_id: int | None = None
    ) -> wire.PromotionList:
        """The recorded promotions, newest first (of one environment, or one run)."""
        query = {
            key: value
            for key, value in (("environment", environment), ("run_id", run_id))
            if value is not None
        }
        path = wire.ROUTE_PROMOTIONS + (f"?{urlencode(query)}" if query else "")
        return self.call("GET", path, None, wire.PromotionList)

    def ssh_ca(self) -> wire.SshCa:
        """The user CA's public key (what the fleet's sshd trusts); no sign-in needed."""
        return self.call("GET", wire.ROUTE_SSH_CA, None, wire.SshCa)

    def finish(self, run_id: int, outcome: wire.RunState, summary: str) -> wire.Run:
        body = wire.FinishRequest(outcome=outcome, summary=summary)
        return self.call("POST", _action(run_id, "finish"), body, wire.Run)

    def abort(self, run_id: int, reason: str) -> wire.Run:
        body = wire.ReasonRequest(reason=reason)
        return self.call("POST", _action(run_id, "abort"), body, wire.Run)
