"""A login storm: many engineers sign in and start their servers at the same instant.

What the start of an incident looks like to the hub (jupyterhub#1203: a hundred simultaneous logins
broke proxy calls). Each engineer is a thread with a browser session of their own: the provider's
real login form, the hub's callback, a token, `POST /hub/api/users/<name>/server`, then
`GET /user/<name>/api/status` through the proxy until it answers 200. Every answer any of them gets
(redirects and the provider's pages included) is looked at: a 5xx is an error, whatever happens
after it. Used by the e2e test (ten engineers) and `make bench` (thirty).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from .hubclient import HubUser

POLL = 0.1  # seconds between polls of a starting server


@dataclass
class Engineer:
    """One engineer of the storm: their session, and what happened to them."""

    user: HubUser
    ready_after: float | None = None  # seconds from the release to a working server
    errors: list[str] = field(default_factory=list)
    step: str = "not released"  # what they were doing, for the error message

    def watch(self, response: requests.Response, *_args, **_kwargs) -> None:
        """A requests hook on every answer of the session: remember server errors."""
        if response.status_code >= 500:
            self.errors.append(f"{response.status_code} {response.request.method} {response.url}")

    def storm(self, password: str, released: float, deadline: float) -> None:
        """Sign in, start the server, wait for it to answer; never raises (errors are kept)."""
        try:
            self._storm(password, released, deadline)
        except Exception as error:  # every failure is a result of the storm, kept
            self.errors.append(f"{self.step}: {type(error).__name__}: {error}")

    def _storm(self, password: str, released: float, deadline: float) -> None:
        user = self.user
        self.step = "signing in"
        answer = user.sign_in(password)
        if not answer.is_redirect:
            raise RuntimeError(f"sign-in ended at {answer.status_code} {answer.url}")
        self.step = "asking for a token"
        token = user.new_token("login storm")
        self.step = "starting the server"
        # The hub answers once the server is up or after its slow_spawn_timeout (10 s): 202.
        started = user.api("POST", f"/users/{user.name}/server", timeout=60)
        if started.status_code not in (201, 202):
            raise RuntimeError(f"start: {started.status_code} {started.text[:200]}")
        status = f"{user.hub_url}/user/{user.name}/api/status"
        headers = {"Authorization": f"token {token}"}
        self.step = "waiting for the server"
        while time.monotonic() < deadline:
            try:
                reply = user.session.get(status, headers=headers, timeout=10, allow_redirects=False)
                if reply.status_code == 200:
                    self.ready_after = time.monotonic() - released
                    return
            except requests.RequestException:
                pass  # the route is not there yet
            time.sleep(POLL)
        raise TimeoutError(f"{user.name}'s server did not answer before the deadline")


@dataclass
class Storm:
    engineers: list[Engineer]

    @property
    def waits(self) -> list[float]:
        return [e.ready_after for e in self.engineers if e.ready_after is not None]

    @property
    def errors(self) -> dict[str, list[str]]:
        return {e.user.name: e.errors for e in self.engineers if e.errors}


def login_storm(hub_url: str, usernames: list[str], password: str, timeout: float) -> Storm:
    """Release every engineer at once; wait until each has a server or `timeout` s have passed."""
    engineers = []
    for name in usernames:
        engineer = Engineer(HubUser(hub_url, name))
        engineer.user.session.hooks["response"].append(engineer.watch)
        engineers.append(engineer)
    release = threading.Barrier(len(engineers) + 1)
    moment: list[float] = []

    def run(engineer: Engineer) -> None:
        release.wait()
        engineer.storm(password, moment[0], moment[0] + timeout)

    threads = [threading.Thread(target=run, args=(e,), daemon=True) for e in engineers]
    for thread in threads:
        thread.start()
    moment.append(time.monotonic())
    release.wait()
    for thread in threads:
        thread.join(timeout + 60)
    return Storm(engineers)


def stop_servers(storm: Storm, timeout: float = 120) -> None:
    """Stop every server the storm started, in parallel; wait until the hub has none of them."""
    started = [e.user for e in storm.engineers if e.ready_after is not None]
    with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
        list(pool.map(lambda user: user.stop_server(timeout), started))
