"""Noisy-neighbour drills: one engineer's runaway processes, and what the others see meanwhile.

Shared by the e2e tests (test_noisy_neighbours.py, which assert that the others keep working)
and the benchmark (tests/bench, figure `noisy`, which compares their latencies with idle).

A drill runs in an engineer's own container with `docker exec` as her uid: the same container,
cgroup and limits as her terminal. Probes ask what another engineer relies on over HTTP, as they
would ask it, in rounds: each probe once, then a short pause.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from .stack import docker, wait_for

# .env.example's defaults, which the test and bench stacks keep.
PIDS_LIMIT = 512
MEM_LIMIT_MIB = 2048
FORK_BOMB = ":(){ :|:& };:"
# Touches every page it allocates (b"\x01" * n, unlike bytearray(n), is not left to the kernel's
# zero pages), 32 MiB at a time, and says how far it got.
MEMORY_HOG = """
import time
chunks = []
while True:
    chunks.append(b"\\x01" * (32 << 20))
    print(len(chunks) * 32, flush=True)
    time.sleep(0.05)
"""
PAUSE = 0.2  # seconds between rounds of the probes, idle and during a drill alike


@dataclass
class Probe:
    """One thing another engineer relies on, asked over HTTP as they would ask it."""

    name: str
    ask: Callable[[], requests.Response]
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def once(self) -> None:
        started = time.monotonic()
        try:
            answer = self.ask()
        except requests.RequestException as error:
            self.failures.append(repr(error))
            return
        self.latencies.append(time.monotonic() - started)
        if answer.status_code != 200:
            self.failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")


def neighbour_probes(hub_url: str, token: str) -> Callable[[], list[Probe]]:
    """Fresh probes of the hub's API, the runs service and bob's server, with bob's token."""
    headers = {"Authorization": f"token {token}"}

    def get(path: str) -> Callable[[], requests.Response]:
        return lambda: requests.get(f"{hub_url}{path}", headers=headers, timeout=10)

    def probes() -> list[Probe]:
        return [
            Probe("hub API", get("/hub/api/users/bob")),
            Probe("runs service", get("/services/runs/api/runs")),
            Probe("bob's server", get("/user/bob/api/contents")),
        ]

    return probes


def ask_round(probes: list[Probe]) -> None:
    for probe in probes:
        probe.once()
    time.sleep(PAUSE)


def idle_samples(probes: list[Probe], rounds: int) -> list[Probe]:
    """The probes asked `rounds` times with nothing running: the baseline of a drill."""
    for _ in range(rounds):
        ask_round(probes)
    return probes


class Watch:
    """Asks every probe in turn, in a thread, from start() until stop()."""

    def __init__(self, probes: list[Probe]) -> None:
        self.probes = probes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            ask_round(self.probes)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pids(container: str) -> int:
    """Processes in the container, from the engine's side (nothing can fork inside it)."""
    shown = docker("stats", "--no-stream", "--format", "{{.PIDs}}", container).stdout.strip()
    return int(shown)


def fork_bomb(container: str, watch: Watch, answers: int = 10) -> list[int]:
    """A fork bomb in `container`, as the engineer; returns the process counts seen.

    Waits until it holds the container at its process limit (a few short of it: processes come
    and go), then until each of the watch's probes answered `answers` more times. The bomb never
    ends by itself: only stopping the container ends it.
    """
    seen: list[int] = []

    def processes() -> int:
        seen.append(pids(container))
        return seen[-1]

    docker("exec", "-d", "-u", "1000", container, "bash", "-c", FORK_BOMB)
    wait_for(lambda: processes() >= PIDS_LIMIT - 8, 120, "the fork bomb at the process limit")
    before = [len(p.latencies) for p in watch.probes]
    wait_for(
        lambda: (
            processes() > 0
            and all(
                len(p.latencies) >= n + answers for p, n in zip(watch.probes, before, strict=True)
            )
        ),
        180,
        f"{answers} answers of each neighbour while the bomb runs",
    )
    return seen


@dataclass
class Hog:
    """How a memory hog ended: its exit status, and how far it got (MiB, as it said)."""

    returncode: int
    reached: list[int]
    stderr: str

    @property
    def most(self) -> int:
        return max(self.reached, default=0)


def memory_hog(container: str, timeout: float = 600) -> Hog:
    """A memory hog in `container`, as the engineer, until it ends (the kernel's OOM killer)."""
    hog = subprocess.run(
        ["docker", "exec", "-u", "1000", container, "python3", "-c", MEMORY_HOG],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Hog(hog.returncode, [int(line) for line in hog.stdout.split()], hog.stderr)
