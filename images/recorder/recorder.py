"""Recorder: keeps what webhooks send it, so that demos and tests can read it back.

Alertmanager posts its notifications to /alertmanager, the runs service its Slack-style messages
to /runs. Python's standard library only.

    POST   /<channel>   a JSON body: appended, with the time it arrived, to <dir>/<channel>.jsonl;
                        answers 200 {"ok": true} (a Slack-style webhook client wants a 200)
    GET    /<channel>   the channel's records, oldest first:
                        [{"received_at": "2026-11-26T12:00:00.123+00:00", "body": {...}}, ...]
                        ([] for a channel that never received anything)
    DELETE /<channel>   forgets the channel's records: {"ok": true, "deleted": <count>}
    GET    /            {"channels": ["alertmanager", ...]}
    GET    /healthz     200 {"ok": true}

A channel name is 1 to 64 of a-z, 0-9 and "-"; "healthz" is not a channel. Errors answer
{"ok": false, "error": "..."}: 400 (body not JSON, not UTF-8, or shorter than announced),
404 (no such path), 405 (method not allowed on the path), 411 (no Content-Length), 413 (body
larger than RECORDER_MAX_BODY).

Settings (environment), checked at start; a bad one stops the start with a line naming it:
    RECORDER_PORT      port to listen on, on all interfaces [8080]
    RECORDER_DIR       folder of the <channel>.jsonl files [/var/lib/recorder]
    RECORDER_MAX_BODY  largest body accepted, in bytes [1048576]

Logs go to stdout, one line per request (never a body; not the health check's).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

VERSION = "0.1.0"
CHANNEL = re.compile(r"[a-z0-9-]{1,64}")
HEALTH_PATH = "/healthz"
RESERVED = frozenset({"healthz"})
# A body refused as too large is still read (and dropped) up to this size, so that the client,
# still sending it, reads the 413 rather than a reset connection.
DRAIN_LIMIT = 16 * 1024 * 1024

log = logging.getLogger("recorder")


class Rejected(Exception):
    """A request the recorder refuses: the HTTP status and a message for the client."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def channel_of(path: str) -> str:
    """The channel a request path names ("/alertmanager?x=1" gives "alertmanager")."""
    name = urlsplit(path).path.removeprefix("/")
    if not CHANNEL.fullmatch(name) or name in RESERVED:
        raise Rejected(
            HTTPStatus.NOT_FOUND,
            f"no channel {name!r}: expected /<channel>, 1 to 64 of a-z, 0-9 and '-'",
        )
    return name


def parse_body(raw: bytes) -> object:
    """The JSON value of a request body."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise Rejected(HTTPStatus.BAD_REQUEST, f"body is not UTF-8: {error}") from None
    except json.JSONDecodeError as error:
        raise Rejected(HTTPStatus.BAD_REQUEST, f"body is not JSON: {error}") from None


def now_utc() -> str:
    """The current time, ISO 8601 in UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """The channels' records: one JSON Lines file per channel, appended to, never rewritten."""

    def __init__(self, directory: Path, clock: Callable[[], str] = now_utc):
        self.directory = Path(directory)
        self.clock = clock
        # One lock for all channels: readers never see half a line, appends never interleave.
        self._lock = threading.Lock()

    def _file(self, channel: str) -> Path:
        if not CHANNEL.fullmatch(channel):
            raise ValueError(f"bad channel name {channel!r}")
        return self.directory / f"{channel}.jsonl"

    def append(self, channel: str, body: object) -> dict:
        """Record a body; returns the record as it was written."""
        record = {"received_at": self.clock(), "body": body}
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock, self._file(channel).open("a", encoding="utf-8") as file:
            file.write(line)
        return record

    def records(self, channel: str) -> list[dict]:
        """A channel's records, oldest first ([] when it has none)."""
        try:
            with self._lock:
                text = self._file(channel).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # Only a crash in mid-write leaves such a line (the last one); skip, do not fail.
                log.warning("%s.jsonl line %d is not JSON; skipped", channel, number)
        return records

    def clear(self, channel: str) -> int:
        """Forget a channel's records; returns how many there were."""
        with self._lock:
            path = self._file(channel)
            try:
                count = len(path.read_text(encoding="utf-8").splitlines())
            except FileNotFoundError:
                return 0
            path.unlink()
        return count

    def channels(self) -> list[str]:
        """The channels that have records, sorted."""
        return sorted(
            path.stem for path in self.directory.glob("*.jsonl") if CHANNEL.fullmatch(path.stem)
        )


