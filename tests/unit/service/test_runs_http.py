"""The runs service's HTTP app (opsbook.service.app) with tornado's test tools and a fake hub.

The fake stands in for the hub's token check only (token -> user and scopes, as the hub's
/hub/api/user answers): what is tested is our logic on top of it, permissions, errors, the wire
format and the pages. The store is the real one on a temporary SQLite file, resolving runs from
conftest.py's inventory (stack web: web-1 ... web-5 in staging; db: db-1 ... db-3 in production).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fake_alertmanager import FakeAlertmanager
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import RequestHandler

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import (
    AppendResult,
    ErrorCode,
    ErrorReply,
    EventPage,
    Health,
    LeaseGrant,
    Me,
    Oncall,
    Run,
    RunList,
    RunOptions,
    RunState,
    StackList,
    StackView,
)
from opsbook.service.app import Context, make_app, start_sweeper
from opsbook.service.notify import Notifier
from opsbook.service.oncall import StaticOncall
from opsbook.service.rules import Caller, Refused
from opsbook.service.store import Store

PREFIX = "/services/runs/"
API = f"{PREFIX}api"
ONCALL = [SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER]
USERS = {
    "alice-token": ("alice", ONCALL),
    "bob-token": ("bob", ONCALL),
    "erin-token": ("erin", [SCOPE_READ, SCOPE_WRITE]),
    "carol-token": ("carol", [SCOPE_READ]),
    "mallory-token": ("mallory", []),
}
PLAN = [["web-1", "web-2"], ["web-3"]]
WEB = [f"web-{n}" for n in range(1, 6)]
DB = ["db-1", "db-2", "db-3"]
OPTIONS = {"batch_size": 2, "limit": ["web-1", "web-2", "web-3"]}  # of stack web: PLAN


class FakeHubIdentity:
    """Token -> user and scopes, like the hub's answer; browsers are sent to a fake login."""

    async def caller(self, handler: RequestHandler) -> Caller | None:
        header = handler.request.headers.get("Authorization", "")
        user = USERS.get(header.removeprefix("token ").strip())
        return Caller(user[0], frozenset(user[1])) if user else None

    def login_url(self, handler: RequestHandler) -> str:
        return f"/hub/api/oauth2/authorize?next={handler.request.uri}"


class DownOncall:
    group = "oncall"

    async def members(self) -> list[str]:
        raise Refused(503, ErrorCode.UNAVAILABLE, "cannot tell who is on call: the hub is down")


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__("http://chat.invalid/hook")
        self.messages: list[str] = []

    def send(self, text: str) -> None:
        self.messages.append(text)


