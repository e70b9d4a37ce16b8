"""Tests of the recorder: a real server on 127.0.0.1 (port 0) in a thread; no Docker.

Run: pytest images/recorder/test_recorder.py
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from recorder import RecorderServer, Settings, Store, settings_from

MAX_BODY = 4096


@pytest.fixture
def server(tmp_path: Path):
    srv = RecorderServer(("127.0.0.1", 0), Store(tmp_path), MAX_BODY)
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def call(srv, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, decoded JSON answer) of one request; Content-Length set when there is a body."""
    connection = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def post(srv, path: str, value: object):
    return call(srv, "POST", path, json.dumps(value).encode(), {"Content-Type": "application/json"})


def raw_request(srv, lines: list[str], body: bytes = b"") -> tuple[int, dict]:
    """A request written by hand (to leave out or garble headers http.client would set)."""
    connection = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        connection.connect()
        connection.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = http.client.HTTPResponse(connection.sock, method=lines[0].split()[0])
        response.begin()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# --- recording and reading back ----------------------------------------------------------------


def test_post_is_recorded_with_its_arrival_time(server, tmp_path):
    before = datetime.now().astimezone()
    alert = {"status": "firing", "alerts": [{"labels": {"instance": "web-2:9100"}}]}

    assert post(server, "/alertmanager", alert) == (200, {"ok": True})

    status, records = call(server, "GET", "/alertmanager")
    assert status == 200
    assert [r["body"] for r in records] == [alert]
    received = datetime.fromisoformat(records[0]["received_at"])
    assert received.utcoffset().total_seconds() == 0
    assert before.timestamp() - 1 <= received.timestamp() <= datetime.now().timestamp() + 1
    lines = (tmp_path / "alertmanager.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_records_keep_their_order_and_channels_stay_apart(server):
    for n in range(3):
        post(server, "/runs", {"text": f"batch {n} done"})
    post(server, "/alertmanager", {"n": 1})

    assert [r["body"]["text"] for r in call(server, "GET", "/runs")[1]] == [
        "batch 0 done",
        "batch 1 done",
        "batch 2 done",
    ]
    assert len(call(server, "GET", "/alertmanager")[1]) == 1
    assert call(server, "GET", "/") == (200, {"channels": ["alertmanager", "runs"]})


def test_a_slack_style_webhook_client_gets_its_200(server):
    # What a Slack incoming-webhook client does: POST JSON with urllib/requests, expect 200.
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.server_address[1]}/runs",
        data=json.dumps({"text": "Run 7 handed to bob", "blocks": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"ok": True}


def test_any_json_value_and_non_ascii_text_round_trip(server):
    values = [{"text": "Neustart fällig ✓"}, [1, 2], "plain", 3.5, None]
    for value in values:
        assert post(server, "/runs", value)[0] == 200
    assert [r["body"] for r in call(server, "GET", "/runs")[1]] == values


def test_a_channel_never_posted_to_is_empty(server):
    assert call(server, "GET", "/nothing-here") == (200, [])


def test_query_string_is_ignored(server):
    assert post(server, "/runs?source=test", {"a": 1})[0] == 200
    assert len(call(server, "GET", "/runs?x=y")[1]) == 1


def test_delete_forgets_a_channel(server):
    post(server, "/runs", {"a": 1})
    post(server, "/runs", {"a": 2})
    post(server, "/alertmanager", {"a": 3})

    assert call(server, "DELETE", "/runs") == (200, {"ok": True, "deleted": 2})
    assert call(server, "GET", "/runs") == (200, [])
    assert len(call(server, "GET", "/alertmanager")[1]) == 1
    assert call(server, "DELETE", "/runs") == (200, {"ok": True, "deleted": 0})


def test_healthz(server):
    assert call(server, "GET", "/healthz") == (200, {"ok": True})


def test_concurrent_posts_are_all_kept_whole(server, tmp_path):
    def send(n: int) -> int:
        return post(server, "/load", {"n": n, "pad": "x" * 1000})[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(send, range(100))) == {200}

    records = call(server, "GET", "/load")[1]
    assert sorted(r["body"]["n"] for r in records) == list(range(100))
    assert len((tmp_path / "load.jsonl").read_text().splitlines()) == 100


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/Upper",
        "/under_score",
        "/a/b",
        "/..",
        "/../etc/passwd",
        "/%2e%2e",
        "/a.jsonl",
        "/" + "a" * 65,
    ],
)
def test_bad_channel_names_are_refused(server, path, tmp_path):
    status, answer = post(server, path, {"a": 1})
    assert status == 404
    assert answer["ok"] is False
    assert "a-z, 0-9" in answer["error"]
    assert call(server, "GET", path)[0] == 404
    assert list(tmp_path.iterdir()) == []


