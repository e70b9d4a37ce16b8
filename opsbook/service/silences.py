"""Alertmanager silences for a run's batches: set and expired here, in the runs service.

The service silences exactly the batch's hosts (their node exporters' `instance` label) when the
batch starts and expires the silence when it ends, however it ends: the batch finished, the run
was taken over, handed off or paused, its lease ran out, it was finished or aborted. Engineers'
containers never reach Alertmanager, so nobody can silence a host outside a run, or a whole
stack, or until 2030.

A silence covers exactly the batch's instances (one anchored regex matcher) and lasts at most
`ceiling(...)`: the longest a batch is expected to take. That ceiling only matters if the runs
service itself dies mid-batch; every other end of a batch expires the silence at once, and at
start-up the service expires the silences it recorded whose batch is no longer in flight.

The HTTP client is the standard library's (the runs image installs nothing for it). Alertmanager
v2: `POST /api/v2/silences` returns `silenceID`; `DELETE /api/v2/silence/{id}` expires it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

INSTANCE_LABEL = "instance"
SETTING = "RUNS_ALERTMANAGER_URL"

# How long a batch's play may take (apt, a reboot: patch.yml waits up to 10 minutes for a host,
# and room to spare), and how long after the gate's own timeout the silence still lasts.
PLAY_ALLOWANCE = timedelta(minutes=20)
MARGIN = timedelta(seconds=60)

_RE2_METACHARACTERS = frozenset("\\.+*?()|[]{}^$")


class SilenceError(Exception):
    """Alertmanager refused, did not answer, or answered nonsense; the message names its URL."""


class SilenceApi(Protocol):
    """What the ledger needs of Alertmanager (Alertmanager below; tests give a fake)."""

    url: str

    def create(self, body: dict[str, Any]) -> str:
        """Create the silence; return its ID, or raise SilenceError."""

    def expire(self, silence_id: str) -> None:
        """Expire the silence (one gone or expired already counts); else raise SilenceError."""


def ceiling(gate_timeout: float) -> timedelta:
    """How long a batch's silence lasts should nobody expire it (the runs service died): the
    batch's longest expected time (its play, then its health gate), plus a minute. Alerts come
    back soon after the batch would have ended, never hours later."""
    return PLAY_ALLOWANCE + timedelta(seconds=gate_timeout) + MARGIN


def exact_regex(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly the given values (sorted, each once). Alertmanager
    anchors a regex matcher at both ends, so 'web-1:9100' never also matches 'web-1:91000'.
    (The toolkit has the same rule for Prometheus queries; the service may not import it.)"""
    return "|".join(
        "".join(f"\\{char}" if char in _RE2_METACHARACTERS else char for char in value)
        for value in sorted(set(values))
    )


def silence_body(
    instances: Iterable[str],
    *,
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
) -> dict[str, Any]:
    """The Alertmanager v2 silence for alerts of exactly these exporter instances.

    Times must be timezone-aware: a naive time is ambiguous between us and Alertmanager."""
    wanted = sorted(set(instances))
    if not wanted or "" in wanted:
        raise SilenceError(
            f"instances to silence {wanted!r} are none or blank; expected e.g. ['web-1:9100']"
        )
    for name, moment in (("starts_at", starts_at), ("ends_at", ends_at)):
        if moment.tzinfo is None:
            raise SilenceError(f"{name} {moment} has no timezone; expected an aware datetime")
    if ends_at <= starts_at:
        raise SilenceError(f"silence must end after it starts; got {starts_at} to {ends_at}")
    if not created_by.strip() or not comment.strip():
        raise SilenceError("a silence needs created_by and comment; Alertmanager rejects blanks")
    return {
        "matchers": [
            {
                "name": INSTANCE_LABEL,
                "value": exact_regex(wanted),
                "isRegex": True,
                "isEqual": True,
            }
        ],
        "startsAt": _rfc3339(starts_at),
        "endsAt": _rfc3339(ends_at),
        "createdBy": created_by,
        "comment": comment,
    }


class Alertmanager:
    """Alertmanager's v2 silences API at `url` (RUNS_ALERTMANAGER_URL)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def create(self, body: dict[str, Any]) -> str:
        """Create the silence and return its ID; any failure raises SilenceError. The caller
        decides what a batch does without one (the ledger: it does not start)."""
        status, text = self._request("POST", "/api/v2/silences", body)
        if not 200 <= status < 300:
            raise SilenceError(
                f"Alertmanager at {self.url} ({SETTING}) refused the silence: HTTP {status} "
                f"{text.strip()[:300]}"
            )
        try:
            return str(json.loads(text)["silenceID"])
        except (ValueError, KeyError, TypeError) as error:
            raise SilenceError(
                f"Alertmanager at {self.url} ({SETTING}) answered without a silenceID: "
                f"{text[:300]!r}"
            ) from error

    def expire(self, silence_id: str) -> None:
        """Expire a silence now. One that is gone or already expired counts as done:
        Alertmanager answers 404 for an unknown silence and 500 "silence ... already expired"
        for an expired one, and both leave nothing silenced."""
        status, text = self._request("DELETE", f"/api/v2/silence/{quote(silence_id, safe='')}")
        if 200 <= status < 300 or status == 404 or "already expired" in text:
            return
        raise SilenceError(
            f"Alertmanager at {self.url} ({SETTING}) did not expire silence {silence_id}: "
            f"HTTP {status} {text.strip()[:300]}"
        )

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except (OSError, ValueError) as error:  # refused, unreachable, timed out, bad URL
            reason = getattr(error, "reason", error)
            raise SilenceError(
                f"Alertmanager at {self.url} ({SETTING}) did not answer {method} {path}: {reason}"
            ) from error


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
