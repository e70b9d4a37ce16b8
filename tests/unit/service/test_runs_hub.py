"""The service's real hub clients (HubOAuth identity, on-call group, webhook) against a fake hub.

The fake hub answers the two hub API calls the service makes, as JupyterHub 5 does:
GET /hub/api/user (whose token is this: name and scopes) and GET /hub/api/groups/<group>; and a
fake chat server records webhook posts. All are routes on the test's own loopback server.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fake_alertmanager import FakeAlertmanager
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import RequestHandler, create_signed_value

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import ErrorCode, Me, Run, RunState
from opsbook.service.app import Context, make_app
from opsbook.service.identity import HubIdentity, make_hub_auth
from opsbook.service.notify import Notifier
from opsbook.service.oncall import HubOncall
from opsbook.service.rules import Refused
from opsbook.service.settings import load
from opsbook.service.store import Store

SERVICE_TOKEN = "service-token-0123456789abcdef"
TOKENS = {
    "erin-notebook-token": {
        "kind": "user",
        "name": "erin",
        "groups": ["ops"],
        "scopes": [SCOPE_READ, SCOPE_WRITE, "access:services!service=runs", "read:users:name!user"],
    },
    **{
        f"{name}-token": {
            "kind": "user",
            "name": name,
            "groups": ["oncall"],
            "scopes": [SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER],
        }
        for name in ("alice", "bob", "dave")
    },
}
COOKIE_SECRET = b"x" * 32


class FakeHub:
    def __init__(self) -> None:
        self.user_calls = 0
        self.group_calls = 0
        self.oncall = ["alice", "bob"]
        self.down = False
        self.user_down = False
        self.hooks: list[dict] = []


class UserApi(RequestHandler):
    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    def get(self) -> None:
        self.hub.user_calls += 1
        if self.hub.user_down:
            self.set_status(502)
            return
        token = self.request.headers.get("Authorization", "").removeprefix("token ")
        if token not in TOKENS:
            self.set_status(403)
            self.finish(json.dumps({"status": 403, "message": "Missing or invalid credentials"}))
            return
        self.finish(json.dumps(TOKENS[token]))


class GroupApi(RequestHandler):
    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    def get(self, name: str) -> None:
        self.hub.group_calls += 1
        if self.request.headers.get("Authorization") != f"token {SERVICE_TOKEN}":
            self.set_status(403)
        elif self.hub.down:
            self.set_status(502)
        elif name != "oncall":
            self.set_status(404)
        else:
            self.finish(json.dumps({"kind": "group", "name": name, "users": self.hub.oncall}))


class Hook(RequestHandler):
    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    def post(self) -> None:
        self.hub.hooks.append(json.loads(self.request.body))


class HubClientsTest(AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _inventory(self, inventory) -> None:
        """conftest.py's inventory (pytest sets it before setUp runs)."""
        self.inventory = inventory

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.hub = FakeHub()
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        self.ctx.executor.shutdown()
        self.ctx.store.close()
        self.tmp.cleanup()

    def get_app(self):
        port = self.get_http_port()
        settings = load(
            {
                "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
                "JUPYTERHUB_API_URL": f"http://127.0.0.1:{port}/hub/api",
                "RUNS_DATABASE_URL": f"sqlite:///{Path(self.tmp.name) / 'runs.sqlite'}",
            }
        )
        hub_auth = make_hub_auth(settings)
        self.ctx = Context(
            store=Store(
                settings["RUNS_DATABASE_URL"],
                fleet=self.inventory.current,
                alertmanager=FakeAlertmanager(),
            ),
            identity=HubIdentity(hub_auth),
            oncall=HubOncall(settings["JUPYTERHUB_API_URL"], SERVICE_TOKEN, "oncall"),
            notifier=Notifier(f"http://127.0.0.1:{port}/hook", public_url="https://ops.example"),
            hub_auth=hub_auth,
        )
        app = make_app(self.ctx, cookie_secret=COOKIE_SECRET)
        app.add_handlers(
            ".*",
            [
                (r"/hub/api/user", UserApi, {"hub": self.hub}),
                (r"/hub/api/groups/([^/]+)", GroupApi, {"hub": self.hub}),
                (r"/hook", Hook, {"hub": self.hub}),
            ],
        )
        return app

    def api(self, method: str, path: str, token: str | None, body=None):
        headers = {"Authorization": f"token {token}"} if token else {}
        return self.fetch(
            f"/services/runs/api/{path}",
            method=method,
            headers=headers,
            body=None if method == "GET" else json.dumps(body or {}),
            follow_redirects=False,
        )

    def test_a_notebook_token_is_checked_at_the_hub_once_per_cache_period(self):
        for _ in range(3):
            response = self.api("GET", "me", "erin-notebook-token")
            assert response.code == 200
        assert Me.from_dict(json.loads(response.body)) == Me(
            name="erin", scopes=[SCOPE_READ, SCOPE_WRITE]
        )
        assert self.hub.user_calls == 1  # cached (RUNS_AUTH_CACHE_SECONDS)

    def test_a_hub_that_does_not_answer_gives_503_not_a_crash(self):
        self.hub.user_down = True
        response = self.api("GET", "runs", "erin-notebook-token")
        assert response.code == 503
        assert json.loads(response.body)["error"]["code"] == "unavailable"

    def test_an_unknown_token_is_not_signed_in(self):
        response = self.api("GET", "runs", "stolen-or-expired")
        assert response.code == 401
        assert json.loads(response.body)["error"]["code"] == "unauthenticated"

    def test_a_browser_without_a_cookie_goes_to_the_hubs_oauth(self):
        response = self.fetch("/services/runs/", follow_redirects=False)
        assert response.code == 302
        location = response.headers["Location"]
        assert location.startswith("/hub/api/oauth2/authorize?")
        assert "client_id=service-runs" in location and "state=" in location
        assert "service-runs-oauth-state" in response.headers.get("Set-Cookie", "")

    def test_a_cookie_write_without_xsrf_is_not_accepted(self):
        # A POST carrying only a (forged or stolen) service cookie, no XSRF token: not signed in.
        response = self.fetch(
            "/services/runs/api/runs",
            method="POST",
            body="{}",
            headers={"Cookie": "service-runs=whatever"},
        )
        assert response.code == 401

    def test_erin_starts_a_run_with_her_notebook_token_and_the_webhook_hears_it(self):
        body = {"runbook": "patching", "stack": "web"}
        response = self.api("POST", "runs", "erin-notebook-token", body)
        assert response.code == 201, response.body
        run = Run.from_dict(json.loads(response.body))
        assert run.owner == "erin"
        self.wait_for(lambda: self.hub.hooks)
        (hook,) = self.hub.hooks
        assert hook["text"].startswith(f"run {run.id} (patching on web, staging) ")
        assert f"https://ops.example/services/runs/runs/{run.id}" in hook["text"]
        assert "erin started patching" in hook["text"]

    def browser(self, user: str) -> dict[str, str]:
        """The cookies a browser of `user` holds after the hub's OAuth: our signed cookie with
        their hub token (what OAuthCallback sets)."""
        value = create_signed_value(COOKIE_SECRET, "service-runs", f"{user}-token").decode()
        return {"service-runs": value}

    def page(self, method: str, path: str, cookies: dict[str, str], body: dict | None = None):
        cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        return self.fetch(
            f"/services/runs/{path}",
            method=method,
            headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
            body=None if body is None else urlencode(body),
            follow_redirects=False,
        )

    def test_the_approval_form_is_xsrf_protected_by_huboauth(self):
        response = self.api("POST", "runs", "alice-token", {"runbook": "patching", "stack": "db"})
        run = Run.from_dict(json.loads(response.body))
        assert run.state is RunState.AWAITING_APPROVAL
        cookies = self.browser("bob")
        response = self.page("GET", f"runs/{run.id}", cookies)
        assert response.code == 200, response.body
        html = response.body.decode()
        (token,) = re.findall(r'name="_xsrf" value="([^"]+)"', html)
        jar = SimpleCookie()
        for header in response.headers.get_list("Set-Cookie"):
            jar.load(header)
        assert jar["_xsrf"]["path"] == "/services/runs/"
        with_xsrf = {**cookies, "_xsrf": jar["_xsrf"].value}
        # a forged post (another site's form: the cookies go along, the token does not)
        for forged in (
            self.page("POST", f"runs/{run.id}/approve", with_xsrf, {"reason": "forged"}),
            # a token from bob's page is bound to bob's sign-in: no good with dave's cookie
            self.page(
                "POST",
                f"runs/{run.id}/approve",
                self.browser("dave"),
                {"reason": "x", "_xsrf": token},
            ),
            self.page("POST", f"runs/{run.id}/reject", with_xsrf, {"reason": "x", "_xsrf": "1|a"}),
        ):
            assert forged.code == 403 and "XSRF" in forged.body.decode()
        assert self.ctx.store.get_run(run.id).state is RunState.AWAITING_APPROVAL
        # the page's own form
        response = self.page(
            "POST", f"runs/{run.id}/approve", with_xsrf, {"reason": "ok", "_xsrf": token}
        )
        assert response.code == 303, response.body
        assert response.headers["Location"] == f"/services/runs/runs/{run.id}?decided=approve"
        run = self.ctx.store.get_run(run.id)
        assert (run.state, [a.approver for a in run.approvals]) == (RunState.RUNNING, ["bob"])
        # the webhook heard the request with the page's link
        self.wait_for(lambda: len(self.hub.hooks) >= 3)
        request = next(h["text"] for h in self.hub.hooks if "APPROVAL REQUESTED" in h["text"])
        assert f"at https://ops.example/services/runs/runs/{run.id}" in request

    def test_oncall_comes_from_the_hub_group_and_is_cached(self):
        for _ in range(2):
            response = self.api("GET", "oncall", "erin-notebook-token")
            assert json.loads(response.body) == {"group": "oncall", "users": ["alice", "bob"]}
        assert self.hub.group_calls == 1

    @gen_test
    async def test_oncall_fails_closed(self):
        self.hub.down = True
        try:
            await self.ctx.oncall.members()
        except Refused as error:
            assert (error.status, error.code) == (503, ErrorCode.UNAVAILABLE)
            assert "HTTP 502" in error.message
        else:
            raise AssertionError("a hub that does not answer must not give an on-call list")
        self.hub.down = False
        missing = HubOncall(self.ctx.oncall.api_url, SERVICE_TOKEN, "no-such-group")
        assert await missing.members() == []

    @gen_test
    async def test_a_webhook_that_does_not_answer_is_only_logged(self):
        notifier = Notifier("http://127.0.0.1:9/nothing-listens", timeout=1)
        notifier.send("hello")
        for _ in range(100):
            if notifier.failed:
                break
            await _sleep(0.02)
        assert (notifier.failed, notifier.sent, notifier.in_flight) == (1, 0, 0)

    def wait_for(self, condition) -> None:
        for _ in range(100):
            if condition():
                return
            self.io_loop.run_sync(lambda: _sleep(0.02))
        raise AssertionError("timed out")


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
