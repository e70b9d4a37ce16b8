"""A user of the hub over HTTP, as a browser would be: the provider's real forms, cookies, XSRF.

Redirects are followed by hand so that a test sees where the hub sends someone after login
(their server, the home page, a refusal) without triggering what a browser would do next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from opsbook.runsclient import RunsClient

from .stack import wait_for

TIMEOUT = 10


@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)


def is_button(attributes: dict[str, str]) -> bool:
    """Buttons are left out: pressing the form's plain submit sends none of them."""
    return attributes.get("type") in ("submit", "button")


class FirstFormParser(HTMLParser):
    """The first <form> of a page: its action and the values its inputs would submit."""

    def __init__(self) -> None:
        super().__init__()
        self.form: Form | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.form is None:
            self.form = Form(attributes.get("action", ""))
            self._inside = True
        elif tag == "input" and self._inside and "name" in attributes and not is_button(attributes):
            self.form.fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def first_form(response: requests.Response) -> Form:
    parser = FirstFormParser()
    parser.feed(response.text)
    if parser.form is None:
        raise AssertionError(
            f"no form on {response.url} ({response.status_code}): {response.text[:300]}"
        )
    parser.form.action = urljoin(response.url, parser.form.action or response.url)
    return parser.form


class HubUser:
    """One person's browser session against the hub."""

    def __init__(self, hub_url: str, username: str) -> None:
        self.hub_url = hub_url
        self.name = username
        self.session = requests.Session()
        # A kept-alive connection the proxy closed while the session sat idle (its keep-alive
        # timeout is 5 s) fails the next request with "Remote end closed connection": a browser
        # asks again on a new connection, and so does this session, for idempotent methods.
        again = Retry(total=2, connect=2, read=2, status=0, redirect=0, raise_on_redirect=False)
        self.session.mount("https://", HTTPAdapter(max_retries=again))
        self.session.mount("http://", HTTPAdapter(max_retries=again))

    # --- signing in ---

    def follow(self, response: requests.Response, stop_at_hub: bool = True) -> requests.Response:
        """Follow redirects until the hub sends the browser somewhere past its login pages."""
        login_paths = ("/hub/login", "/hub/oauth_login", "/hub/oauth_callback")
        while response.is_redirect:
            target = urljoin(response.url, response.headers["Location"])
            past_login = not urlparse(target).path.startswith(login_paths)
            if stop_at_hub and target.startswith(self.hub_url) and past_login:
                return response
            response = self.session.get(target, allow_redirects=False, timeout=TIMEOUT)
        return response

    def open_login(self) -> requests.Response:
        """What opening the hub shows a signed-out user: the provider's login page (or why not)."""
        first = self.session.get(
            f"{self.hub_url}/hub/login", allow_redirects=False, timeout=TIMEOUT
        )
        return self.follow(first)

    def sign_in(self, password: str) -> requests.Response:
        """Log in through the provider's form and consent; returns the hub's last answer.

        For someone allowed in, a redirect (to their server, or to the home page); for someone
        refused, the refusal page.
        """
        page = self.open_login()
        form = first_form(page)
        form.fields.update(username=self.name, password=password)
        answer = self.submit(form)
        if answer.status_code == 200 and "consent" in answer.url + answer.text.lower():
            answer = self.submit(first_form(answer))
        return answer

    def submit(self, form: Form) -> requests.Response:
        response = self.session.post(
            form.action, data=form.fields, allow_redirects=False, timeout=TIMEOUT
        )
        return self.follow(response)

    # --- the hub's REST API, with the browser's cookie ---

    def api(self, method: str, path: str, timeout: float = TIMEOUT, **kwargs) -> requests.Response:
        headers = {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}
        return self.session.request(
            method,
            f"{self.hub_url}/hub/api{path}",
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            **kwargs,
        )

    def whoami(self) -> requests.Response:
        return self.api("GET", "/user")

    def start_server(self, timeout: float = 120) -> None:
        # The hub answers once the server is up or after its slow_spawn_timeout (10 s): 202.
        answer = self.api("POST", f"/users/{self.name}/server", timeout=timeout)
        assert answer.status_code in (201, 202, 400), answer.text  # 400: already running
        wait_for(self.server_ready, timeout, f"{self.name}'s server ready")

    def server_ready(self) -> bool:
        model = self.api("GET", f"/users/{self.name}").json()
        return bool(model["servers"].get("", {}).get("ready"))

    def stop_server(self, timeout: float = 60) -> None:
        # The hub answers once the server stopped or after its slow_stop_timeout (10 s): 202.
        answer = self.api("DELETE", f"/users/{self.name}/server", timeout=timeout)
        assert answer.status_code in (202, 204), answer.text
        wait_for(
            lambda: not self.api("GET", f"/users/{self.name}").json()["servers"],
            timeout,
            f"{self.name}'s server stopped",
        )

    def new_token(self, note: str = "e2e test") -> str:
        answer = self.api(
            "POST", f"/users/{self.name}/tokens", json={"note": note, "expires_in": 3600}
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]


def signed_in(stack, username: str, *, server: bool = False) -> HubUser:
    """`username` signed in at the provider's form; with their server started when asked."""
    user = HubUser(stack.hub_url, username)
    user.sign_in(stack.demo_password)
    if server:
        user.start_server()
    return user


def runs_client(stack, username: str, note: str, retry_for: float = 0) -> RunsClient:
    """The runs service through the proxy, with a token of `username`'s own, as their
    notebooks have one."""
    token = signed_in(stack, username).new_token(note)
    return RunsClient(f"{stack.hub_url}/services/runs", token, retry_for=retry_for)


class ServerClient:
    """The Jupyter server's own REST API of one engineer's server, through the proxy."""

    def __init__(self, hub_url: str, username: str, token: str) -> None:
        self.base = f"{hub_url}/user/{username}/api"
        self.headers = {"Authorization": f"token {token}"}

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, f"{self.base}{path}", headers=self.headers, timeout=TIMEOUT, **kwargs
        )

    def put_text(self, path: str, text: str) -> requests.Response:
        body = {"type": "file", "format": "text", "content": text}
        return self.request("PUT", f"/contents/{path}", json=body)

    def get(self, path: str) -> requests.Response:
        return self.request("GET", f"/contents/{path}")


def sign_in_with_browser(page, stack, target: str, username: str, landed) -> None:
    """A Playwright page opens `target` on the hub and signs in at the provider's real form.

    `landed`: a locator that shows the sign-in is over (consent is answered when it is asked).
    """
    page.goto(f"{stack.hub_url}{target}")
    page.wait_for_url(f"{stack.idp_url}/**")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", stack.demo_password)
    page.click("form [type=submit]")
    allow = page.get_by_role("button", name="Allow")
    allow.or_(landed).first.wait_for(timeout=30_000)
    if allow.is_visible():  # consent, on a first sign-in
        allow.click()
