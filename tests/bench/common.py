"""What every figure shares: the bench stack, a quiet machine, samples and their statistics."""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.e2e.stack import ROOT, StackConfig, compose, docker, engineer_accounts

# The first ten for "ten at once"; the next thirty for the login storm (never started before it).
BENCH_ACCOUNTS = engineer_accounts("bench", 40)
BENCH_ENGINEERS = tuple(account["username"] for account in BENCH_ACCOUNTS)

# Another project (OPSBOOK_BENCH_PROJECT, with other ports) lets a second checkout, or a second
# engineer, run a bench stack of its own beside this one: its containers, volumes and networks are
# named after it, and its folder is build/<project>-stack.
PROJECT = os.environ.get("OPSBOOK_BENCH_PROJECT", "opsbook-bench")
STACK_DIR = "bench-stack" if PROJECT == "opsbook-bench" else f"{PROJECT}-stack"
BENCH = StackConfig(
    project=PROJECT,
    stack_dir=ROOT / "build" / STACK_DIR,
    hub_port=int(os.environ.get("OPSBOOK_BENCH_HUB_PORT", "28000")),
    idp_port=int(os.environ.get("OPSBOOK_BENCH_IDP_PORT", "29000")),
    prometheus_port=int(os.environ.get("OPSBOOK_BENCH_PROMETHEUS_PORT", "29090")),
    # Everything else as a user's deployment from .env.example.
    extra_accounts=BENCH_ACCOUNTS,
)
RESULTS_FILE = BENCH.stack_dir / "results.json"
TEST_PROJECT_PREFIX = "opsbook-test"


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def bench_compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return compose(*args, check=check, config=BENCH)


def service_container(service: str) -> str:
    """The bench stack's container id of a compose service."""
    return bench_compose("ps", "-q", service).stdout.strip()


def container_ip(container: str) -> str:
    return docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()


# --- a quiet machine ------------------------------------------------------------------------------


def load1() -> float:
    return os.getloadavg()[0]


def test_containers() -> list[str]:
    """Running containers of the test suite's stack (someone's `make test`)."""
    names = docker("ps", "--format", "{{.Names}}").stdout.split()
    return [name for name in names if name.startswith(TEST_PROJECT_PREFIX)]


@dataclass
class Quiet:
    """What the machine was doing when a measurement started."""

    load1: float
    test_stack_running: bool

    @classmethod
    def now(cls) -> Quiet:
        return cls(round(load1(), 2), bool(test_containers()))


# Quiet: the machine's CPUs (all cores together) less busy than this over a whole window. The
# 1-minute load, used before, lags: it let a measurement start 18 s after the stack came up, while
# its services were still starting. The idle bench stack keeps the machine about 7 % busy.
QUIET_BUSY = 0.25
QUIET_WINDOW = 10.0  # seconds


def cpu_busy(seconds: float) -> float:
    """The fraction of all CPUs' time spent busy over the next `seconds` (/proc/stat)."""

    def times() -> tuple[int, int]:
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
        fields = [int(value) for value in first_line.split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    busy_before, total_before = times()
    time.sleep(seconds)
    busy_after, total_after = times()
    return (busy_after - busy_before) / max(total_after - total_before, 1)


def wait_until_quiet(timeout: float, every: float = QUIET_WINDOW) -> dict[str, Any]:
    """Until no test stack runs and the CPUs were under QUIET_BUSY busy over the last `every`
    seconds, or `timeout` s.

    Returns what was seen: quiet (bool), waited (s), busy (the last window's) and load1 at the end.
    """
    started = time.monotonic()
    said = 0.0
    while True:
        busy = cpu_busy(every)
        tests, load = test_containers(), load1()
        waited = time.monotonic() - started
        seen = {"waited_s": round(waited), "busy": round(busy, 3), "load1": round(load, 2)}
        if not tests and busy < QUIET_BUSY:
            return {"quiet": True, **seen}
        if waited >= timeout:
            return {"quiet": False, **seen, "test_containers": len(tests)}
        if waited - said >= 60 or said == 0.0:
            log(
                f"waiting for a quiet machine: CPUs {busy:.0%} busy, load {load:.2f}, "
                f"{len(tests)} opsbook-test containers running "
                f"({waited:.0f} s so far)"
            )
            said = waited


# --- samples --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile: the smallest sample with at least 95 % at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Row:
    """One line of a figure's table: samples of one measure, and where it stands."""

    what: str
    samples: list[float]
    unit: str  # s, ms, MiB, MB, events/s, x
    target: str = ""
    verdict: str = ""  # met, missed, or empty (reported only)
    note: str = ""

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def p95(self) -> float | None:
        return p95(self.samples) if len(self.samples) > 1 else None


@dataclass
class Figure:
    key: str
    title: str
    how: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # how long measuring it took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        rows = [Row(**row) for row in data.get("rows", [])]
        return cls(**{**data, "rows": rows})


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


# --- docker stats ---------------------------------------------------------------------------------

_SIZE = re.compile(r"^([\d.]+)\s*([KMGT]?i?B)$")
_FACTORS = {
    "B": 1 / 2**20,
    "KiB": 1 / 2**10,
    "MiB": 1.0,
    "GiB": 2**10,
    "TiB": 2**20,
    "kB": 1e3 / 2**20,
    "KB": 1e3 / 2**20,
    "MB": 1e6 / 2**20,
    "GB": 1e9 / 2**20,
}


def mib(text: str) -> float:
    """docker stats' '123.4MiB' -> MiB."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


def memory_mib(containers: list[str]) -> dict[str, float]:
    """Memory in use per container (docker stats: usage without the page cache), in MiB."""
    done = docker(
        "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *containers, check=False
    )
    if done.returncode:
        running = docker("ps", "--format", "{{.Names}}").stdout.split()
        raise RuntimeError(
            f"docker stats failed: {done.stderr.strip()}; not running: "
            f"{[name for name in containers if name not in running]}"
        )
    out = done.stdout
    usage = {}
    for line in out.splitlines():
        name, used = line.split("\t")
        usage[name] = mib(used.split("/")[0])
    return usage


def memory_samples(names: list[str], count: int = 3, every: float = 5.0) -> dict[str, list[float]]:
    """`count` snapshots of memory_mib, `every` seconds apart: each container's samples."""
    samples: dict[str, list[float]] = {name: [] for name in names}
    for number in range(count):
        if number:
            time.sleep(every)
        for name, used in memory_mib(names).items():
            samples[name].append(used)
    return samples


def container_name(container: str) -> str:
    return docker("inspect", "--format", "{{.Name}}", container).stdout.strip().lstrip("/")


def docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamp with nanoseconds -> epoch seconds."""
    text = text.strip().replace("Z", "+00:00")
    main, _, rest = text.partition(".")
    if rest:
        digits = re.match(r"\d+", rest).group(0)
        zone = rest[len(digits) :]
        text = f"{main}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text).timestamp()
