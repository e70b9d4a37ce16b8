"""The images themselves, checked from inside with pytest-testinfra (docker backend)."""

import json
import subprocess
import uuid

import pytest
import testinfra

from .stack import IMAGE_TAG, PROJECT, compose, docker


@pytest.fixture(scope="module")
def singleuser(stack):
    """A container of the engineers' image, as the image starts it (its user, its env)."""
    name = f"{PROJECT}-image-check-{uuid.uuid4().hex[:6]}"
    docker("run", "-d", "--rm", "--name", name, f"opsbook/singleuser:{IMAGE_TAG}", "sleep", "600")
    yield testinfra.get_host(f"docker://{name}")
    docker("rm", "-f", name, check=False)


def service_host(service: str):
    container = compose("ps", "-q", service).stdout.strip()
    return testinfra.get_host(f"docker://{container}")


def test_singleuser_runs_as_a_plain_user_with_the_toolkit(singleuser):
    assert singleuser.user().uid == 1000
    assert singleuser.user().name == "jovyan"
    for module in ("opsbook.inventory", "opsbook.plays", "ansible_runner", "prometheus_api_client"):
        assert singleuser.run(f"python -c 'import {module}'").rc == 0, module
    assert singleuser.run("ansible-playbook --version").rc == 0
    assert singleuser.run("jupyterhub-singleuser --version").stdout.strip() == "5.5.4"
    assert not singleuser.file("/var/run/docker.sock").exists
    assert singleuser.run("sudo -n true").rc != 0  # no sudo, no way up


def test_the_server_command_is_jupyterhub_singleuser_without_the_hubs_orm(singleuser):
    """opsbook-singleuser (the image's CMD) starts the same server; importing that server leaves
    the hub's ORM, page handlers and Alembic out (opsbook/singleuser.py). Fails when a JupyterHub
    upgrade uses them at import time again."""
    assert singleuser.run("opsbook-singleuser --version").stdout.strip() == "5.5.4"
    script = (
        "import sys; from opsbook import singleuser; singleuser.install(); "
        "import jupyterhub.singleuser.extension; "
        "print([m for m in singleuser.KEPT_OUT if m in sys.modules])"
    )
    loaded = singleuser.run(f'python -c "{script}"')
    assert loaded.rc == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_the_library_mount_points_exist_in_the_image(singleuser):
    for folder in ("/home/jovyan/runbooks", "/home/jovyan/ansible"):
        assert singleuser.file(folder).is_directory
        assert singleuser.file(folder).user == "root"


@pytest.mark.parametrize("service", ["web-1", "db-1"])
def test_fleet_hosts_listen_for_ssh_and_the_exporter(stack, service):
    host = service_host(service)
    assert host.socket("tcp://0.0.0.0:22").is_listening
    assert host.socket("tcp://9100").is_listening
    metrics = host.run(
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:9100/metrics').read().decode())\""
    )
    assert 'mountpoint="/"' in metrics.stdout  # the root overlay, for the disk check
    assert host.user("opsbook").uid == 1001
    assert host.file("/etc/apt/sources.list.d/opsbook-demo.list").contains("http://pkgrepo/debian")


def test_fleet_hosts_take_packages_only_from_the_signed_local_repository(stack):
    host = service_host("web-1")
    update = host.run("sudo -u opsbook sudo -n apt-get update 2>&1")
    assert update.rc == 0, update.stdout  # the signature checks out
    assert "NO_PUBKEY" not in update.stdout
    sources = host.run("apt-get indextargets --format '$(SITE)' | sort -u").stdout.split()
    assert sources == ["http://pkgrepo/debian"]


