"""A demo fleet's services on one loopback server: Prometheus, Alertmanager, the package repository.

FakeFleet answers, from one in-memory state, what a runbook asks of the fleet's services:
- the package repository: ``/debian/dists/{suite}/main/binary-amd64/Packages`` for the suites
  incoming, staging and production (one per environment: web-* are staging, db-* production);
- Prometheus: instant queries (/api/v1/query) and range queries (/api/v1/query_range) of up,
  node_load1 and node_filesystem_avail_bytes, selected by the query's instance matcher;
- Alertmanager: creating and expiring silences (/api/v2/silences, /api/v2/silence/{id}), as the
  runs service does for each batch (engineers' kernels never call it).
and, under /test/, what the test playbooks in data/fleet/playbooks call in place of a real host:
- GET /test/installed?host=H: the host's packages, shaped like ansible.builtin.package_facts;
- POST /test/upgrade {"host": H}: install the newest version of each installed package in the
  suite of the host's environment;
  a host whose upgrade included a package of `reboot_packages` is down (up == 0) for
  `reboot_seconds`, as a rebooted host is until Prometheus scrapes it again;
Plays run for real (ansible-runner, connection local); only what they touch is simulated.
Promotions are not the playbooks' business any more: the runs service performs them, and in the
tests its promoter is this fleet's `promote` (opsbook_runs_service.Service.repository).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsbook_fakes import Request

from opsbook.config import Settings
from opsbook.contract.wire import ErrorCode
from opsbook.debversion import DebianVersion
from opsbook.service.promotions import Outcome
from opsbook.service.rules import Refused

# A stand-in for ~/ansible: the demo inventory run locally, and test doubles of the playbooks.
FLEET_DIR = Path(__file__).parent / "data" / "fleet"
# The environment variable the test playbooks read the fake fleet's URL from.
FLEET_URL_VARIABLE = "OPSBOOK_TEST_FLEET_URL"

_FIRST_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
_INSTANCE_REGEX = re.compile(r'instance=~"((?:[^"\\]|\\.)*)"')
_INDEX = re.compile(r"^/debian/dists/(?P<suite>[^/]+)/main/binary-amd64/Packages$")


@dataclass
class FakeFleet:
    """The fleet's services' state; call it with a Request (a FakeServer responder)."""

    installed: dict[str, dict[str, str]]
    instances: dict[str, str]
    incoming: list[tuple[str, str, str]]  # (package, version, description)
    suites: dict[str, set[tuple[str, str]]]  # environment -> approved (package, version)
    reboot_packages: frozenset[str] = frozenset()
    reboot_seconds: float = 0.0
    load: dict[str, float] = field(default_factory=dict)  # instance -> load per CPU (default 0.2)
    broken_hosts: set[str] = field(default_factory=set)  # their upgrade fails (HTTP 500)
    silences: dict[str, str] = field(default_factory=dict)  # id -> active / expired
    silence_bodies: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # what happened, in order ("upgrade web-1" ...)
    prometheus_answers: bool = True
    scrape_interval: float = 0.2  # seconds between the simulated scrapes of every exporter
    down_until: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> tuple[int, Any]:
        with self.lock:
            path = request.path
            if index := _INDEX.match(path):
                return self._index(index["suite"])
            if path.startswith("/api/v1/"):
                return self._prometheus(request)
            if path.startswith("/api/v2/silence"):
                return self._alertmanager(request)
            if path == "/test/installed":
                return 200, self._package_facts(request.query["host"])
            if path == "/test/upgrade":
                return self._upgrade(request.body["host"])
            return 404, {"error": f"no such path {path}"}

    # the package repository

    def _index(self, suite: str) -> tuple[int, Any]:
        if suite == "incoming":
            entries = self.incoming
        elif suite in self.suites:
            described = {(p, v): d for p, v, d in self.incoming}
            entries = [(p, v, described.get((p, v), "")) for p, v in sorted(self.suites[suite])]
        else:
            return 404, b"Not Found\n"
        stanzas = [
            f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
            f"Filename: pool/main/{package}_{version}_all.deb\nDescription: {description}\n"
            " Built for the Opsbook tests.\n"
            for package, version, description in entries
        ]
        return 200, "\n".join(stanzas).encode()

    def promote(self, environment: str, pairs: list[tuple[str, str]], *, by: str) -> Outcome:
        """The repository host's side of a promotion (what opsbook-repo promote does), as the
        runs service's promoter: all or nothing, 502 for a version not in incoming."""
        with self.lock:
            published = {(package, version) for package, version, _ in self.incoming}
            wanted = list(dict.fromkeys(pairs))
            if environment not in self.suites or not set(wanted) <= published:
                raise Refused(
                    502,
                    ErrorCode.REPOSITORY_FAILED,
                    f"fake repository: no suite {environment} or not in incoming: "
                    f"{sorted(set(wanted) - published)}",
                )
            suite = self.suites[environment]
            outcome = Outcome(
                promoted=tuple(pair for pair in wanted if pair not in suite),
                unchanged=tuple(pair for pair in wanted if pair in suite),
            )
            suite |= set(wanted)
            self.log.append(
                f"promote {environment} {' '.join(sorted(f'{p}={v}' for p, v in wanted))}"
            )
            return outcome

    @staticmethod
    def environment_of(host: str) -> str:
        return "production" if host.startswith("db-") else "staging"

    # the hosts

    def _package_facts(self, host: str) -> dict[str, list[dict[str, str]]]:
        return {
            package: [
                {
                    "name": package,
                    "version": version,
                    "arch": "all",
                    "category": "misc",
                    "origin": "opsbook",
                    "source": "apt",
                }
            ]
            for package, version in sorted(self.installed[host].items())
        }

    def _upgrade(self, host: str) -> tuple[int, Any]:
        self.log.append(f"upgrade {host}")
        if host in self.broken_hosts:
            return 500, {"error": f"dpkg was interrupted on {host}"}
        upgraded = {}
        for package, version in self.installed[host].items():
            suite = self.suites[self.environment_of(host)]
            approved = [v for p, v in suite if p == package]
            newest = max(approved, key=DebianVersion.parse, default=None)
            if newest and DebianVersion.parse(newest) > DebianVersion.parse(version):
                upgraded[package] = newest
        self.installed[host].update(upgraded)
        reboot = bool(set(upgraded) & self.reboot_packages)
        if reboot:
            self.down_until[self.instances[host]] = time.monotonic() + self.reboot_seconds
        return 200, {"changed": bool(upgraded), "upgraded": upgraded, "reboot": reboot}

    # Prometheus

    def value(self, metric: str, instance: str) -> float:
        if metric == "age":  # of the newest sample: scrapes happen every scrape_interval
            return time.time() % self.scrape_interval
        if metric == "up":
            return 0.0 if time.monotonic() < self.down_until.get(instance, 0) else 1.0
        if metric == "node_load1":
            return self.load.get(instance, 0.2)
        if metric == "node_filesystem_avail_bytes":
            return 0.5
        return 1.0

    def _prometheus(self, request: Request) -> tuple[int, Any]:
        if not self.prometheus_answers:
            return 503, {"status": "error", "error": "unavailable"}
        query = request.query["query"]
        metric = _FIRST_METRIC.search(query + "{")
        name = "age" if "timestamp(" in query else metric.group(1) if metric else ""
        wanted = _INSTANCE_REGEX.search(query)
        pattern = re.compile(re.sub(r"\\(.)", r"\1", wanted.group(1))) if wanted else None
        selected = [i for i in self.instances.values() if pattern is None or pattern.fullmatch(i)]
        if request.path == "/api/v1/query":
            result = [
                {"metric": {"instance": i}, "value": [time.time(), str(self.value(name, i))]}
                for i in selected
            ]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        start, end = float(request.query["start"]), float(request.query["end"])
        step = float(request.query["step"].rstrip("s"))
        points = [start + n * step for n in range(int((end - start) / step) + 1)]
        result = [
            {
                "metric": {"instance": i},
                "values": [
                    [t, str(self.value(name, i) + 0.01 * (n % 7))] for n, t in enumerate(points)
                ],
            }
            for i in selected
        ]
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}

    # Alertmanager

    def _alertmanager(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            silence_id = f"silence-{len(self.silences) + 1}"
            self.silences[silence_id] = "active"
            self.silence_bodies[silence_id] = request.body
            self.log.append(f"silence {request.body['matchers'][0]['value']}")
            return 200, {"silenceID": silence_id}
        silence_id = request.path.rsplit("/", 1)[1]
        if silence_id not in self.silences:
            return 404, ""
        self.silences[silence_id] = "expired"
        self.log.append(f"expire {silence_id}")
        return 200, ""

    @property
    def active_silences(self) -> list[str]:
        return [s for s, state in self.silences.items() if state == "active"]


def demo_fleet(**overrides: Any) -> FakeFleet:
    """The demo fleet as the contract describes it: web-1..3 (staging), db-1..3 (production)."""
    hosts = [f"web-{n}" for n in (1, 2, 3)] + [f"db-{n}" for n in (1, 2, 3)]
    base = {"opsbook-demo-base": "1.0", "opsbook-demo-agent": "2.3.0"}
    installed = {host: {**base, f"opsbook-demo-{host.split('-')[0]}": "1.0"} for host in hosts}
    options: dict[str, Any] = {
        "installed": installed,
        "instances": {host: f"{host}:9100" for host in hosts},
        "incoming": [
            ("opsbook-demo-base", "1.0", "Opsbook demo base"),
            ("opsbook-demo-base", "1.1", "Opsbook demo base (security fix, needs a reboot)"),
            ("opsbook-demo-agent", "2.3.0", "Opsbook demo agent"),
            ("opsbook-demo-agent", "2.3.1", "Opsbook demo agent (bug fix)"),
            ("opsbook-demo-agent", "2.4.0", "Opsbook demo agent (new release)"),
            ("opsbook-demo-web", "1.0", "Opsbook demo web server"),
            ("opsbook-demo-web", "1.1", "Opsbook demo web server (security fix)"),
            ("opsbook-demo-db", "1.0", "Opsbook demo database"),
            ("opsbook-demo-db", "1.0.1", "Opsbook demo database (bug fix)"),
        ],
        "suites": {
            environment: {
                ("opsbook-demo-base", "1.0"),
                ("opsbook-demo-agent", "2.3.0"),
                ("opsbook-demo-agent", "2.3.1"),
                ("opsbook-demo-web", "1.0"),
                ("opsbook-demo-db", "1.0"),
            }
            for environment in ("staging", "production")
        },
        "reboot_packages": frozenset({"opsbook-demo-base"}),
    }
    return FakeFleet(**(options | overrides))


def fleet_environment(url: str, runs_dir: Path) -> dict[str, str]:
    """What the hub would give an engineer's container, pointing at the fake fleet at `url`."""
    return {
        "OPSBOOK_PROMETHEUS_URL": url,
        "OPSBOOK_PACKAGE_REPO_URL": f"{url}/debian",
        "OPSBOOK_ANSIBLE_DIR": str(FLEET_DIR),
        "OPSBOOK_RUNS_DIR": str(runs_dir),
        "ANSIBLE_CONFIG": str(FLEET_DIR / "ansible.cfg"),
        "JUPYTERHUB_USER": "alice",
        # The fake fleet's plays run with connection local: no host checks a certificate.
        "OPSBOOK_SSH_CERTIFICATES": "off",
        FLEET_URL_VARIABLE: url,
    }


def fleet_settings(url: str, runs_dir: Path) -> Settings:
    return Settings.from_env(fleet_environment(url, runs_dir))
