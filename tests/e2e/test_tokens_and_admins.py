"""Admins run the hub, not other people's work: no token in erin's name, no way into her server.

alice (admins, ops, oncall) is the admin; erin (ops) the engineer she must not be able to act
as. Every token the hub issues expires (API_TOKEN_MAX_SECONDS is an hour in the test stack).
"""

import pytest
import requests

from .hubclient import TIMEOUT, HubUser, ServerClient, signed_in
from .stack import wait_for


@pytest.fixture(scope="module")
def erin(stack):
    return signed_in(stack, "erin", server=True)


@pytest.fixture(scope="module")
def alice(stack):
    user = HubUser(stack.hub_url, "alice")
    user.sign_in(stack.demo_password)
    return user


def test_an_admin_cannot_mint_a_token_for_someone_else(alice, erin):
    refused = alice.api("POST", "/users/erin/tokens", json={"note": "as erin", "expires_in": 600})
    assert refused.status_code == 403, refused.text
    assert alice.api("GET", "/users/erin/tokens").status_code in (403, 404)  # nor list hers
    # Nor read the provider's tokens the hub keeps for her.
    model = alice.api("GET", "/users/erin").json()
    assert "auth_state" not in model or model["auth_state"] is None


def test_an_admin_cannot_open_someone_elses_server(stack, alice, erin):
    page = alice.session.get(f"{stack.hub_url}/user/erin/lab", timeout=10)
    assert page.status_code == 403
    own_token = alice.new_token()
    assert ServerClient(stack.hub_url, "erin", own_token).get("").status_code == 403


def test_an_admin_is_no_jupyterhub_admin_but_has_the_admin_page(stack, alice):
    me = alice.whoami().json()
    assert me["admin"] is False
    assert "admin-ui" in me["scopes"] and "tokens" not in me["scopes"]
    page = alice.session.get(f"{stack.hub_url}/hub/admin", timeout=10)
    assert page.status_code == 200
    assert alice.api("GET", "/users").status_code == 200
    # Making oneself a JupyterHub admin (and so getting everything back) is refused.
    promoted = alice.api("PATCH", "/users/alice", json={"admin": True})
    assert promoted.status_code == 403


def test_an_admin_still_stops_and_starts_someone_elses_server(stack, alice, erin):
    # Both answer when done or after the hub's own slow_*_timeout (10 s): longer than TIMEOUT.
    stopped = alice.api("DELETE", "/users/erin/server", timeout=3 * TIMEOUT)
    assert stopped.status_code in (202, 204), stopped.text
    wait_for(lambda: not erin.api("GET", "/users/erin").json()["servers"], 60, "erin's stopped")
    started = alice.api("POST", "/users/erin/server", timeout=3 * TIMEOUT)
    assert started.status_code in (201, 202), started.text
    wait_for(erin.server_ready, 120, "erin's server started again by alice")


def test_a_token_past_its_lifetime_is_refused(stack, erin):
    """A token asked for with two seconds of life: accepted at once, refused once they are up
    (the hub compares expires_at with the time of each request; no purge is waited for)."""
    answer = erin.api("POST", "/users/erin/tokens", json={"note": "short", "expires_in": 2})
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]

    def status() -> int:  # the token alone, no cookie
        return requests.get(
            f"{stack.hub_url}/hub/api/user",
            headers={"Authorization": f"token {token}"},
            timeout=10,
        ).status_code

    assert status() == 200
    wait_for(lambda: status() == 403, 30, "the expired token refused")


def test_no_token_is_issued_for_longer_than_the_maximum(stack, erin):
    unbounded = erin.api("POST", "/users/erin/tokens", json={"note": "no expiry asked"})
    assert unbounded.status_code == 201, unbounded.text
    assert unbounded.json()["expires_at"] is not None  # the maximum, not "never"
    too_long = erin.api("POST", "/users/erin/tokens", json={"note": "a year", "expires_in": 7200})
    assert too_long.status_code == 400
    assert "must not exceed 3600" in too_long.text