def test_the_package_repository_serves_a_suite_per_environment(stack):
    repo = service_host("pkgrepo")
    listing = repo.run("opsbook-repo list").stdout
    assert "incoming\topsbook-demo-base\t1.1" in listing  # the errata, waiting
    assert "staging\topsbook-demo-base\t1.0" in listing  # what the hosts started from
    assert "production\topsbook-demo-base\t1.0" in listing
    assert "stable\t" not in listing
    # Its sshd admits the runs service's errata-<suite> certificates only; sudo runs promote only.
    principals = repo.file("/etc/ssh/opsbook_principals/opsbook").content_string.split()
    assert principals == ["errata-staging", "errata-production"]
    assert (
        repo.run("sudo -l -U opsbook")
        .stdout.strip()
        .endswith("(root) NOPASSWD: /usr/local/bin/opsbook-repo promote *")
    )


def test_the_image_user_of_every_long_running_service_is_not_root(stack):
    for service in ("proxy", "hub", "idp", "prometheus", "alertmanager", "recorder"):
        container = compose("ps", "-q", service).stdout.strip()
        user = subprocess.run(
            ["docker", "exec", container, "id", "-u"], capture_output=True, text=True
        ).stdout.strip()
        assert user not in ("", "0"), service


def test_the_runs_image_holds_the_service_and_the_contract_not_the_toolkit(stack):
    """The service's image installs what it runs: opsbook.service and opsbook.contract only."""
    runs = service_host("runs")
    for module in ("opsbook.service.store", "opsbook.service.fleet", "opsbook.contract.wire"):
        assert runs.run(f"python -c 'import {module}'").rc == 0, module
    for module in ("opsbook.rolling", "opsbook.runs", "opsbook.inventory", "opsbook.widgets"):
        assert runs.run(f"python -c 'import {module}'").rc != 0, f"{module} is in the runs image"
    assert runs.run("ansible-inventory --version").rc == 0


def test_every_health_check_is_an_http_get_without_an_interpreter(stack):
    """Docker runs each check every 5 or 10 s: a Python or Node.js start per check cost the idle
    stack 0.1-0.24 CPU-s each, in bursts that landed on engineers' spawns."""
    checked = set()
    for container in compose("ps", "-q").stdout.split():
        inspected = json.loads(docker("inspect", container).stdout)[0]
        test = inspected["Config"].get("Healthcheck")
        if not test:
            continue
        service = inspected["Config"]["Labels"]["com.docker.compose.service"]
        program = test["Test"][1].split()[0]
        if program != "pg_isready":  # PostgreSQL's own client: a C program
            assert program in ("http-check", "/usr/local/sbin/opsbook-healthcheck"), (service, test)
            path = docker("exec", container, "bash", "-c", f"command -v {program}").stdout
            shebang = docker("exec", container, "head", "-n1", path.strip()).stdout
            assert shebang.strip() == "#!/bin/bash", (service, shebang)
        assert inspected["State"]["Health"]["Status"] == "healthy", service
        checked.add(service)
    assert {"hub", "runs", "idp", "prometheus", "alertmanager", "pkgrepo", "web-1"} <= checked


def test_the_idps_plain_http_health_listener_answers_on_loopback_only(stack):
    """Its health check's listener speaks plain HTTP, so no other container may reach it."""
    idp = service_host("idp")
    assert idp.run("http-check 9001 /healthz").rc == 0
    assert idp.run("http-check 9001 /.well-known/openid-configuration").rc == 1
    from_hub = service_host("hub").run("bash -c 'exec 3<>/dev/tcp/idp/9001'")
    assert from_hub.rc != 0
    assert "refused" in from_hub.stderr


def test_the_idp_refuses_its_health_ports_number_as_its_own_port(stack):
    """Both listeners cannot share 9001: the idp says so at start, naming IDP_PORT, instead of
    failing its health check forever. With 9000, the same settings get past IDP_PORT (and stop
    at the next, the missing client id), so the refusal is the guard's."""

    def start(port: str) -> subprocess.CompletedProcess:
        return docker(
            "run", "--rm", "-e", "IDP_ISSUER=http://idp:9000", "-e", f"IDP_PORT={port}",
            f"opsbook/idp:{IMAGE_TAG}", check=False,
        )  # fmt: skip

    refused = start("9001")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "IDP_PORT: expected a TCP port number other than 9001 (the health check's), got 9001"
    )
    assert start("9000").stderr.startswith("OAUTH_CLIENT_ID: ")
