"""Each engineer's server on a network of its own: from inside erin's container, what she must
reach answers and nothing else does, not even bob's server. Every refusal has a positive control:
the same address answers from where it should (the hub's or the runs service's container), so a
closed port means the network keeps erin out, not that nothing listens there.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from .hubclient import HubUser, ServerClient, signed_in
from .stack import compose, docker, wait_for

FLEET = ("web-1", "web-2", "web-3", "db-1", "db-2", "db-3")
# What an engineer's server reaches (DESIGN.md): the hub's API, the runs service, Prometheus's
# query API, the package repository's indexes, the fleet's sshd.
MUST_REACH = {
    "hub:8081",
    "runs:8000",
    "prometheus:9090",
    "pkgrepo:80",
    *(f"{host}:22" for host in FLEET),
}
MEMBERS = {"proxy", "hub", "runs", "prometheus", "pkgrepo", *FLEET}
POOL = ipaddress.ip_network("10.99.0.0/16")  # .env.example's ENGINEER_NETWORK_POOL
# Short: an unreachable address fails at once (no route) or within this.
DEADLINE = 3.0
POSTGRES = "opsbook-netiso-postgres"

# Connects to every host:port of argv[1] at once; prints what each gave.
PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def attempt(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=float(sys.argv[2])).close()
        return "open"
    except socket.gaierror:
        return "no such name"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as error:
        return error.strerror or repr(error)

targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(32) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets)))))
"""

# GETs each URL of argv[1]; prints its status (or the error).
FETCH = r"""
import json, sys, urllib.request
answers = {}
for url in json.loads(sys.argv[1]):
    try:
        answers[url] = urllib.request.urlopen(url, timeout=10).status
    except Exception as error:
        answers[url] = repr(error)
print(json.dumps(answers))
"""


