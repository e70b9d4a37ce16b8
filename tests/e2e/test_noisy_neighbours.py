"""Noisy neighbours: one engineer's runaway processes leave everyone else working.

erin (group ops) runs a fork bomb, then a memory hog, in her own container, as a slip in her
terminal would (`docker exec` as her uid: the same container, cgroup and limits as her terminal).
During each drill the hub's API, the runs service and bob's server keep answering; only erin's
container is held at its limits (PIDS_LIMIT; MEM_LIMIT with no swap beyond it; CPU_LIMIT); after
each, her server recovers by itself or is restarted cleanly through the hub. The drills
themselves are in drills.py, shared with the benchmark's figure `noisy` (python -m tests.bench
--only noisy), which compares the latencies with idle; here they are only printed (pytest -s),
and no test asserts a time.

The container's root is read-only and /tmp a sized tmpfs, and JupyterLab still works on it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest
import requests

from .drills import (
    MEM_LIMIT_MIB,
    PIDS_LIMIT,
    Probe,
    Watch,
    fork_bomb,
    idle_samples,
    memory_hog,
    neighbour_probes,
    pids,
)
from .hubclient import ServerClient, signed_in
from .stack import docker, wait_for


@pytest.fixture(scope="module")
def erin(stack):
    return signed_in(stack, "erin", server=True)


@pytest.fixture(scope="module")
def bob(stack):
    return signed_in(stack, "bob", server=True)


@pytest.fixture(scope="module")
def neighbours(stack, bob) -> Callable[[], list[Probe]]:
    """Fresh probes of the hub's API, the runs service and bob's server, with bob's token."""
    return neighbour_probes(stack.hub_url, bob.new_token("noisy neighbours"))


def report(drill: str, idle: list[Probe], during: list[Probe]) -> None:
    """Latencies of each probe, idle and during the drill (ms; median and p95)."""

    def figures(latencies: list[float]) -> str:
        ms = sorted(1000 * s for s in latencies)
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        return f"median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms (n={len(ms)})"

    for before, now in zip(idle, during, strict=True):
        print(f"[{drill}] {now.name}: idle {figures(before.latencies)}; {figures(now.latencies)}")


def all_answered(probes: list[Probe], at_least: int) -> None:
    for probe in probes:
        assert probe.failures == [], f"{probe.name} failed during the drill: {probe.failures}"
        assert len(probe.latencies) >= at_least, probe.name


def idle_baseline(neighbours: Callable[[], list[Probe]], rounds: int = 10) -> list[Probe]:
    idle = idle_samples(neighbours(), rounds)
    all_answered(idle, rounds)
    return idle


def host_config(container: str, field_name: str) -> str:
    return docker("inspect", container, "--format", f"{{{{.HostConfig.{field_name}}}}}").stdout


def test_the_limits_are_set_on_erins_container(stack, erin):
    name = stack.container_of("erin")
    memory = int(host_config(name, "Memory"))
    assert memory == MEM_LIMIT_MIB * 2**20
    assert int(host_config(name, "MemorySwap")) == memory  # memory plus swap: no swap
    assert int(host_config(name, "PidsLimit")) == PIDS_LIMIT
    assert int(host_config(name, "CpuQuota")) == 100_000  # one core of a 100 ms period
    assert int(host_config(name, "CpuShares")) == 256  # the services come first when contended
    assert host_config(name, "ReadonlyRootfs").strip() == "true"


def test_a_fork_bomb_in_erins_container_leaves_the_others_answering(stack, erin, neighbours):
    name = stack.container_of("erin")
    idle = idle_baseline(neighbours)
    with Watch(neighbours()) as watch:
        # Held at its process limit: it reaches it, and never goes past it, while each neighbour
        # answers ten more times.
        seen = fork_bomb(name, watch, answers=10)
    assert max(seen) <= PIDS_LIMIT
    all_answered(watch.probes, 10)
    report("fork bomb", idle, watch.probes)
    print(f"[fork bomb] erin's processes: up to {max(seen)} of {PIDS_LIMIT}")

    # A bomb never ends by itself: erin's server is stopped through the hub (the engine kills
    # the whole container) and started again, clean.
    erin.stop_server(timeout=120)
    assert not stack.container_running("erin")
    erin.start_server()
    assert pids(name) < 50
    fresh = ServerClient(stack.hub_url, "erin", erin.new_token())
    assert fresh.get("").status_code == 200


