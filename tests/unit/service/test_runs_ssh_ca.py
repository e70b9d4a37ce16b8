"""The runs service's SSH certificate authority (opsbook.service.ssh_ca, Store.issue_certificate,
POST api/ssh/certificate, GET api/ssh/ca), with certificates read back by OpenSSH's own
`ssh-keygen -L`.

The fleet is conftest.py's inventory: stack web (web-1 ... web-5) in staging, declared
non-production; db (db-1 ... db-3) in production; so an ops engineer's certificate carries `staging`
(never the package repository's errata-* principals), and `production` only comes with a running
production run the caller owns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from fake_alertmanager import FakeAlertmanager
from sqlalchemy import create_engine, insert, inspect
from tornado.testing import AsyncHTTPTestCase
from tornado.web import RequestHandler

from opsbook.contract import wire
from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import (
    Certificate,
    CertificateRequest,
    ErrorCode,
    ErrorReply,
    RunOptions,
    RunState,
    SshCa,
)
from opsbook.service import __main__ as service_main
from opsbook.service import rules, ssh_ca, tables
from opsbook.service.app import Context, make_app
from opsbook.service.notify import Notifier
from opsbook.service.oncall import StaticOncall
from opsbook.service.rules import Caller, Refused, RunFacts
from opsbook.service.ssh_ca import CaKeyError, CertificateAuthority, check_public_key
from opsbook.service.store import Store

ONCALL = frozenset({SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER})
ALICE = Caller("alice", ONCALL)
BOB = Caller("bob", ONCALL)
ERIN = Caller("erin", frozenset({SCOPE_READ, SCOPE_WRITE}))
CAROL = Caller("carol", frozenset({SCOPE_READ}))
TOKEN = "0123456789abcdef0123456789abcdef"
SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="apt-get install openssh-client")


# --- keys ----------------------------------------------------------------------------------------


def private_openssh(key: Any) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())


def public_line(key: Any, comment: str = "erin@jupyter-erin") -> str:
    line = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


@pytest.fixture(scope="module")
def ca_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def ca(ca_key) -> CertificateAuthority:
    return CertificateAuthority(ca_key, minutes=15)


@pytest.fixture(scope="module")
def user_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def user_pub(user_key) -> str:
    return public_line(user_key)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'runs.sqlite'}"


@pytest.fixture
def open_store(database_url, clock, inventory) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def open_() -> Store:
        store = Store(
            database_url,
            fleet=inventory.current,
            alertmanager=FakeAlertmanager(),
            lease_seconds=60,
            now=clock,
        )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store) -> Store:
    return open_store()


def start_db(store: Store, caller: Caller = BOB, *, approve: bool = True) -> int:
    """A production run (stack db) owned by `caller`, approved by another on-call engineer
    (unless `approve` is False: then it awaits approval)."""
    run = store.create_run(caller, runbook="patching", stack="db", options=RunOptions())
    assert run.production and run.environment == "production"
    assert run.state is RunState.AWAITING_APPROVAL
    if approve:
        other = ALICE if caller.name != "alice" else BOB
        run = store.approve(run.id, other, "planned maintenance")
        assert run.state is RunState.RUNNING
    return run.id


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    return caught.value


def keygen_list(certificate: str, tmp_path: Path) -> str:
    """`ssh-keygen -L` of a certificate line, times in UTC."""
    path = tmp_path / "id_ed25519-cert.pub"
    path.write_text(certificate + "\n")
    done = subprocess.run(
        [SSH_KEYGEN, "-L", "-f", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TZ": "UTC"},
        check=True,
    )
    return done.stdout


def keygen_section(listing: str, title: str) -> list[str]:
    """The indented lines under `title:` in ssh-keygen -L's listing ([] for '(none)')."""
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{title}:"))
    header = lines[start].split(":", 1)[1].strip()
    if header == "(none)":
        return []
    found = []
    for line in lines[start + 1 :]:
        if not line.startswith("                "):  # 16 spaces: an item of the section
            break
        found.append(line.strip())
    return found


def keygen_field(listing: str, title: str) -> str:
    line = next(line for line in listing.splitlines() if line.strip().startswith(f"{title}:"))
    return line.split(":", 1)[1].strip()