def test_longest_channel_name_is_accepted(server):
    assert post(server, "/" + "a" * 64, {"a": 1})[0] == 200


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_healthz_and_root_take_no_post_or_delete(server, path, tmp_path):
    assert post(server, path, {"a": 1})[0] == 405
    assert call(server, "DELETE", path)[0] == 405
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": 1', "not JSON"),
        (b"payload=%7B%22text%22%3A%22x%22%7D", "not JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_a_body_that_is_not_json_is_refused(server, body, error, tmp_path):
    status, answer = call(server, "POST", "/runs", body)
    assert status == 400
    assert error in answer["error"]
    assert list(tmp_path.iterdir()) == []


def test_a_body_over_the_limit_is_refused_before_it_is_stored(server, tmp_path):
    padding = MAX_BODY - len(json.dumps({"p": ""}))
    assert post(server, "/runs", {"p": "x" * padding})[0] == 200  # exactly the limit

    status, answer = post(server, "/runs", {"p": "x" * (padding + 1)})
    assert status == 413
    assert f"at most {MAX_BODY}" in answer["error"]
    assert len(call(server, "GET", "/runs")[1]) == 1


def test_a_much_larger_body_still_gets_its_413(server):
    # 10 MB against a 4 KB limit: the client is still sending when the answer comes. The server
    # reads the rest before it answers (else the client gets a broken pipe and never the 413).
    status, _ = call(server, "POST", "/runs", b"x" * 10_000_000)
    assert status == 413


def test_a_body_without_content_length_is_refused(server):
    status, answer = raw_request(server, ["POST /runs HTTP/1.0", "Host: x"])
    assert status == 411
    status, answer = raw_request(
        server,
        ["POST /runs HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"],
        b'7\r\n{"a":1}\r\n0\r\n\r\n',
    )
    assert status == 411
    assert "chunked" in answer["error"]


@pytest.mark.parametrize("length", ["-1", "ten", "1e3"])
def test_a_bad_content_length_is_refused(server, length):
    status, _ = raw_request(server, ["POST /runs HTTP/1.0", "Host: x", f"Content-Length: {length}"])
    assert status == 400


def test_a_body_shorter_than_announced_is_refused(server, tmp_path):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    connection.connect()
    connection.sock.sendall(b'POST /runs HTTP/1.0\r\nContent-Length: 100\r\n\r\n{"a": 1}')
    connection.sock.shutdown(1)  # no more to send: the server sees the body end early
    response = http.client.HTTPResponse(connection.sock, method="POST")
    response.begin()
    assert response.status == 400
    connection.close()
    assert list(tmp_path.iterdir()) == []


# --- the store alone -----------------------------------------------------------------------------


def test_store_uses_its_clock_and_skips_a_half_written_last_line(tmp_path):
    store = Store(tmp_path, clock=lambda: "2026-11-26T12:00:00.000+00:00")
    store.append("runs", {"a": 1})
    with (tmp_path / "runs.jsonl").open("a") as file:
        file.write('{"received_at": "2026-11-26T12:00:01')  # a crash in mid-write

    assert store.records("runs") == [
        {"received_at": "2026-11-26T12:00:00.000+00:00", "body": {"a": 1}}
    ]
    assert store.channels() == ["runs"]


def test_store_refuses_a_bad_channel_name(tmp_path):
    with pytest.raises(ValueError, match="bad channel"):
        Store(tmp_path).append("../x", {})


# --- settings ------------------------------------------------------------------------------------


def test_settings_defaults_and_values(tmp_path):
    assert settings_from({"RECORDER_DIR": str(tmp_path)}) == Settings(
        port=8080, directory=tmp_path, max_body=1048576
    )
    assert settings_from(
        {"RECORDER_DIR": str(tmp_path), "RECORDER_PORT": "9000", "RECORDER_MAX_BODY": "10"}
    ) == Settings(port=9000, directory=tmp_path, max_body=10)


def test_every_bad_setting_is_named(tmp_path):
    with pytest.raises(ValueError) as error:
        settings_from(
            {
                "RECORDER_PORT": "80a",
                "RECORDER_MAX_BODY": "0",
                "RECORDER_DIR": str(tmp_path / "missing"),
            }
        )
    lines = str(error.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "RECORDER_PORT",
        "RECORDER_MAX_BODY",
        "RECORDER_DIR",
    ]
    assert "got '80a'" in lines[0]


# --- logs ----------------------------------------------------------------------------------------


def test_requests_are_logged_but_not_bodies_nor_health_checks(server, caplog):
    with caplog.at_level("INFO", logger="recorder"):
        post(server, "/runs", {"text": "secret-ish payload"})
        call(server, "GET", "/healthz")
        call(server, "GET", "/nope_")
    lines = [r.getMessage() for r in caplog.records]
    assert any('"POST /runs HTTP/1.1" 200' in line for line in lines)
    assert any('"GET /nope_ HTTP/1.1" 404' in line for line in lines)
    assert not any("healthz" in line for line in lines)
    assert not any("secret-ish" in line for line in lines)
