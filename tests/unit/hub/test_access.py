"""Group -> access mapping, and the authenticator's refresh rules (our logic, on stand-ins)."""

import asyncio
import time
from types import SimpleNamespace

import pytest
from oauthenticator.generic import GenericOAuthenticator
from opsbook_hub.access import GroupPolicy
from opsbook_hub.authenticator import OpsbookAuthenticator, provider_unreachable
from tornado.httpclient import HTTPClientError

POLICY = GroupPolicy.from_names(["admins"], ["ops"], ["oncall"], ["viewers"])


@pytest.mark.parametrize(
    ("groups", "log_in", "server", "admin"),
    [
        (["admins", "ops", "oncall"], True, True, True),
        (["ops", "oncall"], True, True, False),
        (["oncall"], True, True, False),
        (["ops"], True, True, False),
        (["viewers"], True, False, False),
        (["admins"], True, False, True),
        ([], False, False, False),
        (["contractors"], False, False, False),
    ],
)
def test_group_policy(groups, log_in, server, admin):
    assert POLICY.may_log_in(groups) is log_in
    assert POLICY.may_have_server(groups) is server
    assert POLICY.is_admin(groups) is admin


def test_only_connection_failures_count_as_provider_down():
    assert provider_unreachable(ConnectionRefusedError())
    assert provider_unreachable(HTTPClientError(599))
    assert not provider_unreachable(HTTPClientError(500))
    assert not provider_unreachable(ValueError("bad json"))


def counting_provider(monkeypatch, answers: list[bool]) -> list[int]:
    """The provider check's request replaced: each call takes a moment and gives the next answer."""
    calls: list[int] = []

    async def ask(self):
        calls.append(1)
        await asyncio.sleep(0.01)
        answer = answers[len(calls) - 1]
        if answer:
            self._provider_seen_at = time.monotonic()
        return answer

    monkeypatch.setattr(OpsbookAuthenticator, "_ask_provider", ask)
    return calls


def test_a_login_storm_asks_the_provider_once(monkeypatch):
    calls = counting_provider(monkeypatch, [True])
    authenticator = OpsbookAuthenticator(group_policy=POLICY)

    async def storm():
        first = await asyncio.gather(*(authenticator.provider_answers() for _ in range(30)))
        later = await authenticator.provider_answers()  # within provider_up_for: no new check
        return first, later

    first, later = asyncio.run(storm())
    assert first == [True] * 30 and later is True
    assert len(calls) == 1


def test_a_failed_provider_check_is_not_reused(monkeypatch):
    calls = counting_provider(monkeypatch, [False, True])
    authenticator = OpsbookAuthenticator(group_policy=POLICY)
    assert asyncio.run(authenticator.provider_answers()) is False
    assert asyncio.run(authenticator.provider_answers()) is True
    assert len(calls) == 2


def test_a_provider_answer_counts_only_for_a_while(monkeypatch):
    calls = counting_provider(monkeypatch, [True, True])
    authenticator = OpsbookAuthenticator(group_policy=POLICY, provider_up_for=0)
    assert asyncio.run(authenticator.provider_answers()) is True
    assert asyncio.run(authenticator.provider_answers()) is True
    assert len(calls) == 2


class StandInSpawner:
    def __init__(self, active: bool):
        self.active = active


class StandInHandler:
    def __init__(self):
        self.stopped: list[tuple[str, str]] = []

    async def stop_single_user(self, user, name):
        self.stopped.append((user.name, name))


def refresh(monkeypatch, upstream_result, *, active=True):
    """Our refresh_user, with oauthenticator's own refresh answering `upstream_result`."""

    async def upstream(self, user, handler=None, **kwargs):
        if isinstance(upstream_result, BaseException):
            raise upstream_result
        return upstream_result

    monkeypatch.setattr(GenericOAuthenticator, "refresh_user", upstream)
    authenticator = OpsbookAuthenticator(group_policy=POLICY)
    user = SimpleNamespace(name="erin", spawners={"": StandInSpawner(active)})
    handler = StandInHandler()
    result = asyncio.run(authenticator.refresh_user(user, handler))
    return result, handler.stopped


def test_refresh_keeps_a_user_still_in_a_server_group(monkeypatch):
    model = {"name": "erin", "groups": ["ops"]}
    assert refresh(monkeypatch, model) == (model, [])


def test_refresh_revokes_a_user_removed_from_every_group(monkeypatch):
    assert refresh(monkeypatch, {"name": "erin", "groups": []}) == (False, [("erin", "")])


def test_refresh_stops_the_server_of_a_user_moved_to_viewers(monkeypatch):
    model = {"name": "erin", "groups": ["viewers"]}
    assert refresh(monkeypatch, model) == (model, [("erin", "")])


def test_refresh_keeps_the_session_when_the_provider_is_down(monkeypatch):
    assert refresh(monkeypatch, HTTPClientError(599)) == (True, [])


def test_refresh_errors_other_than_unreachable_are_not_swallowed(monkeypatch):
    with pytest.raises(HTTPClientError):
        refresh(monkeypatch, HTTPClientError(500))


def test_refresh_passes_through_a_required_login(monkeypatch):
    assert refresh(monkeypatch, False) == (False, [])