# --- the certificate, as OpenSSH reads it ---------------------------------------------------------


@needs_ssh_keygen
def test_an_ops_engineers_certificate_as_ssh_keygen_reads_it(store, ca, user_key, tmp_path, clock):
    issued = store.issue_certificate(ERIN, public_line(user_key), ca=ca)
    listing = keygen_list(issued.certificate, tmp_path)

    assert "user certificate" in keygen_field(listing, "Type")
    assert keygen_field(listing, "Key ID") == '"opsbook:erin"'
    assert keygen_field(listing, "Serial") == str(issued.serial)
    assert keygen_section(listing, "Principals") == ["staging"]  # never errata-*: the repo
    assert keygen_section(listing, "Critical Options") == []
    # permit-pty only: no agent, port or X11 forwarding, no user rc
    assert keygen_section(listing, "Extensions") == ["permit-pty"]
    assert ca.fingerprint in keygen_field(listing, "Signing CA")
    assert check_public_key(public_line(user_key)).fingerprint in keygen_field(
        listing, "Public key"
    )
    after = (clock.now - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S")
    before = (clock.now + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S")
    assert keygen_field(listing, "Valid") == f"from {after} to {before}"

    assert issued.key_id == "opsbook:erin"
    assert issued.principals == ["staging"]
    assert 0 <= issued.serial < 2**63
    assert wire.parse_wire_time(issued.valid_before) == clock.now + timedelta(minutes=15)
    assert wire.parse_wire_time(issued.valid_after) == clock.now - timedelta(seconds=60)
    assert issued.certificate.startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert "\n" not in issued.certificate


@needs_ssh_keygen
def test_the_source_address_is_a_critical_option_when_configured(ca_key, user_key, tmp_path):
    ca = CertificateAuthority(ca_key, minutes=5, source_addresses=("172.30.0.0/16", "10.8.0.0/24"))
    issued = ca.sign(
        check_public_key(public_line(user_key)),
        key_id="opsbook:erin",
        principals=["staging"],
        now=datetime.now(UTC),
    )
    listing = keygen_list(issued.certificate, tmp_path)
    assert keygen_section(listing, "Critical Options") == [
        "source-address 172.30.0.0/16,10.8.0.0/24"
    ]
    assert keygen_section(listing, "Extensions") == ["permit-pty"]


@needs_ssh_keygen
def test_an_rsa_3072_key_and_an_rsa_ca_work(tmp_path):
    rsa_ca = CertificateAuthority(rsa.generate_private_key(65537, 3072), minutes=15)
    user = rsa.generate_private_key(65537, 3072)
    issued = rsa_ca.sign(
        check_public_key(public_line(user)),
        key_id="opsbook:erin",
        principals=["staging"],
        now=datetime.now(UTC),
    )
    listing = keygen_list(issued.certificate, tmp_path)
    assert issued.certificate.startswith("ssh-rsa-cert-v01@openssh.com ")
    assert keygen_section(listing, "Principals") == ["staging"]
    assert "rsa-sha2-512" in keygen_field(listing, "Signing CA")  # not the SHA-1 ssh-rsa


def test_a_certificate_never_goes_out_without_principals(ca, user_pub):
    """OpenSSH reads a certificate without principals as valid for any user."""
    with pytest.raises(ValueError, match="at least one principal"):
        ca.sign(check_public_key(user_pub), key_id="x", principals=[], now=datetime.now(UTC))


# --- the caller's key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "expected one OpenSSH public key line"),
        ("hello", "not an OpenSSH public key (it starts with 'hello')"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "not an OpenSSH public key"),
        ("ssh-ed25519 AAAA", "not a valid OpenSSH ssh-ed25519 public key"),
        ("ssh-ed25519 AAAA\nssh-ed25519 AAAA", "expected one OpenSSH public key line"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-dss keys are not accepted"),
        ("ecdsa-sha2-nistp256 AAAAE2VjZHNh", "ecdsa-sha2-nistp256 keys are not accepted"),
        ("sk-ssh-ed25519@openssh.com AAAA", "keys are not accepted"),
        ("ssh-ed25519-cert-v01@openssh.com AAAA", "that is a certificate"),
        ("ssh-ed25519 " + "A" * 20_000, "expected one OpenSSH public key line"),
    ],
)
def test_what_is_not_an_acceptable_public_key_is_a_400_saying_why(text, says):
    error = refused(check_public_key, text)
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert says in error.message
    assert error.message.startswith("public_key: ")


def test_short_rsa_and_ecdsa_keys_are_refused_naming_what_is_accepted():
    short = refused(check_public_key, public_line(rsa.generate_private_key(65537, 2048)))
    assert short.status == 400
    assert "an RSA key of 2048 bits is too short" in short.message
    assert "ed25519" in short.message and "3072" in short.message
    ecdsa = refused(check_public_key, public_line(ec.generate_private_key(ec.SECP256R1())))
    assert ecdsa.status == 400 and "ecdsa-sha2-nistp256 keys are not accepted" in ecdsa.message


@needs_ssh_keygen
def test_a_dsa_key_made_by_ssh_keygen_is_refused(tmp_path):
    done = subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "dsa", "-N", "", "-f", str(tmp_path / "id_dsa")],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("this ssh-keygen makes no DSA keys any more")
    error = refused(check_public_key, (tmp_path / "id_dsa.pub").read_text())
    assert error.status == 400 and "ssh-dss keys are not accepted" in error.message


