"""The patching runbook, executed for real inside alice's own container, against the demo fleet.

The tests run in file order on one fleet: each starts from where the previous one left it.
"""

import json
import re
import subprocess

import pytest
import requests
import testinfra

from .hubclient import signed_in
from .stack import compose, docker, reset_fleet, service_address, wait_for

WEB = ["web-1", "web-2", "web-3"]
DB = ["db-1", "db-2", "db-3"]
DEMO_PACKAGES = ("opsbook-demo-base", "opsbook-demo-agent", "opsbook-demo-web", "opsbook-demo-db")


@pytest.fixture(scope="module", autouse=True)
def fresh_fleet(stack):
    reset_fleet()


@pytest.fixture(scope="module")
def alice(stack):
    signed_in(stack, "alice", server=True)
    return stack.container_of("alice")


# The demo's hosts are containers: their load is the whole machine's, which a test run loads
# itself (builds, other stacks). The gate's load check stays on, with a bar this machine clears.
MACHINE_LOAD_BAR = 50.0


def run_runbook(
    container: str, output: str, runbook: str = "patching.ipynb", **parameters
) -> subprocess.CompletedProcess:
    """papermill in the engineer's container, as the engineer (uid 1000), from their home."""
    if runbook == "patching.ipynb":
        parameters.setdefault("max_load_per_cpu", MACHINE_LOAD_BAR)
    args = ["docker", "exec", "-u", "1000", "-w", "/home/jovyan", container, "papermill"]
    args += [f"runbooks/{runbook}", output, "--kernel", "python3"]
    for name, value in parameters.items():
        args += ["-y", json.dumps({name: value})]
    return subprocess.run(args, capture_output=True, text=True, timeout=900)


def output_text(container: str, output: str) -> str:
    """Everything the executed notebook printed, errors included."""
    notebook = json.loads(docker("exec", container, "cat", f"/home/jovyan/{output}").stdout)
    texts = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.append(out.get("evalue", ""))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def fleet_host(service: str):
    return testinfra.get_host(f"docker://{compose('ps', '-q', service).stdout.strip()}")


def installed(service: str) -> dict[str, str]:
    host = fleet_host(service)
    return {
        name: host.package(name).version
        for name in DEMO_PACKAGES
        if host.package(name).is_installed
    }


def boot_time(service: str) -> str:
    """PID 1's start time: what the playbooks' reboot check compares, too."""
    return fleet_host(service).check_output("awk '{print $22}' /proc/1/stat")


def prometheus_sees(stack, instance: str, up: int) -> bool:
    answer = requests.get(
        f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}/api/v1/query",
        params={"query": f'up{{instance="{instance}"}}'},
        timeout=5,
    ).json()
    values = [float(r["value"][1]) for r in answer["data"]["result"]]
    return values == [up]


def production_index() -> str:
    """The production suite's index, as production hosts read it."""
    url = f"http://{service_address('pkgrepo')}/debian/dists/production/main/binary-amd64/Packages"
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return answer.text


def silences() -> list[dict]:
    return requests.get(
        f"http://{service_address('alertmanager')}:9093/api/v2/silences", timeout=5
    ).json()


def silenced_instances(silence: dict) -> set[str]:
    """The fleet instances a silence's `instance` matcher covers (Alertmanager anchors regexes)."""
    (matcher,) = [m for m in silence["matchers"] if m["name"] == "instance"]
    everyone = [f"{host}:9100" for host in WEB + DB]
    if not matcher["isRegex"]:
        return {matcher["value"]} & set(everyone)
    return {i for i in everyone if re.fullmatch(matcher["value"], i)}


@pytest.fixture
def web2_exporter_stopped(stack):
    fleet_host("web-2").check_output("opsbook-exporter disable")
    wait_for(lambda: prometheus_sees(stack, "web-2:9100", 0), 60, "Prometheus sees web-2 down")
    yield
    fleet_host("web-2").check_output("opsbook-exporter enable")
    wait_for(lambda: prometheus_sees(stack, "web-2:9100", 1), 60, "Prometheus sees web-2 up")


