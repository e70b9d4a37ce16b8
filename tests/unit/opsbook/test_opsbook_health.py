"""Health gates against a real HTTP server that answers like Prometheus' query API.

Every way of not knowing must fail the gate: that is the property that keeps a rolling patch from
walking on while hosts are broken.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opsbook_fakes import FakeServer, Request, Responder

from opsbook import health
from opsbook.errors import HealthError
from opsbook.health import (
    DEFAULT_CHECKS,
    LOAD,
    UP,
    Check,
    CheckResult,
    GateResult,
    gate,
    query_range,
)

WEB = {"web-1": "web-1:9100", "web-2": "web-2:9100"}
HEALTHY = {
    "up": {"web-1:9100": "1", "web-2:9100": "1"},
    "node_load1": {"web-1:9100": "0.25", "web-2:9100": "0.5"},
    "node_filesystem_avail_bytes": {"web-1:9100": "0.6", "web-2:9100": "0.4"},
}

_FIRST_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
_INSTANCE_REGEX = re.compile(r'instance=~"((?:[^"\\]|\\.)*)"')
_INSTANCE_EXACT = re.compile(r'instance="((?:[^"\\]|\\.)*)"')


def _unquote(promql_string: str) -> str:
    return re.sub(r"\\(.)", r"\1", promql_string)


def prometheus(values: dict[str, dict[str, str]]) -> Responder:
    """A responder answering instant queries from a metric -> instance -> value table.

    Like Prometheus it selects series by the query's instance matcher (an anchored regex or an
    exact value), so the escaping of the gate's queries is checked too.
    """

    def respond(request: Request) -> tuple[int, Any]:
        query = request.query["query"]
        table = values.get(_FIRST_METRIC.search(query).group(1), {})
        if regex := _INSTANCE_REGEX.search(query):
            wanted = re.compile(_unquote(regex.group(1)))
            selected = {i: v for i, v in table.items() if wanted.fullmatch(i)}
        else:
            exact = _unquote(_INSTANCE_EXACT.search(query).group(1))
            selected = {i: v for i, v in table.items() if i == exact}
        result = [{"metric": {"instance": i}, "value": [1.7e9, v]} for i, v in selected.items()]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    return respond


def by_host(result: GateResult) -> dict[tuple[str, str], CheckResult]:
    return {(r.host, r.check): r for r in result.results}


def test_healthy_hosts_pass(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus(HEALTHY)
    result = gate(fake_server.url, WEB, DEFAULT_CHECKS)
    assert result.passed
    assert result.failures == []
    assert [(r.host, r.check, r.value) for r in result.results] == [
        ("web-1", "up", 1.0),
        ("web-1", "load", 0.25),
        ("web-1", "disk", 0.6),
        ("web-2", "up", 1.0),
        ("web-2", "load", 0.5),
        ("web-2", "disk", 0.4),
    ]
    assert result.summary() == "health gate passed: 2 hosts, checks up, load, disk"
    # one query per check for all hosts, selecting exactly their instances
    assert len(fake_server.requests) == 3
    assert 'up{instance=~"web-1:9100|web-2:9100"}' in fake_server.requests[0].query["query"]


def test_a_value_over_threshold_fails_and_is_named(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus(
        {**HEALTHY, "node_load1": {**HEALTHY["node_load1"], "web-2:9100": "3.5"}}
    )
    result = gate(fake_server.url, WEB, DEFAULT_CHECKS)
    assert not result.passed
    assert [(r.host, r.check) for r in result.failures] == [("web-2", "load")]
    assert result.failures[0].value == 3.5
    assert result.summary() == (
        "health gate FAILED: 1 of 2 hosts failed\n"
        "  web-2: load: value 3.5; expected < 1 (1-minute load average per CPU)"
    )


def test_dots_in_instances_are_escaped(fake_server: FakeServer) -> None:
    # 'webX1' would match an unescaped 'web.1'; the gate must not read another host's value
    fake_server.responder = prometheus({"up": {"webX1.example:9100": "1"}})
    result = gate(fake_server.url, {"web.1": "web.1.example:9100"}, [UP])
    assert not result.passed
    assert result.failures[0].message.startswith("no data: Prometheus returned no series")
    assert 'instance=~"web\\\\.1\\\\.example:9100"' in fake_server.requests[0].query["query"]


def test_unreachable_prometheus_fails_closed_quickly(closed_port_url: str) -> None:
    started = time.monotonic()
    result = gate(closed_port_url, WEB, DEFAULT_CHECKS, timeout=2)
    assert time.monotonic() - started < 5
    assert not result.passed
    assert len(result.failures) == 6
    assert all(r.value is None for r in result.failures)
    first, *rest = [r for r in result.results if r.host == "web-1"]
    assert f"Prometheus at {closed_port_url} is unreachable" in first.message
    assert all(r.message.startswith("not asked: Prometheus at") for r in rest)
    assert "web-1: up: Prometheus at" in result.summary()


def test_slow_prometheus_fails_closed_within_the_timeout(fake_server: FakeServer) -> None:
    def too_slow(request: Request) -> tuple[int, Any]:
        time.sleep(1)
        return prometheus(HEALTHY)(request)

    fake_server.responder = too_slow
    started = time.monotonic()
    result = gate(fake_server.url, WEB, DEFAULT_CHECKS, timeout=0.2)
    assert time.monotonic() - started < 1  # one retry, then the other checks are not asked
    assert not result.passed
    assert "did not answer in time" in by_host(result)[("web-1", "up")].message
    assert by_host(result)[("web-2", "disk")].message.startswith("not asked:")


def test_server_errors_are_retried_once_then_fail(fake_server: FakeServer) -> None:
    fake_server.responder = lambda request: (503, {"status": "error"})
    result = gate(fake_server.url, WEB, DEFAULT_CHECKS)
    assert not result.passed
    assert "kept answering with server errors" in by_host(result)[("web-2", "up")].message
    assert len(fake_server.requests) == 2  # one retry, and the other checks were not asked


def test_rejected_query_fails_that_check_only(fake_server: FakeServer) -> None:
    healthy = prometheus(HEALTHY)

    def respond(request: Request) -> tuple[int, Any]:
        if "bogus" in request.query["query"]:
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        return healthy(request)

    fake_server.responder = respond
    broken = Check("broken", 'bogus((up{instance=~"{instances}"}', "==", 1, "a typo")
    result = gate(fake_server.url, WEB, [UP, broken])
    assert [(r.host, r.check) for r in result.failures] == [
        ("web-1", "broken"),
        ("web-2", "broken"),
    ]
    assert "Prometheus rejected the query: HTTP Status Code 400" in result.failures[0].message
    assert "parse error" in result.failures[0].message


def test_empty_result_fails(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus({})
    result = gate(fake_server.url, WEB, [UP])
    assert not result.passed
    assert {r.message for r in result.results} == {
        "no data: Prometheus returned no series; expected == 1 "
        "(Prometheus scrapes the host's node exporter)"
    }


def test_host_missing_from_result_fails(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus({"up": {"web-1:9100": "1"}})
    result = gate(fake_server.url, WEB, [UP])
    assert by_host(result)[("web-1", "up")].passed
    missing = by_host(result)[("web-2", "up")]
    assert not missing.passed
    assert missing.message.startswith("no data for instance web-2:9100")
    assert "web-2: up: no data" in result.summary()


def test_nan_fails(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus({"node_load1": {"web-1:9100": "NaN", "web-2:9100": "0.1"}})
    result = gate(fake_server.url, WEB, [LOAD])
    nan = by_host(result)[("web-1", "load")]
    assert not nan.passed
    assert math.isnan(nan.value)
    assert nan.message.startswith("value is NaN")
    assert by_host(result)[("web-2", "load")].passed
    # NaN compares unequal to everything: a '!=' check must still not pass on it
    not_idle = Check("busy", 'node_load1{instance=~"{instances}"}', "!=", 0, "load is not zero")
    assert [r.host for r in gate(fake_server.url, WEB, [not_idle]).failures] == ["web-1"]


def test_per_host_check_asks_once_per_host(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus(
        {"node_procs_running": {"web-1:9100": "12", "web-2:9100": "900"}}
    )
    procs = Check(
        "procs", 'node_procs_running{instance="{instance}"}', "<", 500, "running processes"
    )
    result = gate(fake_server.url, WEB, [procs])
    assert [r.host for r in result.failures] == ["web-2"]
    assert [r.query["query"] for r in fake_server.requests] == [
        'node_procs_running{instance="web-1:9100"}',
        'node_procs_running{instance="web-2:9100"}',
    ]


def test_tuned_check_keeps_its_query(fake_server: FakeServer) -> None:
    fake_server.responder = prometheus(HEALTHY)
    strict = dataclasses.replace(LOAD, threshold=0.3)
    result = gate(fake_server.url, WEB, [strict])
    assert [r.host for r in result.failures] == ["web-2"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"op": "=>"}, r"unknown comparison '=>'; expected one of < <= > >= == !="),
        ({"query": "up"}, "must contain exactly one of the placeholders"),
        ({"query": 'up{instance="{instance}"} or up{instance=~"{instances}"}'}, "exactly one"),
        ({"threshold": float("nan")}, "threshold is NaN"),
    ],
)
def test_invalid_checks_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(HealthError, match=message):
        dataclasses.replace(UP, **fields)


def test_gate_needs_hosts_checks_and_distinct_instances(fake_server: FakeServer) -> None:
    with pytest.raises(HealthError, match="at least one host and one check"):
        gate(fake_server.url, {}, DEFAULT_CHECKS)
    with pytest.raises(HealthError, match="at least one host and one check"):
        gate(fake_server.url, WEB, [])
    with pytest.raises(HealthError, match="hosts share exporter instances web-1:9100"):
        gate(fake_server.url, {"web-1": "web-1:9100", "web-9": "web-1:9100"}, [UP])
    with pytest.raises(HealthError, match="Prometheus URL 'prometheus:9090' is invalid"):
        gate("prometheus:9090", WEB, [UP])
    assert fake_server.requests == []


def test_query_range_returns_series_per_instance(fake_server: FakeServer) -> None:
    matrix = [
        {"metric": {"instance": "web-1:9100"}, "values": [[1.7e9, "0.5"], [1.7e9 + 60, "NaN"]]},
        {"metric": {"job": "node"}, "values": [[1.7e9, "2"]]},
    ]
    fake_server.responder = lambda request: (
        200,
        {"status": "success", "data": {"resultType": "matrix", "result": matrix}},
    )
    end = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    series = query_range(fake_server.url, "node_load1", end - timedelta(hours=1), end, "60s")
    assert [s.label for s in series] == ["web-1:9100", '{job="node"}']
    assert series[0].points[0] == (1.7e9, 0.5)
    assert math.isnan(series[0].points[1][1])
    sent = fake_server.requests[0]
    assert sent.path == "/api/v1/query_range"
    assert sent.query["step"] == "60s"
    assert int(sent.query["end"]) - int(sent.query["start"]) == 3600


def test_query_range_failure_raises(fake_server: FakeServer, closed_port_url: str) -> None:
    fake_server.responder = lambda request: (400, {"status": "error", "error": "parse error"})
    end = datetime.now(UTC)
    with pytest.raises(
        HealthError, match=re.escape("range query 'up{' failed: Prometheus rejected")
    ):
        query_range(fake_server.url, "up{", end - timedelta(minutes=5), end, "15s")
    with pytest.raises(HealthError, match="is unreachable"):
        query_range(closed_port_url, "up", end - timedelta(minutes=5), end, "15s")


def test_gate_checks_take_the_runbooks_thresholds() -> None:
    up, load, disk = health.gate_checks(max_load_per_cpu=4.0, min_free_disk=0.2)
    assert (up, load.threshold, disk.threshold) == (health.UP, 4.0, 0.2)
    assert load.holds(3.5) and not load.holds(4.5)
    with pytest.raises(HealthError, match="max_load_per_cpu"):
        health.gate_checks(max_load_per_cpu=0)