class RunsAppTest(AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _inventory(self, inventory) -> None:
        """conftest.py's inventory (pytest sets it before setUp runs)."""
        self.inventory = inventory

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.alertmanager = FakeAlertmanager()
        self.store = Store(
            f"sqlite:///{Path(self.tmp.name) / 'runs.sqlite'}",
            fleet=self.inventory.current,
            alertmanager=self.alertmanager,
            lease_seconds=60,
        )
        self.notifier = RecordingNotifier()
        self.ctx = Context(
            store=self.store,
            identity=FakeHubIdentity(),
            oncall=StaticOncall(["alice", "bob"]),
            notifier=self.notifier,
            prefix=PREFIX,
        )
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        self.ctx.executor.shutdown()
        self.store.close()
        self.tmp.cleanup()

    def get_app(self):
        return make_app(self.ctx)

    # --- helpers ----------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, who: str | None = "alice", body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"token {who}-token"} if who else {}
        if body is not None or method == "POST":
            headers["Content-Type"] = "application/json"
        response = self.fetch(
            path if path.startswith("/") else f"{API}/{path}",
            method=method,
            headers=headers,
            body=None if method == "GET" else json.dumps(body if body is not None else {}),
            follow_redirects=False,
        )
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = response.body.decode()
        return response.code, data

    def error(self, method: str, path: str, who: str | None, body: Any = None) -> ErrorReply:
        code, data = self.call(method, path, who, body)
        reply = ErrorReply.from_body(data)
        assert reply.status == code, (code, data)
        return reply

    def create(self, who: str = "alice", **overrides) -> Run:
        body = {"runbook": "patching", "stack": "web", "options": OPTIONS}
        body.update(overrides)
        code, data = self.call("POST", "runs", who, body)
        assert code == 201, data
        return Run.from_dict(data)

    def post_run(self, run: Run, what: str, who: str = "alice", body: Any = None) -> Run:
        code, data = self.call("POST", f"runs/{run.id}/{what}", who, body or {})
        assert code == 200, data
        return Run.from_dict(data)

    def batch(self, run: Run, number: int, who: str = "alice") -> Run:
        self.post_run(run, f"batches/{number}/start", who)
        hosts = run.batches[number - 1].hosts
        events = [
            {"type": "runner_on_ok", "uuid": f"{run.id}-{h}", "host": h, "task": "Upgrade"}
            for h in hosts
        ]
        code, data = self.call("POST", f"runs/{run.id}/events", who, {"events": events})
        assert code == 200 and AppendResult.from_dict(data).stored == len(hosts)
        results = [{"host": h, "state": "ok"} for h in hosts]
        return self.post_run(run, f"batches/{number}/finish", who, {"results": results})

    # --- tests ------------------------------------------------------------------------------------

    def test_health_needs_no_sign_in(self):
        code, data = self.call("GET", "health", who=None)
        assert code == 200
        assert Health.from_dict(data) == Health(status="ok", schema_version=6, database="sqlite")

    def test_not_signed_in(self):
        reply = self.error("GET", "runs", who=None)
        assert (reply.status, reply.code) == (401, ErrorCode.UNAUTHENTICATED)
        assert "JUPYTERHUB_API_TOKEN" in reply.message
        # a browser is sent to the hub's login
        response = self.fetch(PREFIX, follow_redirects=False)
        assert response.code == 302
        assert response.headers["Location"].startswith("/hub/api/oauth2/authorize")

    def test_someone_without_the_read_scope(self):
        reply = self.error("GET", "runs", who="mallory")
        assert (reply.status, reply.scope) == (403, SCOPE_READ)
        code, page = self.call("GET", PREFIX, who="mallory")
        assert code == 403 and "custom:runs:read" in page and "<html" in page

    def test_me(self):
        _, data = self.call("GET", "me", who="erin")
        assert Me.from_dict(data) == Me(name="erin", scopes=[SCOPE_READ, SCOPE_WRITE])

    def test_oncall(self):
        _, data = self.call("GET", "oncall", who="carol")
        assert Oncall.from_dict(data) == Oncall(group="oncall", users=["alice", "bob"])

    def test_a_viewer_reads_everything_and_gets_403_on_every_write(self):
        run = self.create()
        self.call("POST", f"runs/{run.id}/notes", "alice", {"text": "hello"})
        assert self.call("GET", "runs", "carol")[0] == 200
        assert self.call("GET", f"runs/{run.id}", "carol")[0] == 200
        assert self.call("GET", f"runs/{run.id}/events", "carol")[0] == 200
        assert self.call("GET", PREFIX, "carol")[0] == 200
        assert self.call("GET", f"{PREFIX}runs/{run.id}", "carol")[0] == 200
        writes = [
            ("runs", {"runbook": "p", "stack": "web"}),
            (f"runs/{run.id}/events", {"events": [{"type": "x"}]}),
            (f"runs/{run.id}/batches/1/start", {}),
            (f"runs/{run.id}/batches/1/finish", {"results": []}),
            (f"runs/{run.id}/batches/1/gate", {"passed": True}),
            (f"runs/{run.id}/lease", {}),
            (f"runs/{run.id}/notes", {"text": "hi"}),
            (f"runs/{run.id}/handoff", {"to": "carol", "note": ""}),
            (f"runs/{run.id}/pause", {}),
            (f"runs/{run.id}/accept", {}),
            (f"runs/{run.id}/takeover", {"reason": "x"}),
            (f"runs/{run.id}/resume", {}),
            (f"runs/{run.id}/finish", {"outcome": "failed"}),
            (f"runs/{run.id}/abort", {"reason": "x"}),
            (f"runs/{run.id}/replan", {"reason": "x"}),
        ]
        for path, body in writes:
            reply = self.error("POST", path, "carol", body)
            assert (reply.status, reply.code, reply.scope) == (
                403,
                ErrorCode.MISSING_SCOPE,
                SCOPE_WRITE,
            ), path
            assert "carol may not" in reply.message
        assert self.store.get_run(run.id).state is RunState.RUNNING

    def test_erin_may_not_start_on_production_nor_take_over(self):
        # whatever environment and plan the body declares: the inventory puts db in production
        body = {"runbook": "patching", "stack": "db", "environment": "staging", "plan": [["db-1"]]}
        reply = self.error("POST", "runs", "erin", body)
        assert (reply.status, reply.scope) == (403, SCOPE_PRODUCTION)
        assert SCOPE_PRODUCTION in reply.message and "production" in reply.message
        assert self.store.list_runs() == []
        run = self.create("alice", options={})
        self.store.now = lambda: time_after(120)
        self.store.expire_leases()
        reply = self.error("POST", f"runs/{run.id}/takeover", "erin", {"reason": "alice left"})
        assert (reply.status, reply.scope) == (403, SCOPE_TAKEOVER)
        assert self.post_run(run, "takeover", "bob", {"reason": "alice left"}).owner == "bob"

    def test_the_whole_handoff_through_the_api(self):
        run = self.create()
        assert run.state is RunState.RUNNING and run.owner == "alice"
        run = self.batch(run, 1)
        reply = self.error("POST", f"runs/{run.id}/handoff", "alice", {"to": "erin", "note": "x"})
        assert (reply.status, reply.code) == (400, ErrorCode.NOT_ON_CALL)
        assert "on call now: alice, bob" in reply.message
        run = self.post_run(run, "handoff", "alice", {"to": "bob", "note": "web-3 <b>slow</b>"})
        code, data = self.call("POST", f"runs/{run.id}/lease", "alice")
        assert LeaseGrant.from_dict(data).handoff.to == "bob"
        run = self.post_run(run, "pause", "alice")
        assert run.state is RunState.HANDED_OFF
        reply = self.error("POST", f"runs/{run.id}/accept", "erin")
        assert (reply.status, reply.code) == (409, ErrorCode.NOT_HANDED_TO_YOU)
        run = self.post_run(run, "accept", "bob")
        assert run.owner == "bob"
        reply = self.error("POST", f"runs/{run.id}/lease", "alice")
        assert (reply.status, reply.code) == (409, ErrorCode.NOT_OWNER)
        run = self.batch(run, 2, "bob")
        run = self.post_run(run, "finish", "bob", {"outcome": "completed", "summary": "ok"})
        assert run.state is RunState.COMPLETED
        assert [b.started_by for b in run.batches] == ["alice", "bob"]
        reply = self.error("POST", f"runs/{run.id}/resume", "bob")
        assert (reply.status, reply.code) == (409, ErrorCode.RUN_FINISHED)
        assert "already completed" in reply.message
        # the webhook heard the start, the handoff, the accept and the finish
        said = "\n".join(self.notifier.messages)
        for words in ("alice started", "handed the run to bob", "bob accepted", "completed"):
            assert words in said
        assert len(self.notifier.messages) == 4
        # the status pages show it, escaped
        code, page = self.call("GET", f"{PREFIX}runs/{run.id}", "carol")
        assert code == 200 and "web-3 &lt;b&gt;slow&lt;/b&gt;" in page and "<b>slow</b>" not in page
        code, page = self.call("GET", PREFIX, "carol")
        assert code == 200 and f"runs/{run.id}" in page

    def test_a_second_start_names_the_run_and_its_owner(self):
        run = self.create("alice")
        reply = self.error(
            "POST",
            "runs",
            "bob",
            {"runbook": "patching", "stack": "web"},
        )
        assert (reply.status, reply.code, reply.run_id) == (409, ErrorCode.RUN_ACTIVE, run.id)
        assert f"run {run.id}" in reply.message and "owner alice" in reply.message

    def test_bad_bodies_say_what_was_wrong(self):
        response = self.fetch(
            f"{API}/runs",
            method="POST",
            body="{not json",
            headers={"Authorization": "token alice-token"},
        )
        assert response.code == 400 and b"not JSON" in response.body
        reply = self.error("POST", "runs", "alice", {"runbook": "p", "stack": 5})
        assert reply.status == 400 and reply.message == "stack: expected a string, got 5"
        run = self.create()
        reply = self.error("POST", f"runs/{run.id}/finish", "alice", {"outcome": "done"})
        assert reply.status == 400 and "outcome: expected one of" in reply.message
        reply = self.error("POST", f"runs/{run.id}/takeover", "bob", {})
        assert reply.status == 400 and "reason: missing" in reply.message
        reply = self.error("GET", f"runs/{run.id}/events?since=x", "alice")
        assert reply.status == 400 and "since" in reply.message

    def test_unknown_things(self):
        assert self.error("GET", "runs/42", "alice").code is ErrorCode.NOT_FOUND
        assert self.error("GET", "nothing/here", "alice").status == 404
        assert self.error("GET", f"runs/{10**20}", "alice").status == 404
        code, page = self.call("GET", f"{PREFIX}runs/42", "alice")
        assert code == 404 and "there is no run 42" in page

    def test_events_are_paged_and_idempotent(self):
        run = self.create()
        events = [{"type": "runner_on_ok", "uuid": f"u{i}", "host": "web-1"} for i in range(30)]
        code, data = self.call("POST", f"runs/{run.id}/events", "alice", {"events": events})
        assert AppendResult.from_dict(data) == AppendResult(stored=30, duplicates=0, last_seq=31)
        code, data = self.call("POST", f"runs/{run.id}/events", "alice", {"events": events})
        assert code == 200
        assert AppendResult.from_dict(data) == AppendResult(stored=0, duplicates=30, last_seq=31)
        _, data = self.call("GET", f"runs/{run.id}/events?since=5&limit=10", "carol")
        page = EventPage.from_dict(data)
        assert [e.seq for e in page.events] == list(range(6, 16)) and page.more
        assert page.next_since == 15
        too_many = {"events": [{"type": "x"}] * 1001}
        assert self.error("POST", f"runs/{run.id}/events", "alice", too_many).status == 400

    def test_listing_runs(self):
        first = self.create(stack="web")
        self.post_run(first, "abort", "alice", {"reason": "test"})
        second = self.create(stack="db", options={})
        code, data = self.call("GET", "runs", "carol")
        assert [r.id for r in RunList.from_dict(data).runs] == [second.id, first.id]
        code, data = self.call("GET", "runs?finished=0", "carol")
        assert code == 200
        assert [r.id for r in RunList.from_dict(data).runs] == [second.id]
        _, data = self.call("GET", "runs?stack=web&runbook=patching", "carol")
        assert [r.id for r in RunList.from_dict(data).runs] == [first.id]

    def test_the_stacks_as_the_service_resolves_them(self):
        code, data = self.call("GET", "stacks", "carol")
        assert code == 200
        assert StackList.from_dict(data) == StackList(
            stacks=[
                StackView(name="db", environment="production", production=True, hosts=DB),
                StackView(name="web", environment="staging", production=False, hosts=WEB),
            ],  # not `mixed`: its hosts span two environments
            nonproduction=["staging"],
        )
        assert self.error("GET", "stacks", "mallory").scope == SCOPE_READ

    def test_a_stack_the_inventory_does_not_have_is_refused_and_nothing_recorded(self):
        for stack, words in [
            ("nope", "unknown stack 'nope'; known stacks: db, mixed, web"),
            ("", "stack: expected the name of a stack of the inventory (db, mixed, web)"),
            ("DB", "look-alike of the stack 'db'"),
            ("\uff44\uff42", "look-alike of the stack 'db'"),
            ("db\u200b", "is not a stack name"),
            ("mixed", "hosts are not all in one environment"),
        ]:
            reply = self.error("POST", "runs", "alice", {"runbook": "patching", "stack": stack})
            assert (reply.status, reply.code) == (400, ErrorCode.BAD_REQUEST), stack
            assert words in reply.message, (stack, reply.message)
        reply = self.error(
            "POST", "runs", "alice", {"runbook": "p", "stack": "web", "options": {"batch_size": 0}}
        )
        assert reply.status == 400 and reply.message.startswith("options.batch_size:")
        assert self.store.list_runs() == [] and self.notifier.messages == []

    def test_an_unreadable_inventory_refuses_new_runs_but_the_ledger_still_reads(self):
        run = self.create()
        self.inventory.broken = "no such file or folder"
        reply = self.error("POST", "runs", "bob", {"runbook": "reboot", "stack": "db"})
        assert (reply.status, reply.code) == (503, ErrorCode.UNAVAILABLE)
        assert "test-inventory" in reply.message and "no such file" in reply.message
        assert self.error("GET", "stacks", "carol").status == 503
        _, data = self.call("GET", "runs", "carol")
        assert [r.id for r in RunList.from_dict(data).runs] == [run.id]
        assert self.call("GET", PREFIX, "carol")[0] == 200
        assert self.call("GET", f"{PREFIX}runs/{run.id}", "carol")[0] == 200
        # the run in progress goes on: its owner's kernel needs no inventory
        self.batch(run, 1)

    def test_a_changed_stack_is_refused_at_accept_until_replanned(self):
        run = self.create()
        run = self.batch(run, 1)
        self.post_run(run, "handoff", "alice", {"to": "bob", "note": ""})
        self.post_run(run, "pause", "alice")
        self.inventory.remove_host("web-3", "web")  # web-3 left the stack during the handoff
        reply = self.error("POST", f"runs/{run.id}/accept", "bob")
        assert (reply.status, reply.code) == (409, ErrorCode.PLAN_CHANGED)
        assert "web-3 left stack web" in reply.message and "replan" in reply.message
        reply = self.error("POST", f"runs/{run.id}/replan", "bob", {})
        assert reply.status == 400 and "reason: missing" in reply.message
        run = self.post_run(run, "replan", "bob", {"reason": "web-3 was retired"})
        assert [b.hosts for b in run.batches] == [["web-1", "web-2"]]
        run = self.post_run(run, "accept", "bob")
        assert (run.owner, run.state) == ("bob", RunState.RUNNING)
        run = self.post_run(run, "finish", "bob", {"outcome": "completed"})
        assert run.state is RunState.COMPLETED

    def test_parameters_are_added_to_the_run_by_its_owner(self):
        run = self.create()
        run = self.post_run(run, "parameters", "alice", {"parameters": {"approved": ["b=1"]}})
        assert run.parameters["approved"] == ["b=1"]
        reply = self.error("POST", f"runs/{run.id}/parameters", "alice", {"parameters": []})
        assert reply.status == 400 and "parameters" in reply.message
        reply = self.error("POST", f"runs/{run.id}/parameters", "erin", {"parameters": {"a": 1}})
        assert (reply.status, reply.code) == (409, ErrorCode.NOT_OWNER)

    def test_notes_are_answered_with_the_event(self):
        run = self.create()
        code, data = self.call("POST", f"runs/{run.id}/notes", "erin", {"text": "watching"})
        assert code == 201 and data["actor"] == "erin" and data["type"] == "note"

    def test_handoff_fails_closed_when_the_hub_does_not_say_who_is_on_call(self):
        run = self.create()
        self.ctx.oncall = DownOncall()
        reply = self.error("POST", f"runs/{run.id}/handoff", "alice", {"to": "bob"})
        assert (reply.status, reply.code) == (503, ErrorCode.UNAVAILABLE)
        assert self.store.get_run(run.id).handoff is None

    def test_a_failed_gate_and_an_abort_are_announced_as_failures(self):
        run = self.create()
        self.batch(run, 1)
        self.post_run(run, "batches/1/gate", "alice", {"passed": False, "message": "web-2 down"})
        self.post_run(run, "abort", "alice", {"reason": "gate failed"})
        failures = [m for m in self.notifier.messages if m.startswith("FAILURE")]
        assert len(failures) == 2 and "web-2 down" in failures[0] and "gate failed" in failures[1]

    @gen_test
    async def test_the_sweeper_orphans_runs_and_announces_it(self):
        run = self.store.create_run(
            Caller("alice", frozenset(ONCALL)),
            runbook="patching",
            stack="web",
            options=RunOptions(batch_size=2),
        )
        self.store.now = lambda: time_after(61)
        sweeper = start_sweeper(self.ctx, 0.02)
        try:
            for _ in range(200):
                if self.store.get_run(run.id).state is RunState.ORPHANED:
                    break
                await asyncio.sleep(0.02)
        finally:
            sweeper.stop()
        assert self.store.get_run(run.id).state is RunState.ORPHANED
        for _ in range(50):
            if self.notifier.messages[-1:] and "orphaned" in self.notifier.messages[-1]:
                break
            await asyncio.sleep(0.02)
        assert (
            self.notifier.messages[-1].startswith("FAILURE")
            and "lease" in (self.notifier.messages[-1])
        )

    # --- approvals --------------------------------------------------------------------------------

    def form(self, run: Run, action: str, who: str | None, reason: str = "checked the plan"):
        """The run page's form, as a browser posts it (the fake identity needs no XSRF token:
        test_runs_hub.py has the real HubOAuth refuse a post without one)."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if who:
            headers["Authorization"] = f"token {who}-token"
        return self.fetch(
            f"{PREFIX}runs/{run.id}/{action}",
            method="POST",
            headers=headers,
            body=urlencode({"reason": reason}),
            follow_redirects=False,
        )

    def test_a_production_run_is_approved_by_another_on_call_engineer_through_the_api(self):
        run = self.create("alice", stack="db", options={"batch_size": 2})
        assert (run.state, run.lease_expires_at, run.approvals_needed) == (
            RunState.AWAITING_APPROVAL,
            None,
            1,
        )
        assert self.error("POST", f"runs/{run.id}/lease", "alice").code is (
            ErrorCode.AWAITING_APPROVAL
        )
        reply = self.error("POST", f"runs/{run.id}/batches/1/start", "alice", {})
        assert (reply.status, reply.code) == (409, ErrorCode.AWAITING_APPROVAL)
        reply = self.error("POST", f"runs/{run.id}/approve", "alice", {"reason": "mine"})
        assert (reply.status, reply.code) == (409, ErrorCode.SELF_APPROVAL)
        assert "Ask bob (on call, group oncall)" in reply.message
        for who in ("erin", "carol"):
            reply = self.error("POST", f"runs/{run.id}/approve", who, {"reason": "ok"})
            assert (reply.status, reply.scope) == (403, SCOPE_PRODUCTION)
        reply = self.error("POST", f"runs/{run.id}/approve", "bob", {"reason": ""})
        assert (reply.status, reply.code) == (400, ErrorCode.BAD_REQUEST)
        assert self.error("POST", f"runs/{run.id}/approve", "bob", {}).status == 400
        run = self.post_run(run, "approve", "bob", {"reason": "DBAs agreed"})
        assert (run.state, run.owner, [a.approver for a in run.approvals]) == (
            RunState.RUNNING,
            "alice",
            ["bob"],
        )
        assert self.post_run(run, "approve", "bob", {"reason": "again"}).last_seq == run.last_seq
        assert LeaseGrant.from_dict(self.call("POST", f"runs/{run.id}/lease")[1]).owner == "alice"
        self.batch(run, 1)
        messages = "\n".join(self.notifier.messages)
        assert f"APPROVAL REQUESTED: run {run.id} (patching on db, PRODUCTION)" in messages
        assert f"Approve or reject it at {PREFIX}runs/{run.id}" in messages
        assert "bob approved the run (1 of 1): DBAs agreed" in messages

    def test_a_rejection_and_a_run_not_awaiting_approval(self):
        staging = self.create("erin")
        assert staging.state is RunState.RUNNING and staging.approvals_needed == 0
        reply = self.error("POST", f"runs/{staging.id}/approve", "bob", {"reason": "ok"})
        assert (reply.status, reply.code) == (409, ErrorCode.WRONG_STATE)
        assert "running, not awaiting approval" in reply.message
        run = self.create("alice", stack="db", options={})
        run = self.post_run(run, "reject", "bob", {"reason": "not during the sale"})
        assert (run.state, run.summary) == (
            RunState.REJECTED,
            "rejected by bob: not during the sale",
        )
        assert self.notifier.messages[-1].endswith("bob rejected the run: not during the sale")

    def test_approving_after_the_request_expired_names_when(self):
        run = self.create("alice", stack="db", options={})
        expired_at = datetime.now(UTC) + timedelta(seconds=1800)
        self.store.now = lambda: time_after(1801)
        reply = self.error("POST", f"runs/{run.id}/approve", "bob", {"reason": "late"})
        assert (reply.status, reply.code) == (409, ErrorCode.APPROVAL_EXPIRED)
        assert f"expired at {expired_at:%Y-%m-%d %H:%M}" in reply.message

    def test_the_approval_form_on_the_run_page(self):
        run = self.create(
            "alice", stack="db", options={}, parameters={"approved_errata": ["DSA-5501-1"]}
        )
        code, index = self.call("GET", PREFIX, "carol")
        assert code == 200 and index.index("Awaiting approval (1)") < index.index("In progress")
        assert f'runs/{run.id}">{run.id}</a></td><td>patching</td>' in index
        # bob may decide: the page shows what is approved, and the form; it does not refresh
        code, page = self.call("GET", f"{PREFIX}runs/{run.id}", "bob")
        assert code == 200 and "Awaiting approval</b>: 0 of 1" in page
        assert "<td>batch 1</td><td>db-1</td>" in page and "DSA-5501-1" in page
        assert f'action="{PREFIX}runs/{run.id}/approve"' in page and 'name="_xsrf"' in page
        assert f'formaction="{PREFIX}runs/{run.id}/reject"' in page
        assert 'http-equiv="refresh"' not in page
        # the requester and a viewer see the pending approval and no form, and the page refreshes
        for who, why in (("alice", "you (alice) requested run"), ("carol", SCOPE_PRODUCTION)):
            code, page = self.call("GET", f"{PREFIX}runs/{run.id}", who)
            assert code == 200 and "Awaiting approval</b>" in page and "<form" not in page
            assert "You cannot approve or reject this run" in page and why in page
            assert 'http-equiv="refresh"' in page
        # ... and their posts are refused, saying why, with a link back
        response = self.form(run, "approve", "carol")
        assert response.code == 403 and SCOPE_PRODUCTION in response.body.decode()
        response = self.form(run, "approve", "alice")
        page = response.body.decode()
        assert response.code == 409 and "you (alice) requested run" in page
        assert f'href="{PREFIX}runs/{run.id}">back to the run' in page
        response = self.form(run, "approve", "bob", reason=" ")
        assert response.code == 400 and "reason" in response.body.decode()
        assert self.store.get_run(run.id).approvals == []
        # bob approves from the page: back to the run page, which says so
        response = self.form(run, "approve", "bob", reason="window <b>agreed</b>")
        assert response.code == 303
        assert response.headers["Location"] == f"{PREFIX}runs/{run.id}?decided=approve"
        code, page = self.call("GET", f"{PREFIX}runs/{run.id}?decided=approve", "bob")
        assert "Your approval was recorded." in page and "Approved</b>" in page
        assert "window &lt;b&gt;agreed&lt;/b&gt;" in page and "<b>agreed</b>" not in page
        assert self.store.get_run(run.id).state is RunState.RUNNING
        # a post without a sign-in is refused, not redirected to a login
        assert self.form(run, "reject", None).code == 403

    @gen_test
    async def test_the_sweeper_aborts_runs_whose_approval_expired_and_announces_it(self):
        run = self.store.create_run(
            Caller("alice", frozenset(ONCALL)), runbook="patching", stack="db"
        )
        self.store.now = lambda: time_after(1801)
        sweeper = start_sweeper(self.ctx, 0.02)
        try:
            for _ in range(200):
                if self.store.get_run(run.id).state is RunState.ABORTED:
                    break
                await asyncio.sleep(0.02)
        finally:
            sweeper.stop()
        run = self.store.get_run(run.id)
        assert run.state is RunState.ABORTED and run.summary.startswith("approval expired at")
        for _ in range(50):
            if self.notifier.messages[-1:] and "approval expired" in self.notifier.messages[-1]:
                break
            await asyncio.sleep(0.02)
        assert "nobody decided in time" in self.notifier.messages[-1]


def time_after(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
