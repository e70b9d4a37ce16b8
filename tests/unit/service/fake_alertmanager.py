"""An in-memory Alertmanager for the ledger's tests: what the store asks of silences.Alertmanager
(create, expire), with every silence's body and state kept, and failures on demand. The HTTP
client itself is tested against a loopback server in test_runs_silences.py."""

from __future__ import annotations

import re
from typing import Any

from opsbook.service.silences import SilenceError


class FakeAlertmanager:
    """create/expire as Alertmanager answers them; `down` makes both fail (no answer),
    `refuse_expiry` only expiring."""

    url = "http://alertmanager.test:9093"

    def __init__(self) -> None:
        self.bodies: dict[str, dict[str, Any]] = {}
        self.states: dict[str, str] = {}  # id -> active / expired
        self.down = False
        self.refuse_expiry = False

    def create(self, body: dict[str, Any]) -> str:
        if self.down:
            raise SilenceError(f"Alertmanager at {self.url} did not answer: connection refused")
        silence_id = f"silence-{len(self.bodies) + 1}"
        self.bodies[silence_id] = body
        self.states[silence_id] = "active"
        return silence_id

    def expire(self, silence_id: str) -> None:
        if self.down or self.refuse_expiry:
            raise SilenceError(f"Alertmanager at {self.url} did not expire {silence_id}: HTTP 500")
        if silence_id in self.states:
            self.states[silence_id] = "expired"

    @property
    def active(self) -> list[str]:
        return [s for s, state in self.states.items() if state == "active"]

    def covers(self, silence_id: str, instances: list[str]) -> set[str]:
        """Which of `instances` the silence's matcher covers (Alertmanager anchors a regex)."""
        (matcher,) = self.bodies[silence_id]["matchers"]
        assert matcher["name"] == "instance" and matcher["isRegex"] and matcher["isEqual"]
        return {i for i in instances if re.fullmatch(matcher["value"], i)}