def run_python(container: str, script: str, *args: str, user: str = "1000") -> dict:
    done = subprocess.run(
        ["docker", "exec", "-u", user, container, "python3", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{container}: {done.stderr}"
    return json.loads(done.stdout)


def probe(container: str, targets: set[str], user: str = "1000") -> dict[str, str]:
    return run_python(container, PROBE, json.dumps(sorted(targets)), str(DEADLINE), user=user)


def service_container(service: str) -> str:
    return compose("ps", "-q", service).stdout.strip()


def addresses(container: str) -> list[str]:
    """Every address of a container, on every network it is on."""
    found = docker(
        "inspect",
        container,
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    )
    return found.stdout.split()


def everywhere(container: str, port: int, *names: str) -> set[str]:
    return {*(f"{name}:{port}" for name in names), *(f"{a}:{port}" for a in addresses(container))}


def started(stack, name: str) -> HubUser:
    return signed_in(stack, name, server=True)


@pytest.fixture(scope="module")
def erin(stack) -> HubUser:
    return started(stack, "erin")


@pytest.fixture(scope="module")
def bob(stack) -> HubUser:
    return started(stack, "bob")


@pytest.fixture(scope="module")
def postgres(stack):
    """A team's PostgreSQL beside the deployment, on its backend network (as RUNS_DATABASE_URL
    would reach one): listening, and answering the hub's container."""
    docker("rm", "-f", "-v", POSTGRES, check=False)
    image = f"opsbook/postgres:{stack.env['OPSBOOK_VERSION']}"
    backend = stack.env["COMPOSE_PROJECT_NAME"]
    docker("run", "-d", "--name", POSTGRES, "--network", backend, "--network-alias", "postgres",
           "-e", "POSTGRES_PASSWORD=not-a-secret", image)  # fmt: skip
    hub = service_container("hub")
    wait_for(
        lambda: probe(hub, {"postgres:5432"}, user="0")["postgres:5432"] == "open",
        90,
        "PostgreSQL listening on the backend network",
    )
    yield POSTGRES
    docker("rm", "-f", "-v", POSTGRES, check=False)


def forbidden(bob_container: str) -> list[tuple[str, str, set[str]]]:
    """What erin must not reach, by name and by every address: (what, the container where it
    answers, its addresses)."""
    return [
        (
            "Alertmanager",
            "hub",
            everywhere(service_container("alertmanager"), 9093, "alertmanager"),
        ),
        ("the identity provider", "hub", everywhere(service_container("idp"), 9000, "idp")),
        (
            "the webhook recorder",
            "hub",
            everywhere(service_container("recorder"), 8080, "recorder"),
        ),
        ("the proxy's API", "hub", everywhere(service_container("proxy"), 8001, "proxy-api")),
        ("PostgreSQL", "hub", everywhere(POSTGRES, 5432, "postgres")),
        ("bob's server", "hub", everywhere(bob_container, 8888, bob_container)),
        (
            "the package repository's sshd",
            "runs",
            everywhere(service_container("pkgrepo"), 22, "pkgrepo", "pkgrepo-admin"),
        ),
    ]


def test_erin_reaches_what_runbooks_need(stack, erin):
    container = stack.container_of("erin")
    answers = probe(container, MUST_REACH)
    assert {t for t, a in answers.items() if a != "open"} == set(), answers
    urls = [
        "http://hub:8081/hub/api/",
        "http://runs:8000/services/runs/api/health",
        "http://prometheus:9090/api/v1/query?query=up",
        "http://pkgrepo/debian/dists/incoming/main/binary-amd64/Packages",
    ]
    assert run_python(container, FETCH, json.dumps(urls)) == dict.fromkeys(urls, 200)


def test_erin_reaches_nothing_else_not_even_bobs_server(stack, erin, bob, postgres):
    erin_reached = {}
    for what, control, targets in forbidden(stack.container_of("bob")):
        # It listens, and answers where it should: erin's refusal is the network's doing.
        from_control = probe(service_container(control), targets, user="0")
        assert "open" in from_control.values(), (what, control, from_control)
        answers = probe(stack.container_of("erin"), targets)
        erin_reached.update({f"{what} at {t}": a for t, a in answers.items() if a == "open"})
    assert erin_reached == {}, f"erin's container reached {sorted(erin_reached)}"
    outside = probe(stack.container_of("erin"), {"1.1.1.1:443", "deb.debian.org:80"})
    assert "open" not in outside.values(), outside


def test_only_the_members_and_erin_are_on_her_network(stack, erin, bob):
    network = f"{stack.config.project}-net-erin"
    inspected = json.loads(docker("network", "inspect", network).stdout)[0]
    assert inspected["Internal"] is True
    on_it = set()
    for container_id in inspected["Containers"]:
        labels = json.loads(
            docker("inspect", container_id, "--format", "{{json .Config.Labels}}").stdout
        )
        on_it.add(labels.get("com.docker.compose.service") or container_id)
    erin_id = docker("inspect", stack.container_of("erin"), "--format", "{{.Id}}").stdout.strip()
    assert on_it == MEMBERS | {erin_id}


def test_the_proxy_still_routes_to_both(stack, erin, bob):
    for user in (erin, bob):
        server = ServerClient(stack.hub_url, user.name, user.new_token())
        assert server.get("").status_code == 200, user.name


def test_a_recreated_fleet_host_joins_the_running_servers_networks(stack, erin):
    """compose recreating a member (a fleet host here; the runs service or the hub on an
    upgrade) gives it a new container: the hub's network keeper connects it again."""
    old = service_container("web-2")
    compose("rm", "--stop", "--force", "web-2")
    recreated = compose("up", "-d", "web-2", check=False)
    assert recreated.returncode == 0, recreated.stderr
    assert service_container("web-2") not in ("", old)
    wait_for(
        lambda: probe(stack.container_of("erin"), {"web-2:22"})["web-2:22"] == "open",
        60,
        "the recreated web-2 back on erin's network",
    )


def network_of(stack, user: str) -> dict:
    """`docker network inspect` of the engineer's network ({} when there is none)."""
    found = docker("network", "inspect", f"{stack.config.project}-net-{user}", check=False)
    return json.loads(found.stdout)[0] if found.returncode == 0 else {}


def test_each_network_is_a_26_of_the_pool_not_dockers_default_pools(stack, erin, bob):
    subnets = [network_of(stack, user)["IPAM"]["Config"][0]["Subnet"] for user in ("erin", "bob")]
    assert all(ipaddress.ip_network(s).subnet_of(POOL) for s in subnets), subnets
    assert all(s.endswith("/26") for s in subnets) and subnets[0] != subnets[1]


def test_a_stopped_servers_network_stays_for_the_next_start_with_the_members_alone(stack, bob):
    before = network_of(stack, "bob")
    bob.stop_server()
    wait_for(lambda: not container_exists(stack.container_of("bob")), 60, "bob's container gone")
    after = network_of(stack, "bob")
    assert after["Id"] == before["Id"]
    names = {c["Name"] for c in after["Containers"].values()}
    assert stack.container_of("bob") not in names
    assert names == {c["Name"] for c in before["Containers"].values()} - {stack.container_of("bob")}


def test_deleting_an_engineer_removes_their_network(stack, bob):
    alice = signed_in(stack, "alice")
    assert alice.api("DELETE", "/users/bob").status_code == 204
    wait_for(lambda: not network_of(stack, "bob"), 30, "bob's network removed with bob")


def container_exists(name: str) -> bool:
    return docker("container", "inspect", name, check=False).returncode == 0
