"""Signing in through the real provider, and what each demo account may then do."""

import pytest

from .hubclient import HubUser, first_form
from .stack import wait_for


def test_opening_the_hub_leads_to_the_providers_login_form(stack):
    page = HubUser(stack.hub_url, "alice").open_login()
    assert page.status_code == 200
    assert page.url.startswith(stack.idp_url)
    assert 'name="password"' in page.text


def test_a_wrong_password_is_refused_by_the_provider(stack):
    answer = HubUser(stack.hub_url, "alice").sign_in("not-the-password")
    assert answer.status_code == 401
    assert "Wrong username or password" in answer.text


@pytest.mark.parametrize("username", ["alice", "bob", "erin"])
def test_engineers_are_sent_to_their_own_server(stack, username):
    user = HubUser(stack.hub_url, username)
    answer = user.sign_in(stack.demo_password)
    assert answer.status_code == 302
    # to start it, or straight to it when it runs already
    assert answer.headers["Location"].startswith(("/hub/spawn", f"/user/{username}/"))
    me = user.whoami().json()
    assert me["name"] == username
    assert "servers" in " ".join(me.get("scopes", []))


def test_groups_and_admin_come_from_the_provider(stack):
    alice = HubUser(stack.hub_url, "alice")
    alice.sign_in(stack.demo_password)
    bob = HubUser(stack.hub_url, "bob")
    bob.sign_in(stack.demo_password)
    alice_model = alice.api("GET", "/users/alice").json()
    # The admins' role (the admin page, everyone's servers), never JupyterHub's admin flag.
    assert alice_model["admin"] is False
    assert "admin-ui" in alice.whoami().json()["scopes"]
    assert set(alice_model["groups"]) == {"admins", "ops", "oncall"}
    assert bob.whoami().json()["admin"] is False
    assert bob.api("GET", "/users/alice").status_code == 404  # bob may not even see alice


def test_a_viewer_signs_in_but_gets_no_server(stack):
    carol = HubUser(stack.hub_url, "carol")
    answer = carol.sign_in(stack.demo_password)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/hub/home"
    home = carol.session.get(f"{stack.hub_url}/hub/home", timeout=10)
    assert home.status_code == 200
    assert "does not get a server" in home.text
    assert carol.api("POST", "/users/carol/server").status_code == 403
    spawn = carol.session.get(f"{stack.hub_url}/hub/spawn", timeout=10, allow_redirects=False)
    assert spawn.status_code == 403
    assert not stack.container_running("carol")


def test_someone_in_no_group_is_refused_with_a_clear_page(stack):
    answer = HubUser(stack.hub_url, "mallory").sign_in(stack.demo_password)
    assert answer.status_code == 403
    assert "none of the Opsbook groups" in answer.text


def test_group_loss_at_the_provider_revokes_access_at_the_next_refresh(stack):
    erin = HubUser(stack.hub_url, "erin")
    erin.sign_in(stack.demo_password)
    erin.start_server()
    assert erin.whoami().status_code == 200
    stack.set_groups("erin", [])
    try:
        # AUTH_REFRESH_AGE is 5 s in the test stack: the next request after it re-reads groups.
        wait_for(lambda: erin.whoami().status_code == 403, 60, "erin's session revoked")
        wait_for(lambda: not stack.container_running("erin"), 60, "erin's server stopped")
        again = HubUser(stack.hub_url, "erin").sign_in(stack.demo_password)
        assert again.status_code == 403
    finally:
        stack.set_groups("erin", ["ops"])
    assert HubUser(stack.hub_url, "erin").sign_in(stack.demo_password).status_code == 302


def test_logout_ends_the_sso_session_too(stack):
    """The next person at the same browser must type a password, not ride on alice's session."""
    alice = HubUser(stack.hub_url, "alice")
    alice.sign_in(stack.demo_password)
    to_provider = alice.session.get(f"{stack.hub_url}/hub/logout", timeout=10)
    assert to_provider.url.startswith(f"{stack.idp_url}/session/end")
    confirm = first_form(to_provider)
    confirm.fields["logout"] = "yes"  # the "Yes, sign me out" button
    back_at_hub = alice.submit(confirm)
    assert back_at_hub.status_code == 200
    assert 'name="password"' in back_at_hub.text  # the login form again, not a silent sign-in
    assert alice.whoami().status_code == 403
