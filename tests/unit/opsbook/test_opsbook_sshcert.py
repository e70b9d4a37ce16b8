"""The container's SSH certificate (opsbook.sshcert) against the real runs service and its CA.

The service is the real app on loopback (opsbook_runs_service), with a certificate authority of a
key made here (the real service loads it from RUNS_SSH_CA_KEY); only the hub's token check is a
stand-in. Certificates are read back with the real ssh-keygen.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from opsbook_fakes import FakeServer
from opsbook_fleet import FLEET_DIR, FLEET_URL_VARIABLE, demo_fleet, fleet_environment
from opsbook_runs_service import Service, approved

from opsbook import sshcert
from opsbook.config import Settings
from opsbook.contract import wire
from opsbook.inventory import Inventory
from opsbook.runs import RunSession
from opsbook.runsclient import RunsClient
from opsbook.service.ssh_ca import CertificateAuthority
from opsbook.sshcert import CertificateError, ensure_certificate

INVENTORY = FLEET_DIR / "inventories" / "demo"


@pytest.fixture
def ca_service(tmp_path: Path, fake_server: FakeServer) -> Iterator[Service]:
    """The runs service with a certificate authority (what __main__ loads from RUNS_SSH_CA_KEY)."""
    ca = CertificateAuthority(ed25519.Ed25519PrivateKey.generate(), minutes=15)
    service = Service(tmp_path / "runs.sqlite", alertmanager_url=fake_server.url, ssh_ca=ca)
    service.start()
    yield service
    service.stop()
    service.store.close()


@pytest.fixture
def no_ca_service(tmp_path: Path, fake_server: FakeServer) -> Iterator[Service]:
    """The runs service without a certificate authority (RUNS_SSH_CA_KEY never loaded)."""
    service = Service(tmp_path / "no-ca.sqlite", alertmanager_url=fake_server.url, ssh_ca=None)
    service.start()
    yield service
    service.stop()
    service.store.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Where the start script would have made the key pair (/run/opsbook/ssh)."""
    runtime = tmp_path / "run-opsbook"
    runtime.mkdir(mode=0o700)
    return runtime / "ssh"


def client(service: Service, who: str = "alice", retry_for: float = 5.0) -> RunsClient:
    return RunsClient(service.url, f"{who}-token", retry_for=retry_for)


