"""Fixtures shared by the opsbook unit tests: fake HTTP services on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from opsbook_fakes import FakeServer, running_server
from opsbook_fleet import demo_fleet
from opsbook_runs_service import Service


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A loopback HTTP server; set its `responder` to script the answers."""
    with running_server() as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on loopback where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def runs_service(tmp_path: Path, fake_server: FakeServer) -> Iterator[Service]:
    """The real runs service app on loopback (only the hub's token check stood in); it silences
    batches at `fake_server`, a demo fleet's Alertmanager unless a test gives it a fleet."""
    fake_server.responder = demo_fleet()
    service = Service(tmp_path / "runs.sqlite", alertmanager_url=fake_server.url)
    service.start()
    yield service
    service.stop()
    service.store.close()
