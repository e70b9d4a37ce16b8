"""Alertmanager silences around a batch, so patching and rebooting hosts does not page anybody.

A silence must cover exactly the batch's hosts (silencing a whole stack would hide a real outage on
the hosts that are not being touched) and must end when the batch ends, whatever happened in it:
a silence left behind hides the next real alert for those hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from opsbook.errors import SilenceError
from opsbook.matchers import exact_regex

INSTANCE_LABEL = "instance"


def silence_body(
    instances: Iterable[str],
    *,
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
) -> dict[str, Any]:
    """The Alertmanager v2 silence for alerts of exactly these exporter instances.

    One regex matcher on the 'instance' label; Alertmanager anchors it, so it matches these
    instances and nothing else. Times must be timezone-aware: a naive time is ambiguous between
    the engineer's container and Alertmanager.
    """
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


def create_silence(alertmanager_url: str, body: dict[str, Any], *, timeout: float = 5.0) -> str:
    """Create the silence and return its ID; any failure raises SilenceError.

    The caller decides whether a batch may go ahead unsilenced; this never pretends it worked.
    """
    response = _request("POST", f"{_base(alertmanager_url)}/api/v2/silences", body, timeout)
    if not response.ok:
        raise SilenceError(
            f"Alertmanager at {alertmanager_url} refused the silence: "
            f"HTTP {response.status_code} {response.text.strip()}"
        )
    try:
        return str(response.json()["silenceID"])
    except (ValueError, KeyError, TypeError) as error:
        raise SilenceError(
            f"Alertmanager at {alertmanager_url} answered without a silenceID: {response.text!r}"
        ) from error


def expire_silence(alertmanager_url: str, silence_id: str, *, timeout: float = 5.0) -> None:
    """Expire a silence now. One that is gone or already expired counts as done.

    Alertmanager answers 404 for an unknown silence and 500 "silence ... already expired" for an
    expired one; both leave nothing silenced, which is all expiring has to achieve.
    """
    url = f"{_base(alertmanager_url)}/api/v2/silence/{quote(silence_id, safe='')}"
    response = _request("DELETE", url, None, timeout)
    if response.ok or response.status_code == 404 or "already expired" in response.text:
        return
    raise SilenceError(
        f"Alertmanager at {alertmanager_url} did not expire silence {silence_id}: "
        f"HTTP {response.status_code} {response.text.strip()}"
    )


@contextmanager
def silenced(
    alertmanager_url: str,
    instances: Iterable[str],
    *,
    duration: timedelta,
    created_by: str,
    comment: str,
    timeout: float = 5.0,
) -> Iterator[str]:
    """Silence the instances for the block, then expire the silence however the block ends.

    `duration` is a ceiling in case this process dies mid-block (the silence then lapses by
    itself); normally the silence ends with the block. An error from the block (KeyboardInterrupt
    included) is re-raised unchanged; if expiring then fails too, that is added to it as a note.
    Yields the silence ID.
    """
    if duration <= timedelta(0):
        raise SilenceError(f"silence duration {duration} is not positive")
    now = datetime.now(UTC)
    body = silence_body(
        instances, starts_at=now, ends_at=now + duration, created_by=created_by, comment=comment
    )
    silence_id = create_silence(alertmanager_url, body, timeout=timeout)
    try:
        yield silence_id
    except BaseException as error:
        try:
            expire_silence(alertmanager_url, silence_id, timeout=timeout)
        except SilenceError as expire_error:
            error.add_note(f"and the silence was left in place: {expire_error}")
        raise
    expire_silence(alertmanager_url, silence_id, timeout=timeout)


def _request(
    method: str, url: str, body: dict[str, Any] | None, timeout: float
) -> requests.Response:
    try:
        return requests.request(method, url, json=body, timeout=timeout)
    except requests.RequestException as error:
        raise SilenceError(f"Alertmanager did not answer {method} {url}: {error}") from error


def _base(alertmanager_url: str) -> str:
    if not alertmanager_url.startswith(("http://", "https://")):
        raise SilenceError(
            f"Alertmanager URL {alertmanager_url!r} is invalid; expected http(s)://..."
        )
    return alertmanager_url.rstrip("/")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
