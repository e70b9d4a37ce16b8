"""No team key: each engineer's container holds its own key, and the runs service certifies it for
minutes, with principals it chooses. The hosts check the certificate (the CA, the principal of
their environment, the validity) and log whose it is. Tested from the side of the person kept out.

The test stack certifies for RUNS_SSH_CERT_MINUTES=1 (plus the service's minute of clock skew),
so "access ends within the validity" is waited for as a condition with a deadline.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from opsbook.contract import wire
from opsbook.runsclient import RunsClient

from .hubclient import HubUser, runs_client, signed_in
from .stack import IMAGE_TAG, as_engineer, compose, docker, reset_fleet, wait_for

SSH_DIR = "/run/opsbook/ssh"
CERTIFICATE = f"{SSH_DIR}/id_ed25519-cert.pub"
# A certificate is valid from a minute before it is issued to RUNS_SSH_CERT_MINUTES after.
VALIDITY = 60
ENDS_WITHIN = VALIDITY + 60  # seconds: the validity, and room for a slow machine


@pytest.fixture(scope="module", autouse=True)
def fresh_fleet(stack):
    reset_fleet()


def started(stack, name: str) -> str:
    """`name`'s server, started afresh (an earlier module may have started it long ago)."""
    user = signed_in(stack, name)
    if user.server_ready():
        user.stop_server()
    user.start_server()
    return stack.container_of(name)


@pytest.fixture(scope="module")
def erin(stack) -> str:
    return started(stack, "erin")


@pytest.fixture(scope="module")
def bob(stack) -> str:
    return started(stack, "bob")


def ssh(container: str, host: str, *options: str) -> subprocess.CompletedProcess:
    return as_engineer(
        container, "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *options, host, "true"
    )


def bare_key_opens(container: str, key: str, host: str) -> bool:
    """Whether `key` alone (a copy with no certificate beside it, and no ssh config adding
    one) logs in to `host`; host keys are still checked against the host CA."""
    script = (
        f'd=$(mktemp -d) && cp "{key}" "$d/key" && chmod 600 "$d/key" && '
        "ssh -F none -o BatchMode=yes -o ConnectTimeout=10 -o IdentitiesOnly=yes "
        f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={SSH_DIR}/known_hosts "
        f'-i "$d/key" opsbook@{host} true; status=$?; rm -rf "$d"; exit $status'
    )
    return as_engineer(container, "sh", "-c", script).returncode == 0


def renew(container: str, run_id: int | None = None) -> subprocess.CompletedProcess:
    """The toolkit's certificate step, as a runbook takes it before a play."""
    script = (
        "from opsbook import sshcert; from opsbook.runsclient import RunsClient; "
        f"print(sshcert.ensure_certificate(RunsClient.from_env(), run_id={run_id!r}, "
        "min_seconds=10**6).principals)"
    )
    return as_engineer(container, "python3", "-c", script)


def sshd_log(host: str) -> str:
    container = compose("ps", "-q", host).stdout.strip()
    logs = docker("logs", container, check=False)
    return logs.stdout + logs.stderr


def client_of(stack, name: str) -> RunsClient:
    return runs_client(stack, name, f"ssh test {name}")


def serial(container: str) -> str:
    """The serial of the certificate in the container ("" when there is none)."""
    listing = as_engineer(container, "ssh-keygen", "-L", "-f", CERTIFICATE).stdout
    return next((line.split()[-1] for line in listing.splitlines() if "Serial:" in line), "")


def test_ssh_asks_for_a_certificate_when_there_is_none(erin):
    """The server's start asks for none; erin's first ssh does, before it connects."""
    as_engineer(erin, "rm", "-f", CERTIFICATE)
    first = ssh(erin, "web-1")
    assert first.returncode == 0, first.stderr
    assert serial(erin), "ssh should have left the certificate it asked for"
    assert first.stderr.strip() == "", "asking is quiet when it works"


