"""Silences: the exact body Alertmanager gets, and create/expire against a fake Alertmanager."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from opsbook_fakes import FakeServer, Request

from opsbook.errors import SilenceError
from opsbook.silences import create_silence, expire_silence, silence_body, silenced

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class FakeAlertmanager:
    """Answers the v2 silences API like Alertmanager 0.25, keeping silences' states in memory."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.bodies: dict[str, Any] = {}
        self.fail_deletes = False

    def __call__(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST" and request.path == "/api/v2/silences":
            silence_id = f"silence-{len(self.states) + 1}"
            self.states[silence_id] = "active"
            self.bodies[silence_id] = request.body
            return 200, {"silenceID": silence_id}
        if request.method == "DELETE" and request.path.startswith("/api/v2/silence/"):
            silence_id = request.path.rsplit("/", 1)[1]
            if self.fail_deletes:
                return 500, "cluster is not ready"
            if silence_id not in self.states:
                return 404, ""
            if self.states[silence_id] == "expired":
                return 500, f"silence {silence_id} already expired"
            self.states[silence_id] = "expired"
            return 200, ""
        return 404, "not found"


@pytest.fixture
def alertmanager(fake_server: FakeServer) -> FakeAlertmanager:
    fake = FakeAlertmanager()
    fake_server.responder = fake
    return fake


def body(**overrides: Any) -> dict[str, Any]:
    options = {
        "starts_at": START,
        "ends_at": START + timedelta(minutes=30),
        "created_by": "alice",
        "comment": "patching web batch 1",
    } | overrides
    return silence_body(["web.1:9100", "web-2:9100", "web.1:9100"], **options)


def test_body_matches_exactly_the_instances() -> None:
    assert body() == {
        "matchers": [
            {
                "name": "instance",
                "value": r"web-2:9100|web\.1:9100",
                "isRegex": True,
                "isEqual": True,
            }
        ],
        "startsAt": "2026-11-26T12:00:00.000Z",
        "endsAt": "2026-11-26T12:30:00.000Z",
        "createdBy": "alice",
        "comment": "patching web batch 1",
    }


def test_body_regex_matches_nothing_else() -> None:
    # Alertmanager anchors regex matchers: ^(?:value)$
    pattern = re.compile(f"^(?:{body()['matchers'][0]['value']})$")
    assert pattern.match("web.1:9100")
    assert pattern.match("web-2:9100")
    for other in ("webX1:9100", "web.1:91000", "web-2:9100x", "web-20:9100"):
        assert not pattern.match(other)


def test_body_times_are_utc() -> None:
    eastern = START.astimezone(timezone(timedelta(hours=-5)))
    assert body(starts_at=eastern)["startsAt"] == "2026-11-26T12:00:00.000Z"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"starts_at": datetime(2026, 11, 26, 12, 0)},
            "starts_at 2026-11-26 12:00:00 has no timezone",
        ),
        ({"ends_at": START}, "silence must end after it starts"),
        ({"created_by": " "}, "needs created_by and comment"),
        ({"comment": ""}, "needs created_by and comment"),
    ],
)
def test_invalid_bodies_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(SilenceError, match=message):
        body(**overrides)


def test_no_instances_is_refused() -> None:
    with pytest.raises(SilenceError, match=r"instances to silence .* are none or blank"):
        silence_body([], starts_at=START, ends_at=START + timedelta(1), created_by="a", comment="c")


def test_create_then_expire(fake_server: FakeServer, alertmanager: FakeAlertmanager) -> None:
    silence_id = create_silence(fake_server.url, body())
    assert alertmanager.states == {silence_id: "active"}
    assert alertmanager.bodies[silence_id] == body()
    expire_silence(fake_server.url, silence_id)
    assert alertmanager.states == {silence_id: "expired"}


def test_expiring_twice_or_unknown_is_fine(
    fake_server: FakeServer, alertmanager: FakeAlertmanager
) -> None:
    silence_id = create_silence(fake_server.url, body())
    expire_silence(fake_server.url, silence_id)
    expire_silence(fake_server.url, silence_id)  # 500 "already expired"
    expire_silence(fake_server.url, "no-such-silence")  # 404


def test_expire_failure_raises(fake_server: FakeServer, alertmanager: FakeAlertmanager) -> None:
    silence_id = create_silence(fake_server.url, body())
    alertmanager.fail_deletes = True
    with pytest.raises(SilenceError, match=f"did not expire silence {silence_id}: HTTP 500"):
        expire_silence(fake_server.url, silence_id)


def test_create_refused_or_unreachable_raises(
    fake_server: FakeServer, closed_port_url: str
) -> None:
    fake_server.responder = lambda request: (400, "bad matcher")
    with pytest.raises(SilenceError, match="refused the silence: HTTP 400"):
        create_silence(fake_server.url, body())
    with pytest.raises(SilenceError, match="Alertmanager did not answer POST"):
        create_silence(closed_port_url, body())
    with pytest.raises(SilenceError, match="Alertmanager URL 'alertmanager:9093' is invalid"):
        create_silence("alertmanager:9093", body())


def silenced_block(url: str) -> AbstractContextManager[str]:
    return silenced(
        url,
        ["web-1:9100"],
        duration=timedelta(minutes=30),
        created_by="alice",
        comment="batch 1",
    )


def test_silenced_block_expires_after(
    fake_server: FakeServer, alertmanager: FakeAlertmanager
) -> None:
    with silenced_block(fake_server.url) as silence_id:
        assert alertmanager.states == {silence_id: "active"}
        matcher = alertmanager.bodies[silence_id]["matchers"][0]
        assert matcher["value"] == "web-1:9100"
    assert alertmanager.states == {silence_id: "expired"}


@pytest.mark.parametrize("error", [RuntimeError("play failed"), KeyboardInterrupt()])
def test_silenced_block_expires_on_error_and_reraises(
    fake_server: FakeServer, alertmanager: FakeAlertmanager, error: BaseException
) -> None:
    with pytest.raises(type(error)) as raised, silenced_block(fake_server.url):
        raise error
    assert raised.value is error
    assert list(alertmanager.states.values()) == ["expired"]


def test_failed_expiry_is_noted_on_the_original_error(
    fake_server: FakeServer, alertmanager: FakeAlertmanager
) -> None:
    with (
        pytest.raises(RuntimeError, match="play failed") as raised,
        silenced_block(fake_server.url),
    ):
        alertmanager.fail_deletes = True
        raise RuntimeError("play failed")
    assert "the silence was left in place" in raised.value.__notes__[0]


def test_silence_that_cannot_be_created_runs_nothing(closed_port_url: str) -> None:
    ran = False
    with pytest.raises(SilenceError), silenced_block(closed_port_url):
        ran = True
    assert not ran
