"""A real HTTP server on loopback that answers like a service's API, for health and silence tests.

The tests talk to it through the same client code (prometheus-api-client, requests) that talks to
the real Prometheus and Alertmanager, so retries, timeouts, HTTP errors and JSON parsing are
exercised for real; only the server's answers are scripted.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """One request the fake server received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


# A responder gets the request and returns (HTTP status, JSON-able body); a body of bytes is sent
# as it is, as text/plain (a Debian Packages index, say).
Responder = Callable[[Request], tuple[int, Any]]


@dataclass
class FakeServer:
    """A loopback HTTP server whose answers come from `responder`; it records every request."""

    url: str
    responder: Responder
    requests: list[Request] = field(default_factory=list)


@contextmanager
def running_server() -> Iterator[FakeServer]:
    """Serve on 127.0.0.1 and an ephemeral port in a thread until the block ends."""
    server = FakeServer(url="", responder=lambda request: (500, {"error": "no responder set"}))

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command,
                path=parts.path,
                query={key: values[0] for key, values in parse_qs(parts.query).items()},
                body=json.loads(raw) if raw else None,
            )
            server.requests.append(request)
            status, body = server.responder(request)
            raw_body = isinstance(body, bytes)
            payload = body if raw_body else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if raw_body else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            """A client that gave up (a timeout test) is expected; anything else is reported."""
            if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                super().handle_error(request, client_address)

    httpd = Server(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
