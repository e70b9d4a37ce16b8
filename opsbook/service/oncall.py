"""Who is on call: the members of a JupyterHub group, read through the hub's API.

A run may only be handed to someone on call, and the handoff dropdown lists them. The hub is the
source (groups come from the identity provider at each sign-in), asked with the service's own token
(scope read:groups) and cached briefly. If the hub does not answer, a handoff is refused with 503
rather than allowed unchecked: fail closed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Protocol
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from opsbook.contract.wire import ErrorCode
from opsbook.service.rules import Refused

log = logging.getLogger("opsbook.runs")


class Oncall(Protocol):
    group: str

    async def members(self) -> list[str]:
        """User names in the on-call group, sorted; Refused(503) if that cannot be known."""


class StaticOncall:
    """A fixed list (tests, and a deployment without a hub group)."""

    def __init__(self, users: list[str], group: str = "oncall") -> None:
        self.users = sorted(users)
        self.group = group

    async def members(self) -> list[str]:
        return list(self.users)


class HubOncall:
    def __init__(
        self, api_url: str, token: str, group: str, *, cache_seconds: float = 30.0
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.group = group
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[str]] | None = None

    async def members(self) -> list[str]:
        if self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
            return list(self._cached[1])
        request = HTTPRequest(
            f"{self.api_url}/groups/{quote(self.group)}",
            headers={"Authorization": f"token {self.token}"},
            connect_timeout=5,
            request_timeout=10,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            users = sorted(json.loads(response.body)["users"])
        except HTTPClientError as error:
            if error.code == 404:
                log.warning("on-call group %s does not exist at the hub", self.group)
                users = []
            else:
                raise self._unavailable(f"HTTP {error.code}") from error
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise self._unavailable(str(error) or type(error).__name__) from error
        self._cached = (time.monotonic(), users)
        return list(users)

    def _unavailable(self, why: str) -> Refused:
        log.error("cannot read on-call group %s from the hub: %s", self.group, why)
        return Refused(
            503,
            ErrorCode.UNAVAILABLE,
            f"cannot tell who is on call: the hub did not answer for group {self.group} ({why}). "
            "Try again in a minute.",
        )
