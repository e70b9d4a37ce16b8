"""Engineers' containers: their own, with the read-only library and a home that lasts."""

import threading
import time

import pytest
import requests

from .hubclient import HubUser, ServerClient, signed_in
from .stack import compose, docker, wait_for


@pytest.fixture(scope="module")
def alice(stack):
    return signed_in(stack, "alice", server=True)


@pytest.fixture(scope="module")
def alice_server(stack, alice):
    return ServerClient(stack.hub_url, "alice", alice.new_token())


def test_the_runbook_library_is_there_and_read_only(alice_server):
    listing = alice_server.get("runbooks")
    assert listing.status_code == 200
    names = {item["name"] for item in listing.json()["content"]}
    assert "index.ipynb" in names
    assert listing.json()["writable"] is False
    refused = alice_server.put_text("runbooks/index.ipynb", "overwritten")
    assert refused.status_code >= 400
    refused_new = alice_server.put_text("runbooks/new.txt", "new file")
    assert refused_new.status_code >= 400
    assert alice_server.get("runbooks/new.txt").status_code == 404
    assert "overwritten" not in alice_server.get("runbooks/index.ipynb").text


def test_the_home_folder_is_writable_and_survives_a_respawn(stack, alice, alice_server):
    assert alice_server.put_text("notes.txt", "handover: web-2 is flaky").status_code in (200, 201)
    alice.stop_server()
    assert not stack.container_running("alice")  # removed when stopped
    alice.start_server()
    again = ServerClient(stack.hub_url, "alice", alice.new_token())
    assert again.get("notes.txt").json()["content"] == "handover: web-2 is flaky"


def test_the_container_runs_unprivileged_without_the_docker_socket(stack, alice):
    name = stack.container_of("alice")
    inspected = docker(
        "inspect",
        name,
        "--format",
        "{{.Config.User}}|{{.HostConfig.Privileged}}|{{.HostConfig.CapDrop}}|"
        "{{.HostConfig.Memory}}|{{.HostConfig.CpuQuota}}|{{.HostConfig.PidsLimit}}",
    )
    user, privileged, cap_drop, memory, cpu_quota, pids = inspected.stdout.strip().split("|")
    assert user.split(":")[0] not in ("", "0", "root")
    assert privileged == "false"
    assert "ALL" in cap_drop
    # the .env defaults: 2G, 1.0 core (quota over the default 100 ms period), 512 processes
    assert (int(memory), int(cpu_quota), int(pids)) == (2 * 1024**3, 100_000, 512)
    assert docker("exec", name, "id", "-u").stdout.strip() != "0"
    assert docker("exec", name, "test", "-e", "/var/run/docker.sock", check=False).returncode != 0
    mounts = docker("inspect", name, "--format", "{{range .Mounts}}{{.Source}} {{end}}").stdout
    assert "docker.sock" not in mounts


def test_another_engineer_cannot_reach_alices_server(stack, alice):
    bob = HubUser(stack.hub_url, "bob")
    bob.sign_in(stack.demo_password)
    page = bob.session.get(f"{stack.hub_url}/user/alice/lab", timeout=10)
    assert page.status_code == 403
    bob_token = bob.new_token()
    with_token = ServerClient(stack.hub_url, "alice", bob_token).get("")
    assert with_token.status_code == 403


def test_a_hub_restart_keeps_servers_and_open_sessions(stack, alice, alice_server):
    """Requests through the proxy keep answering while the hub restarts (cleanup_servers=False)."""
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def keep_asking() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                status = alice_server.get("").status_code
            except requests.RequestException as error:
                failures.append(repr(error))
            else:
                answered += 1
                if status != 200:
                    failures.append(f"HTTP {status}")
            time.sleep(0.1)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        compose("restart", "hub")
        wait_for(
            lambda: requests.get(f"{stack.hub_url}/hub/health", timeout=2).ok,
            90,
            "hub back after restart",
        )
    finally:
        stop.set()
        asker.join()
    assert answered > 10
    assert failures == []
    assert stack.container_running("alice")
    wait_for(alice.server_ready, 30, "alice's server still known to the hub")


def test_provider_down_login_says_so_and_running_servers_keep_working(stack, alice, alice_server):
    compose("stop", "idp")
    try:
        page = HubUser(stack.hub_url, "bob").open_login()
        assert page.status_code == 503
        assert "not answering" in page.text

        # Past the refresh age (5 s), alice's session is refreshed against the missing provider:
        # she stays signed in, and the hub says why in its log.
        def refreshed_while_down() -> bool:
            assert alice.whoami().status_code == 200
            logs = compose("logs", "--no-color", "hub").stdout
            return "Identity provider unreachable while refreshing alice" in logs

        wait_for(refreshed_while_down, 60, "alice's session refreshed while the provider is down")
        assert alice_server.get("").status_code == 200
    finally:
        compose("start", "idp")
        wait_for(lambda: requests.get(f"{stack.idp_url}/healthz", timeout=2).ok, 60, "idp back")