def test_a_memory_hog_in_erins_container_is_killed_at_her_limit_alone(stack, erin, neighbours):
    name = stack.container_of("erin")
    idle = idle_baseline(neighbours)
    with Watch(neighbours()) as watch:
        hog = memory_hog(name)
    # The kernel's OOM killer ends the hog (SIGKILL: 137) before it holds MEM_LIMIT; with no
    # swap allowed, nothing of it went to the machine's disk first.
    assert hog.returncode == 137, (hog.returncode, hog.stderr[-500:])
    assert 0 < hog.most < MEM_LIMIT_MIB
    all_answered(watch.probes, 1)
    report("memory hog", idle, watch.probes)
    print(f"[memory hog] killed after {hog.most} MiB of {MEM_LIMIT_MIB}")

    # Only the hog died: erin's container and server carry on by themselves.
    assert stack.container_running("erin")
    server = ServerClient(stack.hub_url, "erin", erin.new_token())
    assert server.get("").status_code == 200
    assert docker("exec", "-u", "1000", name, "true", check=False).returncode == 0


def test_the_root_is_read_only_and_tmp_a_sized_tmpfs(stack, erin):
    name = stack.container_of("erin")
    for user in ("1000", "0"):  # erin, and root in her container (no capabilities either)
        refused = docker("exec", "-u", user, name, "touch", "/opsbook-write-test", check=False)
        assert refused.returncode != 0
        assert "Read-only file system" in refused.stderr, refused.stderr
    wrote = docker("exec", "-u", "1000", name, "sh", "-c", "echo ok >/tmp/t && cat /tmp/t")
    assert wrote.stdout.strip() == "ok"
    size_kib = docker("exec", name, "df", "-k", "--output=size", "/tmp").stdout.split()[-1]
    assert int(size_kib) == 256 * 1024
    home = docker("exec", "-u", "1000", name, "sh", "-c", "echo ok >~/t && cat ~/t && rm ~/t")
    assert home.stdout.strip() == "ok"


# Runs code in a kernel the server started, through its connection file (in the runtime folder,
# on the home volume): what JupyterLab's websocket would send it. Writes a temporary file (/tmp).
RUN_IN_KERNEL = """
import sys
from jupyter_client import BlockingKernelClient, find_connection_file
client = BlockingKernelClient(connection_file=find_connection_file(sys.argv[1]))
client.load_connection_file()
client.start_channels()
client.wait_for_ready(timeout=120)
code = "import tempfile; print('kernel wrote', tempfile.NamedTemporaryFile(delete=False).name)"
print(client.execute_interactive(code, timeout=120)["content"]["status"])
"""


def test_jupyterlab_and_a_kernel_work_on_the_read_only_root(stack, erin):
    """The Lab page, and a kernel it would start, running code that writes to /tmp."""
    assert erin.session.get(f"{stack.hub_url}/user/erin/lab", timeout=30).status_code == 200
    server = ServerClient(stack.hub_url, "erin", erin.new_token())
    started = server.request("POST", "/kernels", json={"name": "python3"})
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    try:
        ran = docker(
            "exec", "-u", "1000", stack.container_of("erin"), "python3", "-c", RUN_IN_KERNEL, kernel
        )
        assert "kernel wrote /tmp/" in ran.stdout and ran.stdout.split()[-1] == "ok", ran.stdout
    finally:
        server.request("DELETE", f"/kernels/{kernel}")


def test_prometheus_watches_dockers_disk_as_one_disk(stack):
    """The fleet's six containers see the engine's data root through their overlay roots: one
    series, one alert when it fills (images/prometheus/rules/docker.yml)."""
    api = f"http://127.0.0.1:{stack.config.prometheus_port}/api/v1"

    def disk() -> list[dict]:
        query = "opsbook:docker_disk_avail_bytes / opsbook:docker_disk_size_bytes"
        return requests.get(f"{api}/query", params={"query": query}, timeout=5).json()["data"][
            "result"
        ]

    [series] = wait_for(disk, 120, "the Docker disk's recorded series")
    assert series["metric"]["fstype"] == "overlay"
    assert 0 < float(series["value"][1]) <= 1
    groups = requests.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
    alerts = {
        rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"
    }
    assert {"DockerDiskFillingUp", "DockerDiskAlmostFull"} <= alerts
