"""Health gates: Prometheus must say every host of a batch is up and healthy, or the run stops.

The gate fails closed. A gate that passes when it learnt nothing would let a rolling patch take down
the next batch while the last one is still broken, so every way of not knowing (Prometheus
unreachable or erroring, a query it rejects, no series, no series for a host, a NaN) is a failed
check whose message says which it was. Only a value that was read and compared passes.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

import requests
from prometheus_api_client import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import RETRY_ON_STATUS, PrometheusConnect
from urllib3.exceptions import ReadTimeoutError
from urllib3.util import Retry

from opsbook.errors import HealthError
from opsbook.matchers import exact_regex, promql_string

INSTANCE = "{instance}"
INSTANCES = "{instances}"

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

# One quick retry rides out a blip; prometheus-api-client's own default (three retries with
# back-off) keeps a notebook cell waiting for a server that is not there.
_RETRIES = 1
_RETRY_BACKOFF_SECONDS = 0.2

# After one of these, Prometheus is not asked again within the same gate: it would only time out
# once more per query while the engineer waits.
_SERVER_UNUSABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
)
# Answers that carry no usable value: an HTTP error or a body not shaped like Prometheus' API.
_BAD_ANSWER = (PrometheusApiClientException, requests.RequestException, KeyError, TypeError)
_BAD_SERIES = (KeyError, IndexError, TypeError, ValueError)


@dataclass(frozen=True)
class Check:
    """One health condition: a PromQL value per host that must compare true against a threshold.

    `query` is a template with one placeholder, substituted inside a double-quoted PromQL string:
    - ``{instance}``: the host's exporter instance; the query runs once per host and every series
      it returns counts for that host (e.g. ``up{instance="{instance}"}``);
    - ``{instances}``: a regex matching exactly the gate's instances; the query runs once for all
      hosts and series are matched to hosts by their ``instance`` label
      (e.g. ``up{instance=~"{instances}"}``).
    A host passes only if it has at least one series and every one of its values passes.
    """

    name: str
    query: str
    op: str
    threshold: float
    description: str

    def __post_init__(self) -> None:
        """Reject a check that could never be evaluated, before any gate depends on it."""
        if self.op not in _COMPARISONS:
            raise HealthError(
                f"check '{self.name}': unknown comparison {self.op!r}; "
                f"expected one of {' '.join(_COMPARISONS)}"
            )
        if (INSTANCE in self.query) == (INSTANCES in self.query):
            raise HealthError(
                f"check '{self.name}': query {self.query!r} must contain exactly one of the "
                f"placeholders {INSTANCE} or {INSTANCES}"
            )
        if math.isnan(self.threshold):
            raise HealthError(f"check '{self.name}': threshold is NaN; expected a number")

    @property
    def per_host(self) -> bool:
        """Whether the query runs once per host ({instance}) rather than once for all."""
        return INSTANCE in self.query

    def promql(self, instances: Sequence[str]) -> str:
        """The query for these exporter instances (exactly one for a per-host check)."""
        if self.per_host:
            if len(instances) != 1:
                raise HealthError(
                    f"check '{self.name}' runs per host; expected 1 instance, got {len(instances)}"
                )
            return self.query.replace(INSTANCE, promql_string(instances[0]))
        return self.query.replace(INSTANCES, promql_string(exact_regex(instances)))

    def holds(self, value: float) -> bool:
        """Whether a value passes this check (NaN never does)."""
        return not math.isnan(value) and _COMPARISONS[self.op](value, self.threshold)


UP = Check(
    name="up",
    query='min by (instance) (up{instance=~"{instances}"})',
    op="==",
    threshold=1,
    description="Prometheus scrapes the host's node exporter",
)
LOAD = Check(
    name="load",
    query=(
        'max by (instance) (node_load1{instance=~"{instances}"})'
        ' / count by (instance) (node_cpu_seconds_total{mode="idle", instance=~"{instances}"})'
    ),
    op="<",
    threshold=1.0,
    description="1-minute load average per CPU",
)
ROOT_DISK = Check(
    name="disk",
    query=(
        'min by (instance) (node_filesystem_avail_bytes{mountpoint="/", instance=~"{instances}"}'
        ' / node_filesystem_size_bytes{mountpoint="/", instance=~"{instances}"})'
    ),
    op=">",
    threshold=0.1,
    description="free fraction of the root filesystem",
)
DEFAULT_CHECKS = (UP, LOAD, ROOT_DISK)


def gate_checks(*, max_load_per_cpu: float = 1.0, min_free_disk: float = 0.1) -> tuple[Check, ...]:
    """The usual checks with a runbook's thresholds (a stack whose normal load is higher, or a
    demo whose containers all see the one machine's load)."""
    if not max_load_per_cpu > 0 or not 0 < min_free_disk < 1:
        raise HealthError(
            f"thresholds: expected max_load_per_cpu > 0 and 0 < min_free_disk < 1, got "
            f"{max_load_per_cpu!r} and {min_free_disk!r}"
        )
    return (
        UP,
        replace(LOAD, threshold=max_load_per_cpu),
        replace(ROOT_DISK, threshold=min_free_disk),
    )


