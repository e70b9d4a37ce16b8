"""The runs ledger on a real PostgreSQL server, and what the runs service sustains.

1. Every test of tests/unit/service/test_runs_store.py runs again here on PostgreSQL (the image
   opsbook/postgres, in a container of its own, `opsbook-test-postgres`, published on a random
   loopback port): the SQLite suite's tests and fixtures are taken as they are, only
   `database_url` is this module's, and every test starts from empty tables.
2. Throughput and page times through the HTTP API, on SQLite and on PostgreSQL: 10,000 synthetic
   runner events appended by one client in batches, and the status pages of that run.

Without Docker these tests skip, saying why; in CI (CI=true) they fail. The image is built by
`make test-e2e` (scripts/build-images.sh); a missing image fails with the command that builds it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.web import RequestHandler

from opsbook.contract.scopes import SCOPES
from opsbook.contract.wire import AppendResult, Run
from opsbook.service.app import Context, make_app
from opsbook.service.fleet import Fleet, Stack
from opsbook.service.notify import Notifier
from opsbook.service.oncall import StaticOncall
from opsbook.service.rules import Caller
from opsbook.service.store import Store
from opsbook.service.tables import metadata

from . import stack as test_stack
from .conftest import docker_answers

IMAGE = f"opsbook/postgres:{test_stack.IMAGE_TAG}"
CONTAINER = f"{test_stack.PROJECT}-postgres"
SERVICE_TESTS = Path(__file__).resolve().parents[1] / "unit" / "service"


def _module(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"runs_tests_on_postgres_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The in-memory Alertmanager the store's tests silence batches at, importable as they import it.
sys.modules.setdefault("fake_alertmanager", _module(SERVICE_TESTS / "fake_alertmanager.py"))
FakeAlertmanager = sys.modules["fake_alertmanager"].FakeAlertmanager


def _load_store_tests() -> dict[str, object]:
    """The store's unit tests and the fixtures they use (theirs, the test inventory and the
    in-memory Alertmanager)."""
    store_tests = vars(_module(SERVICE_TESTS / "test_runs_store.py"))
    wanted = {"clock", "open_store", "store"}
    found = {
        name: value
        for name, value in store_tests.items()
        if name.startswith("test_") or name in wanted
    }
    conftest = vars(_module(SERVICE_TESTS / "conftest.py"))
    found["inventory"] = conftest["inventory"]
    found["alertmanager"] = conftest["alertmanager"]
    return found


globals().update(_load_store_tests())  # the store suite; `database_url` below points it here


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL server for this module; yields its SQLAlchemy URL."""
    if not docker_answers():
        reason = "no Docker engine answers (`docker info` fails): PostgreSQL tests need one"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    if _docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(
            f"image {IMAGE} is missing: `make test-e2e` builds it, or "
            f"`DOCKER_BUILDKIT=0 docker build -t {IMAGE} images/postgres`"
        )
    _docker("rm", "-f", "-v", CONTAINER, check=False)
    password = secrets.token_hex(16)
    _docker(
        "run",
        "-d",
        "--name",
        CONTAINER,
        "-e",
        f"POSTGRES_PASSWORD={password}",
        "-p",
        "127.0.0.1::5432",
        IMAGE,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            health = _docker("inspect", "-f", "{{.State.Health.Status}}", CONTAINER).stdout
            if health.strip() == "healthy":
                break
            if time.monotonic() > deadline:
                logs = _docker("logs", "--tail", "20", CONTAINER, check=False)
                pytest.fail(f"{CONTAINER} not healthy after 90 s:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        port = _docker("port", CONTAINER, "5432/tcp").stdout.split(":")[-1].strip()
        yield f"postgresql+psycopg2://runs:{password}@127.0.0.1:{port}/runs"
    finally:
        _docker("rm", "-f", "-v", CONTAINER, check=False)


@pytest.fixture
def database_url(postgres_server: str) -> str:
    """PostgreSQL, with every table dropped: each test starts from an empty ledger."""
    engine = create_engine(postgres_server)
    metadata.drop_all(engine)
    engine.dispose()
    return postgres_server


def test_the_suite_really_runs_on_postgresql(store):
    assert store.backend == "postgresql"


# --- throughput and page times through HTTP -------------------------------------------------------

TOKEN = "bench-token"


HOSTS = tuple(f"web-{i:02d}" for i in range(50))


class BenchIdentity:
    async def caller(self, handler: RequestHandler) -> Caller | None:
        if handler.request.headers.get("Authorization") == f"token {TOKEN}":
            return Caller("alice", frozenset(SCOPES))
        return None

    def login_url(self, handler: RequestHandler) -> str | None:
        return None


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request, tmp_path) -> Iterator[tuple[str, Store]]:
    """The runs app on a loopback port, in a thread of its own, on either database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    else:
        url = request.getfixturevalue("database_url")
    # A stack of 50 hosts, in staging, as the inventory would give it.
    bench = Stack(name="bench", hosts=HOSTS, environment="staging", production=False)
    store = Store(
        url,
        fleet=lambda: Fleet(source="bench", stacks={"bench": bench}),
        alertmanager=FakeAlertmanager(),
    )
    ctx = Context(
        store=store,
        identity=BenchIdentity(),
        oncall=StaticOncall(["alice"]),
        notifier=Notifier(""),
    )
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    started = threading.Event()
    loops: list[IOLoop] = []

    def serve() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        server = HTTPServer(make_app(ctx))
        server.add_sockets(sockets)
        loops.append(IOLoop.current())
        started.set()
        IOLoop.current().start()
        server.stop()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    yield f"http://127.0.0.1:{port}/services/runs/", store
    loops[0].add_callback(loops[0].stop)
    thread.join(10)
    ctx.executor.shutdown()
    store.close()


def test_ingest_rate_and_page_times_with_10000_events(service):
    base, store = service
    http = requests.Session()
    http.headers["Authorization"] = f"token {TOKEN}"
    hosts = HOSTS
    body = {"runbook": "patching", "stack": "bench", "options": {"batch_size": 10}}
    response = http.post(f"{base}api/runs", json=body, timeout=30)
    assert response.status_code == 201, response.text
    run = Run.from_dict(response.json())
    figures = []
    total, per_request = 10_000, 200
    started = time.perf_counter()
    for offset in range(0, total, per_request):
        events = [
            {
                "type": "runner_on_ok",
                "uuid": f"{run.id}-{n}",
                "host": hosts[n % 50],
                "task": f"Install updates ({n})",
                "batch": n % 50 // 10 + 1,
                "data": {"changed": n % 3 == 0, "rc": 0},
                "at": "2026-11-26T12:00:00+00:00",
            }
            for n in range(offset, offset + per_request)
        ]
        response = http.post(f"{base}api/runs/{run.id}/events", json={"events": events}, timeout=60)
        assert response.status_code == 200, response.text
        assert AppendResult.from_dict(response.json()).stored == per_request
    seconds = time.perf_counter() - started
    rate = total / seconds
    figures.append(
        f"{total} events in {seconds:.2f} s = {rate:.0f} events/s ({per_request}/request)"
    )
    # resending a batch after a lost answer: all duplicates, nothing stored twice
    response = http.post(f"{base}api/runs/{run.id}/events", json={"events": events}, timeout=60)
    assert response.json()["duplicates"] == per_request
    assert store.event_count(run.id) == total + 1

    for name, path in (("status page", ""), ("run page", f"runs/{run.id}")):
        http.get(f"{base}{path}", timeout=30)  # warm
        started = time.perf_counter()
        for _ in range(5):
            response = http.get(f"{base}{path}", timeout=30)
            assert response.status_code == 200
        figures.append(f"{name} {(time.perf_counter() - started) / 5 * 1000:.0f} ms")
    started = time.perf_counter()
    response = http.get(f"{base}api/runs/{run.id}/events?since=9000&limit=1000", timeout=30)
    figures.append(f"1000 events by API {(time.perf_counter() - started) * 1000:.0f} ms")
    assert len(json.loads(response.text)["events"]) == 1000
    print(f"\nruns service on {store.backend}: " + "; ".join(figures))
    assert rate > 300, figures  # far below what it does; catches a pathological regression
