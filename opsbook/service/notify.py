"""Webhook notifications (Slack-compatible `{"text": ...}`) for what the team should hear about.

Approvals are announced too: a request (with the run page's link, where on-call engineers decide),
each approval, a rejection and an expiry.

Sent in the background with a short timeout: a slow or broken chat server never delays or fails an
engineer's request, and a failed post is only logged. Messages carry names, states and reasons, and
no secret (parameters are not included).
"""

from __future__ import annotations

import json
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop

from opsbook.contract.wire import Event, Run, RunState

log = logging.getLogger("opsbook.runs")

MAX_IN_FLIGHT = 20


class Notifier:
    def __init__(
        self,
        url: str,
        *,
        public_url: str = "",
        prefix: str = "/services/runs/",
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.link_base = f"{public_url.rstrip('/')}{prefix}runs/" if public_url else ""
        self.prefix = prefix
        self.timeout = timeout
        self.in_flight = 0
        self.sent = 0
        self.failed = 0

    def send(self, text: str) -> None:
        if not self.url:
            return
        if self.in_flight >= MAX_IN_FLIGHT:
            log.warning("webhook: %d posts still pending, dropped: %s", self.in_flight, text)
            self.failed += 1
            return
        self.in_flight += 1
        IOLoop.current().spawn_callback(self._post, text)

    async def _post(self, text: str) -> None:
        request = HTTPRequest(
            self.url,
            method="POST",
            body=json.dumps({"text": text}),
            headers={"Content-Type": "application/json"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            await AsyncHTTPClient().fetch(request)
            self.sent += 1
        except Exception as error:  # whatever went wrong, the run goes on; the log says
            self.failed += 1
            log.warning("webhook: could not post (%s): %s", error, text)
        finally:
            self.in_flight -= 1

    # --- the messages --------------------------------------------------------------------------

    def events(self, run: Run, recorded: list[Event]) -> None:
        """Post what the team should hear of the events an action (or the sweeper) recorded."""
        for event in recorded:
            failure = _is_failure(event)
            if event.type == "approval_requested":
                # the people who may approve need the page: say where, even without a public URL
                where = f"{self.link_base}{run.id}" if self.link_base else self.path(run)
                self.send(
                    f"APPROVAL REQUESTED: {self._name(run)}: {event.message}. "
                    f"Approve or reject it at {where}"
                )
            elif event.type in ANNOUNCED or failure:
                self.send(f"{'FAILURE: ' if failure else ''}{self._name(run)}: {event.message}")

    def path(self, run: Run) -> str:
        return f"{self.prefix}runs/{run.id}"

    def _name(self, run: Run) -> str:
        env = run.environment.upper() if run.production else run.environment
        link = f" {self.link_base}{run.id}" if self.link_base else ""
        return f"run {run.id} ({run.runbook} on {run.stack}, {env}){link}"


ANNOUNCED = frozenset(
    {
        "start",
        "handoff",
        "accept",
        "takeover",
        "finish",
        "approved",
        "rejected",
        "approval_expired",
        "errata_promoted",
    }
)


def _is_failure(event: Event) -> bool:
    if event.type in ("lease_expired", "abort", "silence_expire_failed"):
        return True
    if event.type == "gate":
        return not event.data.get("passed", True)
    return event.type == "finish" and event.data.get("outcome") == RunState.FAILED.value