def test_a_key_whose_type_word_lies_is_refused(user_key):
    blob = public_line(user_key).split()[1]
    error = refused(check_public_key, f"ssh-rsa {blob}")
    assert error.status == 400


def test_the_fingerprint_is_ssh_keygens(user_key, tmp_path):
    if SSH_KEYGEN is None:
        pytest.skip("no ssh-keygen")
    (tmp_path / "k.pub").write_text(public_line(user_key) + "\n")
    done = subprocess.run(
        [SSH_KEYGEN, "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True
    )
    assert check_public_key(public_line(user_key)).fingerprint == done.stdout.split()[1]


# --- principals: decided by the service ----------------------------------------------------------


def test_principals_are_the_nonproduction_environments_never_the_repository(inventory):
    fleet = inventory.current()
    assert ssh_ca.nonproduction_environments(fleet) == ["staging"]
    assert ssh_ca.principals(fleet) == ["staging"]
    assert ssh_ca.principals(fleet, "production") == ["staging", "production"]


def test_principals_follow_the_inventory(inventory):
    """A new non-production environment with a stack is added; a declared one without stacks
    is not; undeclared ones are production (never in a certificate without a run)."""
    inventory.nonproduction = frozenset({"staging", "qa", "dev"})
    inventory.add_stack("cache", ["cache-1"], "qa")
    inventory.add_stack("edge", ["edge-1"], "emea")  # not declared: production
    fleet = inventory.current()
    assert ssh_ca.principals(fleet) == ["qa", "staging"]
    inventory.nonproduction = frozenset()
    with pytest.raises(Refused, match="no host would let this certificate in"):
        ssh_ca.principals(inventory.current())  # a certificate without principals opens all
    assert ssh_ca.principals(inventory.current(), "emea") == ["emea"]


@pytest.mark.parametrize(
    ("facts", "caller", "status", "code"),
    [
        ({}, BOB, None, None),
        ({"owner": "alice"}, BOB, 409, ErrorCode.NOT_OWNER),
        ({"production": False}, BOB, 409, ErrorCode.NOT_PRODUCTION),
        ({"state": RunState.PAUSED}, BOB, 409, ErrorCode.WRONG_STATE),
        ({"state": RunState.HANDED_OFF, "handoff_to": "alice"}, BOB, 409, ErrorCode.WRONG_STATE),
        ({"state": RunState.ORPHANED}, BOB, 409, ErrorCode.LEASE_EXPIRED),
        ({"state": RunState.COMPLETED}, BOB, 409, ErrorCode.RUN_FINISHED),
        ({"lease": -1}, BOB, 409, ErrorCode.LEASE_EXPIRED),
        ({"lease": 0}, BOB, 409, ErrorCode.LEASE_EXPIRED),
        ({}, ERIN, 403, ErrorCode.MISSING_SCOPE),
    ],
)
def test_the_rule_for_a_runs_production_principal(facts, caller, status, code):
    """rules.check_certificate_run on its own: the owner, production, running, leased."""
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    run = RunFacts(
        id=7,
        state=facts.get("state", RunState.RUNNING),
        owner=facts.get("owner", "bob"),
        production=facts.get("production", True),
        handoff_to=facts.get("handoff_to"),
        lease_expires_at=now + timedelta(seconds=facts.get("lease", 30)),
    )
    if status is None:
        assert rules.check_certificate_run(run, caller, now) is None
        return
    error = refused(rules.check_certificate_run, run, caller, now)
    assert (error.status, error.code) == (status, code)


def test_an_ops_engineer_gets_staging_and_repo_only(store, ca, user_pub):
    issued = store.issue_certificate(ERIN, user_pub, ca=ca)
    assert issued.principals == ["staging"]
    assert "production" not in issued.principals


def test_an_ops_engineers_staging_run_adds_nothing(store, ca, user_pub):
    run = store.create_run(ERIN, runbook="patching", stack="web", options=RunOptions())
    error = refused(store.issue_certificate, ERIN, user_pub, run.id, ca=ca)
    assert (error.status, error.code, error.run_id) == (409, ErrorCode.NOT_PRODUCTION, run.id)
    assert "not on a production stack" in error.message and "without run_id" in error.message


def test_on_call_without_a_run_gets_no_production(store, ca, user_pub):
    issued = store.issue_certificate(BOB, user_pub, ca=ca)
    assert issued.principals == ["staging"]
    assert issued.key_id == "opsbook:bob"


def test_the_owner_of_a_running_production_run_gets_production(store, ca, user_pub, clock):
    run_id = start_db(store, BOB)
    issued = store.issue_certificate(BOB, user_pub, run_id, ca=ca)
    assert issued.principals == ["staging", "production"]
    assert issued.key_id == f"opsbook:bob:run-{run_id}"
    # the run's history says who got which access, until when; not the certificate itself
    event = store.last_events(run_id, 1)[0]
    assert (event.type, event.actor, event.kind) == ("certificate", "bob", wire.EventKind.HUMAN)
    until = clock.now + timedelta(minutes=15)
    assert event.message == (
        f"SSH certificate for bob: staging, production, serial {issued.serial}, "
        f"valid until {until:%H:%M:%S} UTC"
    )
    assert event.data["serial"] == issued.serial
    assert event.data["principals"] == ["staging", "production"]
    assert event.data["valid_before"] == issued.valid_before
    assert issued.certificate.split()[1] not in json.dumps(event.to_dict())
    assert user_pub.split()[1] not in json.dumps(event.to_dict())


def test_a_production_run_awaiting_approval_gives_no_production(store, ca, user_pub):
    run_id = start_db(store, BOB, approve=False)
    error = refused(store.issue_certificate, BOB, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.AWAITING_APPROVAL)
    assert "awaiting_approval" in error.message and "certificate" in error.message
    assert store.certificates(run_id=run_id) == []


def test_someone_elses_production_run_gives_nothing(store, ca, user_pub):
    run_id = start_db(store, BOB)
    error = refused(store.issue_certificate, ALICE, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)
    assert f"run {run_id} is owned by bob, not by you (alice)" in error.message
    assert store.certificates() == []  # refused: nothing issued, nothing recorded


def test_after_a_takeover_the_old_owner_gets_409_and_the_new_one_production(
    store, ca, user_pub, clock
):
    run_id = start_db(store, BOB)
    store.issue_certificate(BOB, user_pub, run_id, ca=ca)
    clock.advance(61)
    store.expire_leases()
    store.takeover(run_id, ALICE, "bob's kernel died")
    error = refused(store.issue_certificate, BOB, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.NOT_OWNER)
    assert "owned by alice" in error.message
    # bob still gets his everyday certificate, without production
    assert store.issue_certificate(BOB, user_pub, ca=ca).principals == ["staging"]
    assert "production" in store.issue_certificate(ALICE, user_pub, run_id, ca=ca).principals


def test_an_expired_lease_gives_no_production(store, ca, user_pub, clock):
    run_id = start_db(store, BOB)
    clock.advance(61)  # the lease ran out; the sweeper has not noticed yet
    error = refused(store.issue_certificate, BOB, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.LEASE_EXPIRED)
    assert "your lease ran out" in error.message
    store.expire_leases()  # now orphaned: the same answer
    error = refused(store.issue_certificate, BOB, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.LEASE_EXPIRED)


def test_a_renewed_lease_keeps_production(store, ca, user_pub, clock):
    run_id = start_db(store, BOB)
    clock.advance(50)
    store.renew_lease(run_id, BOB)
    clock.advance(50)
    assert "production" in store.issue_certificate(BOB, user_pub, run_id, ca=ca).principals


def test_a_paused_or_finished_run_gives_no_production(store, ca, user_pub):
    run_id = start_db(store, BOB)
    store.pause(run_id, BOB)
    error = refused(store.issue_certificate, BOB, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.WRONG_STATE)
    assert "paused, not running" in error.message and "Resume it first" in error.message
    store.resume(run_id, BOB)
    store.finish(run_id, BOB, RunState.FAILED, "stopped")
    error = refused(store.issue_certificate, BOB, user_pub, run_id, ca=ca)
    assert (error.status, error.code) == (409, ErrorCode.RUN_FINISHED)


def test_without_the_production_scope_no_production(store, ca, user_pub):
    """Someone removed from on-call keeps their run in the ledger, but the hub no longer gives
    their token the production scope: no production certificate."""
    run_id = start_db(store, BOB)
    demoted = Caller("bob", frozenset({SCOPE_READ, SCOPE_WRITE}))
    error = refused(store.issue_certificate, demoted, user_pub, run_id, ca=ca)
    assert (error.status, error.code, error.scope) == (
        403,
        ErrorCode.MISSING_SCOPE,
        SCOPE_PRODUCTION,
    )


def test_a_viewer_gets_403_naming_the_scope(store, ca, user_pub):
    error = refused(store.issue_certificate, CAROL, user_pub, ca=ca)
    assert (error.status, error.code, error.scope) == (403, ErrorCode.MISSING_SCOPE, SCOPE_WRITE)
    assert "carol may not get an SSH certificate for the fleet" in error.message


def test_an_unknown_run_is_404(store, ca, user_pub):
    assert refused(store.issue_certificate, BOB, user_pub, 999, ca=ca).status == 404
    assert refused(store.issue_certificate, BOB, user_pub, 2**40, ca=ca).status == 404


def test_an_unreadable_inventory_gives_no_certificate(store, ca, user_pub, inventory):
    inventory.broken = "no such file"
    error = refused(store.issue_certificate, ERIN, user_pub, ca=ca)
    assert (error.status, error.code) == (503, ErrorCode.UNAVAILABLE)


# --- the ledger -----------------------------------------------------------------------------------


def test_every_certificate_is_recorded(store, ca, user_pub, clock):
    plain = store.issue_certificate(ERIN, user_pub, ca=ca)
    run_id = start_db(store, BOB)
    for_run = store.issue_certificate(BOB, user_pub, run_id, ca=ca)
    rows = {row["serial"]: row for row in store.certificates()}
    assert set(rows) == {plain.serial, for_run.serial}
    erin = rows[plain.serial]
    assert erin["key_id"] == "opsbook:erin" and erin["user"] == "erin"
    assert erin["run_id"] is None
    assert erin["principals"] == ["staging"]
    assert erin["fingerprint"] == check_public_key(user_pub).fingerprint
    assert erin["issued_at"] == clock.now
    assert erin["valid_before"] == clock.now + timedelta(minutes=15)
    assert erin["valid_after"] == clock.now - timedelta(seconds=60)
    assert rows[for_run.serial]["run_id"] == run_id
    assert [r["serial"] for r in store.certificates(run_id=run_id)] == [for_run.serial]
    assert [r["serial"] for r in store.certificates(user="erin")] == [plain.serial]
    assert "certificate" not in erin  # the ledger keeps what it says, not the text


def test_a_schema_2_database_is_migrated_to_5(database_url, open_store, user_pub, ca, clock):
    """Schema 2 (before certificates): made by hand, then opened by this version."""
    engine = create_engine(database_url)
    try:
        for table in tables.metadata.sorted_tables:
            if table is not tables.certificates:
                table.create(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(tables.schema).values(version=1, created_at=clock.now.replace(tzinfo=None))
            )
            conn.execute(
                insert(tables.schema).values(version=2, created_at=clock.now.replace(tzinfo=None))
            )
        assert "certificates" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()

    store = open_store()
    assert store.schema_version() == 6
    issued = store.issue_certificate(ERIN, user_pub, ca=ca)
    assert [row["serial"] for row in store.certificates()] == [issued.serial]
    assert open_store().schema_version() == 6  # opening again changes nothing


# --- the CA key -----------------------------------------------------------------------------------


def test_the_ca_key_must_be_an_unencrypted_ed25519_or_long_rsa_key(tmp_path, ca_key):
    good = tmp_path / "user_ca"
    good.write_bytes(private_openssh(ca_key))
    loaded = CertificateAuthority.load(good, minutes=5)
    assert loaded.public_line == public_line(ca_key, "").strip()
    assert loaded.validity == timedelta(minutes=5)

    cases = {
        "missing": (None, "no such file"),
        "short": (
            private_openssh(rsa.generate_private_key(65537, 2048)),
            "an RSA key of 2048 bits is too short for the CA",
        ),
        "ecdsa": (
            private_openssh(ec.generate_private_key(ec.SECP256R1())),
            "an EC key cannot be the CA",
        ),
        "public": (public_line(ca_key).encode(), "is not an OpenSSH private key"),
    }
    if SSH_KEYGEN is not None:  # an encrypted key (cryptography needs bcrypt to write one)
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "pw", "-f", str(tmp_path / "made")],
            check=True,
        )
        cases["secret"] = ((tmp_path / "made").read_bytes(), "protected by a passphrase")
    for name, (data, says) in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(CaKeyError) as caught:
            CertificateAuthority.load(path)
        assert says in str(caught.value), name
        assert "\n" not in str(caught.value)


