"""The real runs service app in a thread on loopback, for tests of its clients (no Docker).

Only the hub's token check is a stand-in: token -> user and scopes (alice and bob, on call, hold
every runs scope; erin, an engineer of `ops` only, reads and writes non-production runs; carol, a
viewer, only reads). The on-call group is alice and bob unless told otherwise. The store is the
real one on the SQLite file given, resolving stacks from the test fleet's inventory (staging is the
one non-production environment, as in the demo); its clock can be moved by hand (lease expiry
without waiting). It silences batches through the real Alertmanager client, at the URL given
(the fake fleet's server: opsbook_fleet answers Alertmanager's silences API). It has an SSH
certificate authority of a freshly generated ed25519 key (what __main__ loads from
RUNS_SSH_CA_KEY), unless told `ssh_ca=None`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from tornado.httpserver import HTTPServer
from tornado.web import RequestHandler

from opsbook.contract import wire
from opsbook.contract.scopes import SCOPE_READ, SCOPE_WRITE, SCOPES
from opsbook.contract.wire import ErrorCode
from opsbook.runs import RunSession
from opsbook.runsclient import RunsClient, RunsError
from opsbook.service.app import Context, make_app
from opsbook.service.fleet import InventorySource
from opsbook.service.notify import Notifier
from opsbook.service.oncall import StaticOncall
from opsbook.service.promotions import Outcome, Pair, Promoter
from opsbook.service.rules import ApprovalPolicy, Caller, Refused
from opsbook.service.silences import Alertmanager
from opsbook.service.ssh_ca import CertificateAuthority
from opsbook.service.store import Store

EVERYTHING = frozenset(SCOPES)
INVENTORY = Path(__file__).parent / "data" / "fleet" / "inventories" / "demo"
USERS = {"alice-token": "alice", "bob-token": "bob", "erin-token": "erin", "carol-token": "carol"}
SCOPES_OF = {
    "erin": frozenset({SCOPE_READ, SCOPE_WRITE}),  # group ops: staging only
    "carol": frozenset({SCOPE_READ}),  # a viewer
}
ONCALL = ("alice", "bob")


class StandInHub:
    """The hub's token check: token -> user and scopes (every runs scope but for erin, carol)."""

    async def caller(self, handler: RequestHandler) -> Caller | None:
        token = handler.request.headers.get("Authorization", "").removeprefix("token ")
        if token not in USERS:
            return None
        name = USERS[token]
        return Caller(name, SCOPES_OF.get(name, EVERYTHING))

    def login_url(self, handler: RequestHandler) -> str:
        return "/hub/login"


class Clock:
    """The store's clock, moved by hand (lease expiry without waiting)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Service:
    """The runs service in a thread, on a fixed loopback port; stop() and start() keep its data."""

    def __init__(
        self,
        database: Path,
        inventory: Path = INVENTORY,
        *,
        alertmanager_url: str,
        ssh_ca: CertificateAuthority | str | None = "generate",
        approval: ApprovalPolicy | None = None,
        oncall: tuple[str, ...] = ONCALL,
    ) -> None:
        if ssh_ca == "generate":
            ssh_ca = CertificateAuthority(ed25519.Ed25519PrivateKey.generate(), minutes=15)
        self.ca: CertificateAuthority | None = ssh_ca  # type: ignore[assignment]
        self.clock = Clock()
        self.oncall = list(oncall)
        self.inventory = InventorySource(inventory, frozenset({"staging"}))
        self.store = Store(
            f"sqlite:///{database}",
            fleet=self.inventory.current,
            alertmanager=Alertmanager(alertmanager_url),
            lease_seconds=30,
            now=self.clock,
            approval=approval,  # None: the default, every production run needs one approver
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/services/runs"
        self._thread: threading.Thread | None = None
        # Set when anyone asks the service for the on-call group (GET api/oncall, a decision).
        self.oncall_asked = threading.Event()
        # The package repository the service promotes errata on (a FakeFleet); None: none.
        self.repository: Promoter | None = None

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            ctx = Context(
                self.store,
                StandInHub(),
                ObservedOncall(self.oncall, self.oncall_asked),
                Notifier(""),
                ssh_ca=self.ca,
                promoter=RepositoryOfTheMoment(self),
            )
            self._server = HTTPServer(make_app(ctx))
            self._server.listen(self.port, "127.0.0.1")
            self._loop = loop
            ready.set()
            loop.run_forever()
            self._server.stop()
            loop.run_until_complete(self._server.close_all_connections())
            ctx.executor.shutdown()
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class ObservedOncall(StaticOncall):
    """The fixed on-call group, setting `asked` when the service looks it up."""

    def __init__(self, users: list[str], asked: threading.Event) -> None:
        super().__init__(users)
        self.asked = asked

    async def members(self) -> list[str]:
        self.asked.set()
        return await super().members()


class RepositoryOfTheMoment:
    """The service's promoter: whatever repository the test gave it (Service.repository), or
    none (503, as a service without RUNS_PACKAGE_REPO_SSH answers)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def promote(self, environment: str, pairs: Sequence[Pair], *, by: str) -> Outcome:
        if self.service.repository is None:
            raise Refused(
                503, ErrorCode.REPOSITORY_UNREACHABLE, "no package repository in this test"
            )
        return self.service.repository.promote(environment, pairs, by=by)


def approved(session: RunSession, service: Service, by: str = "bob") -> RunSession:
    """A production run needs an on-call engineer other than its requester: `by` approves it,
    and the session takes up its lease (a run that needs no approval is left as it is)."""
    if session.awaiting_approval:
        approver = RunsClient(service.url, f"{by}-token", retry_for=10)
        approver.approve(session.run.id, f"unit test: {by} approves")
        session.wait_for_approval(10)
    return session


class Approver:
    """`by` approves every run awaiting approval, in the background, while the context lasts
    (papermill runs of patching.ipynb on a production stack wait for it)."""

    def __init__(
        self, service: Service, by: str = "bob", reason: str = "looks right", after: float = 1.0
    ) -> None:
        self.client = RunsClient(service.url, f"{by}-token", retry_for=10)
        self.reason = reason
        self.after = after  # seconds a run waits before it is approved (as a person would)
        self._seen: dict[int, float] = {}
        self.approved: list[int] = []
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Approver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for run in self.client.runs():
                if run.state is not wire.RunState.AWAITING_APPROVAL or run.id in self.approved:
                    continue
                seen = self._seen.setdefault(run.id, time.monotonic())
                if time.monotonic() - seen >= self.after:
                    self.approved.append(run.id)
                    try:
                        self.client.approve(run.id, self.reason)
                    except RunsError as refused:  # e.g. the run was aborted meanwhile
                        self.refused.append(str(refused))