@dataclass(frozen=True)
class CheckResult:
    """One check on one host: passed only if a real value was read and compared."""

    host: str
    check: str
    passed: bool
    value: float | None
    message: str


@dataclass(frozen=True)
class GateResult:
    """Every check on every host of a gate, host by host."""

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True only if there were results and every one passed."""
        return bool(self.results) and all(result.passed for result in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The results that did not pass."""
        return [result for result in self.results if not result.passed]

    def summary(self) -> str:
        """A few lines for a person: passed, or each failing host with each reason."""
        hosts = list(dict.fromkeys(result.host for result in self.results))
        checks = list(dict.fromkeys(result.check for result in self.results))
        if self.passed:
            return f"health gate passed: {len(hosts)} hosts, checks {', '.join(checks)}"
        failing_hosts = dict.fromkeys(result.host for result in self.failures)
        lines = [f"health gate FAILED: {len(failing_hosts)} of {len(hosts)} hosts failed"]
        lines += [f"  {r.host}: {r.check}: {r.message}" for r in self.failures]
        return "\n".join(lines)


class Series(NamedTuple):
    """One time series of a range query: its instance (or label set) and (timestamp, value)s."""

    label: str
    points: list[tuple[float, float]]


def gate(
    prometheus_url: str,
    instances_by_host: Mapping[str, str],
    checks: Sequence[Check] = DEFAULT_CHECKS,
    *,
    timeout: float = 5.0,
) -> GateResult:
    """Ask Prometheus every check for every host; see the module docstring for failing closed.

    `instances_by_host` maps each inventory host to its exporter's instance label
    (Inventory.exporter_instances gives it). `timeout` bounds each HTTP request in seconds.
    """
    if not instances_by_host or not checks:
        raise HealthError("a health gate needs at least one host and one check")
    check_order = {check.name: position for position, check in enumerate(checks)}
    if len(check_order) != len(checks):
        raise HealthError(
            f"checks {[check.name for check in checks]} repeat a name; expected distinct names"
        )
    shared = [i for i, count in Counter(instances_by_host.values()).items() if count > 1]
    if shared:
        raise HealthError(
            f"hosts share exporter instances {', '.join(sorted(shared))}; expected one per host"
        )
    results: list[CheckResult] = []
    unreachable: str | None = None
    with _connect(prometheus_url, timeout) as prometheus:
        for check in checks:
            for scope in _query_scopes(check, instances_by_host):
                if unreachable:
                    results += _all_failed(check, scope, f"not asked: {unreachable}")
                    continue
                try:
                    series = prometheus.custom_query(check.promql(list(scope.values())))
                except _SERVER_UNUSABLE as error:
                    unreachable = _describe_failure(prometheus_url, error)
                    results += _all_failed(check, scope, unreachable)
                except _BAD_ANSWER as error:
                    results += _all_failed(check, scope, _describe_failure(prometheus_url, error))
                else:
                    results += _judge(check, scope, series)
    host_order = {host: position for position, host in enumerate(instances_by_host)}
    results.sort(key=lambda result: (host_order[result.host], check_order[result.check]))
    return GateResult(tuple(results))