def keygen_listing(path: Path) -> str:
    """ssh-keygen -L: what OpenSSH itself reads in the certificate."""
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_certificate_is_issued_for_the_containers_own_key(ca_service, folder):
    certificate = ensure_certificate(client(ca_service), folder=folder)
    files = sshcert.KeyFiles(folder)
    assert mode(folder) == 0o700 and mode(files.private) == 0o600
    assert mode(files.certificate) == 0o644
    assert files.certificate.read_text() == certificate.certificate + "\n"
    assert certificate.principals == ["staging"]  # never production (no run), never the repo
    assert certificate.key_id == "opsbook:alice"
    listing = keygen_listing(files.certificate)
    assert 'Key ID: "opsbook:alice"' in listing
    assert f"Serial: {certificate.serial}" in listing
    assert "permit-pty" in listing and "permit-agent-forwarding" not in listing
    public = files.public.read_text().split()[:2]
    assert (
        public[1]
        in subprocess.run(  # the certificate is for this key
            ["ssh-keygen", "-y", "-f", str(files.private)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "id_ed25519",
        "id_ed25519-cert.pub",
        "id_ed25519.pub",
    ]  # no temporary file left behind


def test_a_current_certificate_is_kept_and_one_about_to_expire_renewed(ca_service, folder):
    first = ensure_certificate(client(ca_service), folder=folder)
    again = ensure_certificate(client(ca_service), folder=folder)
    assert again.serial == first.serial  # a file read, no call to the service
    expires = wire.parse_wire_time(first.valid_before)
    later = expires - timedelta(seconds=30)
    assert "expires" in sshcert.renewal_reason(first, now=later)
    renewed = ensure_certificate(client(ca_service), folder=folder, now=later)
    assert renewed.serial != first.serial
    assert sshcert.read_certificate(folder).serial == renewed.serial


def test_a_certificate_of_another_key_is_replaced(ca_service, folder):
    ensure_certificate(client(ca_service), folder=folder)
    files = sshcert.KeyFiles(folder)
    old = files.certificate.read_text()
    files.private.unlink()  # the pair is made anew: the old certificate is not for it
    renewed = ensure_certificate(client(ca_service), folder=folder)
    assert files.certificate.read_text() != old
    assert sshcert.read_certificate(folder, files.public.read_text()) == renewed


def test_a_production_run_gets_its_environment_only_for_that_run(ca_service, folder):
    alice = client(ca_service)
    session = approved(RunSession.start(alice, runbook="patching", stack="db"), ca_service)
    assert session.run.production
    plain = ensure_certificate(alice, folder=folder)
    assert "production" not in plain.principals
    assert sshcert.renewal_reason(plain, session.run.id) == (
        f"not issued for run {session.run.id} (its environment's principal)"
    )
    for_run = ensure_certificate(alice, session.run.id, folder=folder)
    assert for_run.key_id == f"opsbook:alice:run-{session.run.id}"
    assert "production" in for_run.principals and "staging" in for_run.principals
    assert ensure_certificate(alice, session.run.id, folder=folder).serial == for_run.serial
    events = [e.type for e in alice.events(session.run.id)]
    assert "certificate" in events  # the ledger ties it to the run


def test_a_refusal_is_a_clear_error_and_leaves_the_certificate_as_it_was(ca_service, folder):
    alice = client(ca_service)
    held = ensure_certificate(alice, folder=folder)
    staging = RunSession.start(alice, runbook="patching", stack="web").run
    with pytest.raises(CertificateError) as refused:
        ensure_certificate(alice, staging.id, folder=folder)
    message = str(refused.value)
    assert message.startswith(f"the runs service refused an SSH certificate for run {staging.id}")
    assert "No play was started" in message
    production = approved(RunSession.start(alice, runbook="patching", stack="db"), ca_service).run
    with pytest.raises(CertificateError, match="refused an SSH certificate for run"):
        ensure_certificate(client(ca_service, "bob"), production.id, folder=folder)
    assert sshcert.read_certificate(folder) == held


def test_no_certificate_authority_or_no_service_is_no_certificate(no_ca_service, folder, tmp_path):
    """A service without a CA (503, retried until the budget runs out); then nothing listens."""
    with pytest.raises(CertificateError, match=r"^no SSH certificate \(no certificate"):
        ensure_certificate(client(no_ca_service, retry_for=0.3), folder=folder)
    assert not sshcert.KeyFiles(folder).certificate.exists()
    missing = tmp_path / "nowhere" / "ssh"
    with pytest.raises(CertificateError, match="opsbook-start"):
        ensure_certificate(client(no_ca_service), folder=missing)


def test_the_step_is_a_no_op_only_when_switched_off(folder, monkeypatch):
    step = sshcert.certificate_step(False, folder=folder)
    assert step() is None and not folder.exists()
    monkeypatch.setenv("OPSBOOK_SSH_CERTIFICATES", "off")
    assert sshcert.certificate_step()() is None
    monkeypatch.setenv("OPSBOOK_SSH_CERTIFICATES", "on")
    monkeypatch.delenv("OPSBOOK_RUNS_URL", raising=False)
    with pytest.raises(CertificateError, match="OPSBOOK_SSH_CERTIFICATES=off only where"):
        sshcert.certificate_step(folder=folder)()


def test_opsbook_cert_renews_and_prints_principals_and_expiry_never_the_key(
    ca_service, folder, monkeypatch, capsys
):
    monkeypatch.setenv("OPSBOOK_RUNS_URL", ca_service.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    monkeypatch.setenv("OPSBOOK_SSH_DIR", str(folder))
    assert sshcert.main([]) == 0
    first = sshcert.read_certificate(folder)
    assert sshcert.main(["--quiet"]) == 0  # by hand: always a new one
    second = sshcert.read_certificate(folder)
    assert second.serial != first.serial
    out = capsys.readouterr().out
    assert out.startswith(f"certificate opsbook:alice, serial {first.serial}\n")
    assert "principals: " in out and "staging" in out and "valid until" in out
    key_material = [
        sshcert.KeyFiles(folder).private.read_text().splitlines()[1],
        first.certificate.split()[1][:40],
    ]
    assert not any(secret in out for secret in key_material)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "nobody")
    assert sshcert.main(["--timeout", "1"]) == 1
    assert capsys.readouterr().err.startswith("opsbook-cert: the runs service refused")


def test_a_production_runs_plays_get_a_certificate_for_that_run(
    ca_service, folder, fake_server, tmp_path, monkeypatch
):
    """RunSession.patch gives rolling_patch the certificate step with the run's id."""
    fake_server.responder = demo_fleet()
    monkeypatch.setenv(FLEET_URL_VARIABLE, fake_server.url)
    environment = fleet_environment(fake_server.url, tmp_path / "runs")
    environment |= {"OPSBOOK_SSH_CERTIFICATES": "on", "OPSBOOK_SSH_DIR": str(folder)}
    settings = Settings.from_env(environment)
    alice = client(ca_service)
    options = wire.RunOptions(limit=["db-1"], check_mode=True)
    session = approved(
        RunSession.start(alice, runbook="patching", stack="db", options=options), ca_service
    )
    result = session.patch(settings, Inventory.load(INVENTORY)).wait(120)
    assert result.complete, result.summary()
    held = sshcert.read_certificate(folder)
    assert held.key_id == f"opsbook:alice:run-{session.run.id}"
    assert "production" in held.principals
    assert "certificate" in [event.type for event in alice.events(session.run.id)]


def test_a_run_whose_certificate_is_refused_stops_before_its_play(
    ca_service, folder, fake_server, tmp_path, monkeypatch
):
    fleet = demo_fleet()
    fake_server.responder = fleet
    monkeypatch.setenv(FLEET_URL_VARIABLE, fake_server.url)
    environment = fleet_environment(fake_server.url, tmp_path / "runs")
    environment |= {"OPSBOOK_SSH_CERTIFICATES": "on", "OPSBOOK_SSH_DIR": str(folder)}
    settings = Settings.from_env(environment)
    session = RunSession.start(
        client(ca_service), runbook="patching", stack="db", options=wire.RunOptions(limit=["db-1"])
    )
    approved(session, ca_service)
    # bob's client drives alice's run: the ledger calls would be refused too, so only the
    # certificate's client is bob's here.
    refused = sshcert.certificate_step(
        True, client(ca_service, "bob"), session.run.id, folder=folder
    )
    result = session.patch(settings, Inventory.load(INVENTORY), before_play=refused).wait(60)
    assert not result.complete
    assert "before the play: the runs service refused an SSH certificate" in result.stopped
    assert result.not_started == ["db-1"]
    # the service silenced db-1 at the batch's start and expired that at its end: nothing else
    assert fleet.log == ["silence db-1:9100", "expire silence-1"]
