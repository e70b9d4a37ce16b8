"""The real runs service app in a thread on loopback, for tests of its clients (no Docker).

Only the hub's token check is a stand-in: token -> user, with every runs scope. The store is the
real one on the SQLite file given, resolving stacks from the test fleet's inventory (staging is the
one non-production environment, as in the demo); its clock can be moved by hand (lease expiry
without waiting). It has an SSH certificate authority of a freshly generated ed25519 key (what
__main__ loads from RUNS_SSH_CA_KEY), unless told `ssh_ca=None`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from tornado.httpserver import HTTPServer
from tornado.web import RequestHandler

from opsbook.contract.scopes import SCOPES
from opsbook.service.app import Context, make_app
from opsbook.service.fleet import InventorySource
from opsbook.service.notify import Notifier
from opsbook.service.oncall import StaticOncall
from opsbook.service.rules import Caller
from opsbook.service.ssh_ca import CertificateAuthority
from opsbook.service.store import Store

EVERYTHING = frozenset(SCOPES)
INVENTORY = Path(__file__).parent / "data" / "fleet" / "inventories" / "demo"
USERS = {"alice-token": "alice", "bob-token": "bob"}


class StandInHub:
    """The hub's token check: token -> user, with every runs scope."""

    async def caller(self, handler: RequestHandler) -> Caller | None:
        token = handler.request.headers.get("Authorization", "").removeprefix("token ")
        return Caller(USERS[token], EVERYTHING) if token in USERS else None

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
        ssh_ca: CertificateAuthority | str | None = "generate",
    ) -> None:
        if ssh_ca == "generate":
            ssh_ca = CertificateAuthority(ed25519.Ed25519PrivateKey.generate(), minutes=15)
        self.ca: CertificateAuthority | None = ssh_ca  # type: ignore[assignment]
        self.clock = Clock()
        self.inventory = InventorySource(inventory, frozenset({"staging"}))
        self.store = Store(
            f"sqlite:///{database}",
            fleet=self.inventory.current,
            lease_seconds=30,
            now=self.clock,
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/services/runs"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            ctx = Context(
                self.store,
                StandInHub(),
                StaticOncall(["alice", "bob"]),
                Notifier(""),
                ssh_ca=self.ca,
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