class Handler(BaseHTTPRequestHandler):
    """HTTP front of a Store; the server gives it `store` and `max_body`."""

    server: RecorderServer
    server_version = f"opsbook-recorder/{VERSION}"
    timeout = 10  # seconds a client may take to send its request

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == HEALTH_PATH:
            self._answer(HTTPStatus.OK, {"ok": True})
        elif path == "/":
            self._answer(HTTPStatus.OK, {"channels": self.server.store.channels()})
        else:
            self._handle(lambda: self.server.store.records(channel_of(self.path)))

    def do_POST(self) -> None:
        def record() -> dict:
            channel = self._channel_for_change()
            body = parse_body(self._read_body())
            self.server.store.append(channel, body)
            return {"ok": True}

        self._handle(record)

    def do_DELETE(self) -> None:
        def clear() -> dict:
            deleted = self.server.store.clear(self._channel_for_change())
            return {"ok": True, "deleted": deleted}

        self._handle(clear)

    def _channel_for_change(self) -> str:
        if urlsplit(self.path).path in (HEALTH_PATH, "/"):
            raise Rejected(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is for /<channel>")
        return channel_of(self.path)

    def _read_body(self) -> bytes:
        """The request body, at most max_body bytes; refused before reading when larger."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise Rejected(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length (no chunked bodies)")
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise Rejected(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
        if not declared.strip().isdigit():
            raise Rejected(HTTPStatus.BAD_REQUEST, f"bad Content-Length {declared!r}")
        length = int(declared)
        if length > self.server.max_body:
            self._drain(length)
            raise Rejected(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes; at most {self.server.max_body} accepted",
            )
        raw = self.rfile.read(length)
        if len(raw) != length:
            raise Rejected(HTTPStatus.BAD_REQUEST, f"body ended after {len(raw)} of {length} bytes")
        return raw

    def _drain(self, length: int) -> None:
        """Read and drop a body the recorder refuses, when it is not absurdly large."""
        left = length if length <= DRAIN_LIMIT else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 64 * 1024))
            if not chunk:
                break
            left -= len(chunk)

    def _handle(self, action: Callable[[], object]) -> None:
        try:
            result = action()
        except Rejected as rejected:
            # The body may be unread: never reuse this connection.
            self.close_connection = True
            self._answer(rejected.status, {"ok": False, "error": rejected.message})
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            self.close_connection = True
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "error": "internal error"})
        else:
            self._answer(HTTPStatus.OK, result)

    def _answer(self, status: HTTPStatus, payload: object) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The health check asks every few seconds: only its failures are worth a line.
        if urlsplit(self.path).path == HEALTH_PATH and str(code) == "200":
            return
        super().log_request(code, size)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


class RecorderServer(ThreadingHTTPServer):
    """A threading HTTP server that records into `store`; stops cleanly (waits for requests)."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 64  # listen backlog (socketserver's 5 resets bursts of clients)

    def __init__(self, address: tuple[str, int], store: Store, max_body: int):
        self.store = store
        self.max_body = max_body
        super().__init__(address, Handler)


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    directory: Path = Path("/var/lib/recorder")
    max_body: int = 1024 * 1024


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings from the environment; ValueError lists every bad variable, one line each."""
    errors = []

    def number(name: str, default: int, low: int, high: int, example: str) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        if raw.isdigit() and low <= int(raw) <= high:
            return int(raw)
        errors.append(f"{name}: expected {example} ({low} to {high}), got {raw!r}")
        return default

    port = number("RECORDER_PORT", Settings.port, 1, 65535, "a port such as 8080")
    max_body = number("RECORDER_MAX_BODY", Settings.max_body, 1, 2**31, "a size in bytes")
    directory = Path(env.get("RECORDER_DIR", "").strip() or Settings.directory)
    if not directory.is_dir():
        errors.append(f"RECORDER_DIR: expected an existing folder, got '{directory}'")
    elif not os.access(directory, os.W_OK | os.X_OK):
        errors.append(f"RECORDER_DIR: '{directory}' is not writable by uid {os.getuid()}")
    if errors:
        raise ValueError("\n".join(errors))
    return Settings(port=port, directory=directory, max_body=max_body)


def serve(settings: Settings, host: str = "0.0.0.0") -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return."""
    server = RecorderServer((host, settings.port), Store(settings.directory), settings.max_body)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "recorder %s on port %d, records in %s, bodies up to %d bytes",
        VERSION,
        settings.port,
        settings.directory,
        settings.max_body,
    )
    with server:
        server.serve_forever()
    log.info("stopped")


def main() -> int:
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        settings = settings_from(os.environ)
    except ValueError as error:
        for line in str(error).splitlines():
            print(f"opsbook recorder: {line}", file=sys.stderr)
        return 1
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