def test_without_the_runs_service_ssh_says_why_and_the_host_refuses(erin):
    """Fail closed, with the reason where erin looks: ssh's own error output."""
    as_engineer(erin, "rm", "-f", CERTIFICATE)
    refused = as_engineer(
        erin,
        "env",
        "OPSBOOK_RUNS_URL=http://127.0.0.1:9/services/runs/",
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "web-1", "true",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "opsbook-cert:" in refused.stderr and "Permission denied" in refused.stderr, (
        refused.stderr
    )
    assert not serial(erin)


def test_erin_reaches_staging_with_her_certificate_and_ansible_works_with_it(erin):
    assert ssh(erin, "web-1").returncode == 0, ssh(erin, "web-1").stderr
    ping = as_engineer(
        erin, "ansible", "-i", "ansible/inventories/demo", "web-1", "-m", "ansible.builtin.ping"
    )
    assert ping.returncode == 0 and "SUCCESS" in ping.stdout, ping.stdout + ping.stderr
    # The host's log names who came in, by the certificate's KeyID.
    assert "ID opsbook:erin" in sshd_log("web-1")


def test_production_refuses_erin_at_the_host(erin):
    refused = ssh(erin, "db-1")
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr, refused.stderr
    ping = as_engineer(
        erin, "ansible", "-i", "ansible/inventories/demo", "db-1", "-m", "ansible.builtin.ping"
    )
    assert ping.returncode != 0 and "UNREACHABLE" in ping.stdout, ping.stdout


def test_no_file_in_erins_container_is_a_key_the_fleet_accepts_on_its_own(erin):
    """The old team key is gone; her own key, in memory, opens nothing without its certificate;
    and no other private key in her container or home opens anything."""
    assert as_engineer(erin, "test", "-e", "/etc/opsbook/ssh").returncode != 0
    keys = as_engineer(
        erin,
        "sh",
        "-c",
        "grep -rlE '^-----BEGIN [A-Z ]*PRIVATE KEY-----' "
        "/home/jovyan /etc /tmp /run /var /opt/opsbook/etc 2>/dev/null || true",
    ).stdout.split()
    assert f"{SSH_DIR}/id_ed25519" in keys
    assert not [key for key in keys if key.startswith("/home/")], keys  # nothing on the volume
    mode = as_engineer(erin, "stat", "-c", "%a %U", f"{SSH_DIR}/id_ed25519").stdout.split()
    assert mode == ["600", "jovyan"]
    for key in keys:
        for host in ("web-1", "db-1", "pkgrepo"):
            assert not bare_key_opens(erin, key, host), f"{host} accepted {key} on its own"


def test_a_viewer_gets_no_certificate(stack):
    """carol (viewers) has no token of her own: she asks with her browser's session."""
    carol = HubUser(stack.hub_url, "carol")
    carol.sign_in(stack.demo_password)
    carol.session.get(f"{stack.hub_url}/services/runs/", timeout=10)  # the service's OAuth
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHv5GSlwXC6tPwqZ1mqQjEoJVaJpuUkhKOChqgiS5HOR x"
    answer = carol.session.post(
        f"{stack.hub_url}/services/runs/api/ssh/certificate",
        json={"public_key": key},
        headers={"X-XSRFToken": carol.session.cookies.get("_xsrf", path="/services/runs/") or ""},
        timeout=10,
    )
    assert answer.status_code == 403, answer.text
    assert "custom:runs:write" in answer.text


def test_production_access_follows_the_run_and_ends_after_a_takeover(stack, bob):
    """bob (on call) reaches db-1 only during his production run; once alice has taken it
    over, his renewal is refused and his access ends within the validity."""
    assert renew(bob).returncode == 0
    assert ssh(bob, "db-1").returncode != 0, "on call without a run must not reach production"

    bob_api, alice_api = client_of(stack, "bob"), client_of(stack, "alice")
    run = bob_api.create(wire.CreateRun(runbook="ssh-test", stack="db"))
    try:
        # Four eyes first: no production certificate before another on-call engineer approves.
        assert run.state is wire.RunState.AWAITING_APPROVAL
        assert renew(bob, run.id).returncode != 0
        alice_api.approve(run.id, "ssh test: bob may go ahead")
        bob_api.lease(run.id)
        granted = renew(bob, run.id)
        assert granted.returncode == 0, granted.stderr
        assert "production" in granted.stdout
        assert ssh(bob, "db-1").returncode == 0
        assert f"ID opsbook:bob:run-{run.id}" in sshd_log("db-1")

        # bob's kernel "dies": no renewal; the run is orphaned and alice takes it over.
        wait_for(
            lambda: alice_api.run(run.id).state is wire.RunState.ORPHANED,
            60,
            "bob's lease running out",
        )
        alice_api.takeover(run.id, "bob's kernel died")
        refused = renew(bob, run.id)
        assert refused.returncode != 0, "bob's renewal for a run he no longer owns"
        assert "alice" in refused.stderr, refused.stderr  # the refusal says who owns it now
        taken_at = time.monotonic()
        wait_for(lambda: ssh(bob, "db-1").returncode != 0, ENDS_WITHIN, "bob's access to end")
        print(f"bob's access ended {time.monotonic() - taken_at:.0f} s after the takeover")
    finally:
        alice_api.abort(run.id, "test over")


def test_a_key_and_certificate_copied_out_stop_working_after_the_validity(stack, erin, tmp_path):
    assert renew(erin).returncode == 0
    for name in ("id_ed25519", "id_ed25519-cert.pub"):  # what erin could copy and take away
        (tmp_path / name).write_text(as_engineer(erin, "cat", f"{SSH_DIR}/{name}").stdout)
    (tmp_path / "id_ed25519").chmod(0o600)

    def from_elsewhere() -> subprocess.CompletedProcess:
        """The copy, used from another container on the fleet's network."""
        return subprocess.run(
            [
                "docker", "run", "--rm", "--network", f"{stack.config.project}-fleet",
                "-v", f"{tmp_path}:/copied:ro", "--user", "0", "--entrypoint", "ssh",
                f"opsbook/singleuser:{IMAGE_TAG}",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                "-i", "/copied/id_ed25519", "-o", "CertificateFile=/copied/id_ed25519-cert.pub",
                "opsbook@web-1", "true",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip

    assert from_elsewhere().returncode == 0, "the copy should work while the certificate is valid"
    copied = serial(erin)
    wait_for(
        lambda: from_elsewhere().returncode != 0, ENDS_WITHIN, "the copied certificate to expire"
    )
    # In her container, ssh replaces her own expired certificate before it connects.
    again = ssh(erin, "web-1")
    assert again.returncode == 0, again.stderr
    assert serial(erin) not in ("", copied)
