"""images/base/http-check.sh: every image's Docker health check (bash, no interpreter to start)."""

import http.server
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

HTTP_CHECK = Path(__file__).resolve().parents[2] / "images" / "base" / "http-check.sh"


SEEN: list[str] = []  # the request lines the server got


class Answers(http.server.BaseHTTPRequestHandler):
    """200 at /ok, 503 at /down, 404 elsewhere."""

    def do_GET(self) -> None:
        SEEN.append(self.requestline)
        self.send_response({"/ok": 200, "/down": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def check(port: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("bash") or "bash", str(HTTP_CHECK), str(port), path],
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_200_is_healthy(port):
    assert check(port, "/ok").returncode == 0
    assert SEEN[-1] == "GET /ok HTTP/1.0"


def test_any_other_status_is_unhealthy_and_says_which(port):
    down = check(port, "/down")
    assert down.returncode == 1
    assert "503" in down.stdout
    assert check(port, "/elsewhere").returncode == 1


def test_nothing_listening_is_unhealthy():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert check(free, "/ok").returncode == 1