def write_ca(path: Path, key: Any) -> str:
    path.write_bytes(private_openssh(key))
    return str(path)


def test_the_service_refuses_to_start_without_its_ca_key(tmp_path, capsys):
    missing = tmp_path / "no" / "user_ca"
    status = service_main.main({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_SSH_CA_KEY": str(missing)})
    assert status == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"opsbook runs: RUNS_SSH_CA_KEY: no such file: {missing} (scripts/init-secrets.sh "
        "makes the user CA as secrets/ssh/user_ca; the runs service's container mounts it there)"
    ]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "an EC key cannot be the CA"),
        (lambda: rsa.generate_private_key(65537, 2048), "2048 bits is too short"),
    ],
)
def test_the_service_refuses_to_start_with_a_wrong_ca_key(tmp_path, capsys, make, says):
    path = write_ca(tmp_path / "user_ca", make())
    status = service_main.main({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_SSH_CA_KEY": path})
    assert status == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("opsbook runs: RUNS_SSH_CA_KEY: ") and says in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_the_service_refuses_to_start_with_an_unreadable_ca_key(tmp_path, capsys, ca_key):
    path = write_ca(tmp_path / "user_ca", ca_key)
    os.chmod(path, 0)
    assert service_main.main({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_SSH_CA_KEY": path}) == 1
    assert "RUNS_SSH_CA_KEY: cannot read" in capsys.readouterr().err


def test_bad_certificate_settings_are_refused_with_one_line_each(capsys):
    status = service_main.main(
        {
            "JUPYTERHUB_API_TOKEN": TOKEN,
            "RUNS_SSH_CERT_MINUTES": "0",
            "RUNS_SSH_SOURCE_ADDRESSES": "172.30.0.0/16, engineers",
            "RUNS_SSH_CA_KEY": "secrets/ssh/user_ca",
        }
    )
    assert status == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == [
        "RUNS_SSH_CA_KEY",
        "RUNS_SSH_CERT_MINUTES",
        "RUNS_SSH_SOURCE_ADDRESSES",
    ]
    assert "RUNS_SSH_CERT_MINUTES: expected a whole number from 1 to 1440, got '0'" in lines[1]


# --- over HTTP ------------------------------------------------------------------------------------

PREFIX = "/services/runs/"
USERS = {
    "bob-token": BOB,
    "erin-token": ERIN,
    "carol-token": CAROL,
}


class FakeHubIdentity:
    async def caller(self, handler: RequestHandler) -> Caller | None:
        header = handler.request.headers.get("Authorization", "")
        return USERS.get(header.removeprefix("token ").strip())

    def login_url(self, handler: RequestHandler) -> str:
        return "/hub/login"


class CertificateHttpTest(AsyncHTTPTestCase):
    @pytest.fixture(autouse=True)
    def _inventory(self, inventory) -> None:
        self.inventory = inventory

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.store = Store(
            f"sqlite:///{Path(self.tmp.name) / 'runs.sqlite'}",
            fleet=self.inventory.current,
            alertmanager=FakeAlertmanager(),
        )
        self.ca = CertificateAuthority(ed25519.Ed25519PrivateKey.generate(), minutes=15)
        self.key = public_line(ed25519.Ed25519PrivateKey.generate())
        self.ctx = Context(
            store=self.store,
            identity=FakeHubIdentity(),
            oncall=StaticOncall(["bob"]),
            notifier=Notifier(""),
            prefix=PREFIX,
            ssh_ca=self.ca,
        )
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        self.ctx.executor.shutdown()
        self.store.close()
        self.tmp.cleanup()

    def get_app(self):
        return make_app(self.ctx)

    def call(self, method: str, route: str, who: str | None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"token {who}-token"} if who else {}
        response = self.fetch(
            f"{PREFIX}{wire.API_PATH}/{route}",
            method=method,
            headers=headers,
            body=None if method == "GET" else (body if isinstance(body, str) else json.dumps(body)),
        )
        return response.code, json.loads(response.body)

    def test_routes_are_the_contracts(self):
        assert wire.ROUTE_SSH_CERTIFICATE == "ssh/certificate"
        assert wire.ROUTE_SSH_CA == "ssh/ca"

    def test_an_engineer_gets_a_certificate(self):
        request = CertificateRequest(public_key=self.key)
        status, body = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", request.to_dict())
        assert status == 200, body
        certificate = Certificate.from_dict(body)
        assert certificate.principals == ["staging"]
        assert certificate.key_id == "opsbook:erin"
        assert [row["serial"] for row in self.store.certificates()] == [certificate.serial]

    def test_the_owner_of_a_production_run_over_http(self):
        run_id = start_db(self.store, BOB)
        body = CertificateRequest(public_key=self.key, run_id=run_id).to_dict()
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "bob", body)
        assert status == 200 and "production" in answer["principals"]
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", body)
        error = ErrorReply.from_body(answer)
        assert (status, error.code) == (403, ErrorCode.MISSING_SCOPE)  # erin: no production

    def test_refusals(self):
        body = {"public_key": self.key}
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "carol", body)
        error = ErrorReply.from_body(answer)
        assert (status, error.code, error.scope) == (403, ErrorCode.MISSING_SCOPE, SCOPE_WRITE)
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, None, body)
        assert (status, ErrorReply.from_body(answer).code) == (401, ErrorCode.UNAUTHENTICATED)
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", {"public_key": "x"})
        assert (status, ErrorReply.from_body(answer).code) == (400, ErrorCode.BAD_REQUEST)
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", {})
        assert status == 400 and "public_key: missing" in answer["error"]["message"]
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", "not json")
        assert status == 400
        body = {"public_key": self.key, "run_id": "12"}
        status, answer = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", body)
        assert status == 400 and "run_id" in answer["error"]["message"]
        status, _ = self.call("GET", wire.ROUTE_SSH_CERTIFICATE, "erin")
        assert status == 405
        assert self.store.certificates() == []

    def test_the_ca_public_key_needs_no_sign_in(self):
        status, body = self.call("GET", wire.ROUTE_SSH_CA, None)
        assert status == 200
        assert SshCa.from_dict(body).user_ca == self.ca.public_line
        assert body["user_ca"].startswith("ssh-ed25519 ")

    def test_without_a_ca_the_service_says_so(self):
        self.ctx.ssh_ca = None
        status, body = self.call("GET", wire.ROUTE_SSH_CA, None)
        assert (status, ErrorReply.from_body(body).code) == (503, ErrorCode.UNAVAILABLE)
        assert "RUNS_SSH_CA_KEY" in body["error"]["message"]
        status, body = self.call("POST", wire.ROUTE_SSH_CERTIFICATE, "erin", {"public_key": "x"})
        assert status == 503