def query_range(
    prometheus_url: str,
    query: str,
    start: datetime,
    end: datetime,
    step: str,
    *,
    timeout: float = 5.0,
) -> list[Series]:
    """A PromQL range query as plain series, for plotting a check's history around a batch.

    Unlike a gate this has no verdict to fail closed into, so failures raise HealthError.
    """
    with _connect(prometheus_url, timeout) as prometheus:
        try:
            answer = prometheus.custom_query_range(query, start_time=start, end_time=end, step=step)
            return [
                Series(
                    _series_label(item["metric"]), [(float(t), float(v)) for t, v in item["values"]]
                )
                for item in answer
            ]
        except (*_SERVER_UNUSABLE, *_BAD_ANSWER, *_BAD_SERIES) as error:
            raise HealthError(
                f"range query {query!r} failed: {_describe_failure(prometheus_url, error)}"
            ) from error


def _connect(prometheus_url: str, timeout: float) -> PrometheusConnect:
    """A client that gives up quickly: one retry, then the caller hears about it."""
    if not prometheus_url.startswith(("http://", "https://")):
        raise HealthError(f"Prometheus URL {prometheus_url!r} is invalid; expected http(s)://...")
    retry = Retry(
        total=_RETRIES, backoff_factor=_RETRY_BACKOFF_SECONDS, status_forcelist=RETRY_ON_STATUS
    )
    return PrometheusConnect(url=prometheus_url.rstrip("/"), retry=retry, timeout=timeout)


def _query_scopes(check: Check, instances_by_host: Mapping[str, str]) -> list[dict[str, str]]:
    """The host → instance maps to query: one per host for a per-host check, else all at once."""
    if check.per_host:
        return [{host: instance} for host, instance in instances_by_host.items()]
    return [dict(instances_by_host)]


def _all_failed(check: Check, scope: Mapping[str, str], message: str) -> list[CheckResult]:
    return [CheckResult(host, check.name, False, None, message) for host in scope]


def _judge(check: Check, scope: Mapping[str, str], series: Any) -> list[CheckResult]:
    """Compare each host's values; a host without a value, or with NaN, fails."""
    if not series:
        return _all_failed(
            check, scope, f"no data: Prometheus returned no series; {_expected(check)}"
        )
    values: dict[str, list[float]] = {host: [] for host in scope}
    host_of_instance = {instance: host for host, instance in scope.items()}
    try:
        for item in series:
            instance = item["metric"].get("instance")
            host = next(iter(scope)) if check.per_host else host_of_instance.get(instance)
            if host is not None:
                values[host].append(float(item["value"][1]))
    except _BAD_SERIES as error:
        return _all_failed(check, scope, f"unexpected answer from Prometheus: {error!r}")
    return [_judge_host(check, host, scope[host], values[host]) for host in scope]


def _judge_host(check: Check, host: str, instance: str, values: list[float]) -> CheckResult:
    if not values:
        message = f"no data for instance {instance} in the answer; {_expected(check)}"
        return CheckResult(host, check.name, False, None, message)
    failing = [value for value in values if not check.holds(value)]
    if not failing:
        message = f"{values[0]:g} {check.op} {check.threshold:g}"
        return CheckResult(host, check.name, True, values[0], message)
    value = failing[0]
    reason = "value is NaN" if math.isnan(value) else f"value {value:g}"
    return CheckResult(host, check.name, False, value, f"{reason}; {_expected(check)}")


def _expected(check: Check) -> str:
    return f"expected {check.op} {check.threshold:g} ({check.description})"


def _series_label(metric: Mapping[str, str]) -> str:
    """The instance a series belongs to, or its whole label set when it has no instance."""
    if "instance" in metric:
        return metric["instance"]
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _describe_failure(prometheus_url: str, error: BaseException) -> str:
    """Say in a few words why Prometheus gave no usable answer."""
    # requests wraps urllib3's MaxRetryError (a read timeout after retries becomes a
    # ConnectionError), whose reason is the part worth reading
    cause = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(error, requests.exceptions.RetryError):
        return f"Prometheus at {prometheus_url} kept answering with server errors ({cause})"
    if isinstance(error, requests.exceptions.Timeout) or isinstance(cause, ReadTimeoutError):
        return f"Prometheus at {prometheus_url} did not answer in time ({cause or error})"
    if isinstance(error, requests.exceptions.ConnectionError):
        return f"Prometheus at {prometheus_url} is unreachable ({cause or error})"
    if isinstance(error, PrometheusApiClientException):
        return f"Prometheus rejected the query: {error}"
    return f"unexpected answer from Prometheus at {prometheus_url}: {error!r}"