def test_an_unhealthy_stack_stops_the_run_before_anything_changes(alice, web2_exporter_stopped):
    before = {host: (installed(host), boot_time(host)) for host in WEB}
    run = run_runbook(alice, "patching-unhealthy.ipynb", stack="web")
    assert run.returncode != 0
    text = output_text(alice, "patching-unhealthy.ipynb")
    assert "pre-checks of web failed" in text
    assert "web-2" in text
    assert {host: (installed(host), boot_time(host)) for host in WEB} == before


def test_patching_the_web_stack_patches_and_reboots_it_batch_by_batch_and_nothing_else(
    stack, alice
):
    boots = {host: boot_time(host) for host in WEB + DB}
    db_before = {host: installed(host) for host in DB}
    production_suite = production_index()
    run = run_runbook(
        alice,
        "patching-web.ipynb",
        stack="web",
        batch_size=1,
        approve=["opsbook-demo-base=1.1", "opsbook-demo-web=1.1"],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for host in WEB:
        versions = installed(host)
        assert versions["opsbook-demo-base"] == "1.1", host
        assert versions["opsbook-demo-web"] == "1.1", host
        assert versions["opsbook-demo-agent"] == "2.3.0", host  # not approved: not applied
        assert boot_time(host) != boots[host], f"{host} was not rebooted"
    for host in DB:  # the other stack: not touched
        assert installed(host) == db_before[host]
        assert boot_time(host) == boots[host]
    # The errata were promoted into staging's suite, by the runs service: production's is as it was.
    assert production_index() == production_suite
    assert "opsbook-demo-base_1.1" not in production_suite
    # One silence per batch, of exactly its host, set for alice's batches by the runs service
    # (her container does not reach Alertmanager); all expired now.
    ours = [
        s for s in silences() if s["createdBy"] == "alice" and "(patching of web)" in s["comment"]
    ]
    assert len(ours) == 3
    silenced = [silenced_instances(s) for s in ours]
    assert sorted(silenced, key=sorted) == [{"web-1:9100"}, {"web-2:9100"}, {"web-3:9100"}]
    assert all(s["status"]["state"] == "expired" for s in ours)
    assert all("Set by the runs service" in s["comment"] for s in ours)


def test_a_second_run_changes_nothing(alice):
    before = {host: (installed(host), boot_time(host)) for host in WEB}
    run = run_runbook(alice, "patching-again.ipynb", stack="web", approve="none")
    assert run.returncode == 0, run.stderr[-3000:]
    assert {host: (installed(host), boot_time(host)) for host in WEB} == before


def test_an_unhealthy_host_stops_the_run_at_its_batch(alice, web2_exporter_stopped):
    run = run_runbook(
        alice,
        "patching-web2-down.ipynb",
        stack="web",
        batch_size=1,
        approve=["opsbook-demo-agent=2.4.0"],
        require_healthy_stack=False,
        gate_timeout=20,
    )
    assert run.returncode != 0
    text = output_text(alice, "patching-web2-down.ipynb")
    assert "web-2" in text and "gate" in text
    assert installed("web-1")["opsbook-demo-agent"] == "2.4.0"  # batch 1: done
    assert installed("web-3")["opsbook-demo-agent"] == "2.3.0"  # batch 3: not touched


def test_no_answer_from_prometheus_fails_the_gate_closed(stack, alice):
    compose("stop", "prometheus")
    try:
        run = run_runbook(alice, "patching-no-prometheus.ipynb", stack="web", approve="none")
        assert run.returncode != 0
        text = output_text(alice, "patching-no-prometheus.ipynb")
        assert "prometheus" in text.lower()
        assert "passed" not in text.split("pre-checks")[-1][:200]
    finally:
        compose("start", "prometheus")
        wait_for(lambda: prometheus_sees(stack, "web-1:9100", 1), 90, "Prometheus back")
