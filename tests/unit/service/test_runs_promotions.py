"""Errata promotions: who may promote into which environment (rules.check_promotion, the store),
how the service does it on the repository host (promotions.SshPromoter, with a stand-in `ssh`
that records what it was given and answers as the host would), and its settings.

The fleet is conftest.py's inventory: web in staging (non-production), db in production.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fake_alertmanager import FakeAlertmanager
from sqlalchemy import create_engine, insert

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_READ, SCOPE_TAKEOVER, SCOPE_WRITE
from opsbook.contract.wire import ErrorCode, RunOptions, RunState
from opsbook.service import settings, tables
from opsbook.service.promotions import (
    Outcome,
    SshPromoter,
    parse_output,
    promote_command,
)
from opsbook.service.repohost import RepoHost, repo_host
from opsbook.service.rules import Caller, Refused, RunFacts, check_promotion
from opsbook.service.ssh_ca import CertificateAuthority
from opsbook.service.store import Store
from opsbook.service.tables import metadata

ONCALL = frozenset({SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER})
ALICE = Caller("alice", ONCALL)
BOB = Caller("bob", ONCALL)
ERIN = Caller("erin", frozenset({SCOPE_READ, SCOPE_WRITE}))
CAROL = Caller("carol", frozenset({SCOPE_READ}))
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PAIRS = [("opsbook-demo-db", "1.0.1")]
SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="apt-get install openssh-client")


def refused(call: Callable[..., object], *args: object, **kwargs: object) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    return caught.value


# --- the rules ------------------------------------------------------------------------------------


def production_run(**changes: object) -> RunFacts:
    facts = {
        "id": 7,
        "state": RunState.RUNNING,
        "owner": "alice",
        "production": True,
        "lease_expires_at": NOW + timedelta(seconds=30),
        "created_by": "alice",
    }
    return RunFacts(**(facts | changes))  # type: ignore[arg-type]


def check(caller: Caller, run: RunFacts | None, *, environment: str = "production") -> None:
    check_promotion(
        caller,
        environment=environment,
        production=environment == "production",
        run=run,
        run_environment=None if run is None else ("production" if run.production else "staging"),
        now=NOW,
    )


def test_staging_needs_the_write_scope_only() -> None:
    check(ERIN, None, environment="staging")
    refusal = refused(check, CAROL, None, environment="staging")
    assert (refusal.status, refusal.scope) == (403, SCOPE_WRITE)
    assert "carol may not promote errata into staging" in refusal.message


@pytest.mark.parametrize(
    ("caller", "run", "status", "words"),
    [
        (ERIN, production_run(), 403, "needs the JupyterHub scope custom:runs:production"),
        (ALICE, None, 409, "without a run: production is production"),
        (BOB, production_run(), 409, "owned by alice, not by you (bob)"),
        (ALICE, production_run(state=RunState.AWAITING_APPROVAL), 409, "awaiting_approval"),
        (ALICE, production_run(state=RunState.ORPHANED), 409, "your lease ran out"),
        (ALICE, production_run(lease_expires_at=NOW), 409, "your lease ran out"),
        (ALICE, production_run(state=RunState.PAUSED), 409, "paused, not running"),
        (ALICE, production_run(state=RunState.COMPLETED), 409, "already completed"),
        (ALICE, production_run(production=False), 409, "on a stack of staging, not production"),
    ],
    ids=[
        "ops-engineer",
        "no-run",
        "not-owner",
        "awaiting-approval",
        "orphaned",
        "lease-ran-out",
        "paused",
        "finished",
        "other-environment",
    ],
)
def test_production_only_inside_an_approved_running_run_by_its_owner(
    caller: Caller, run: RunFacts | None, status: int, words: str
) -> None:
    refusal = refused(check, caller, run)
    assert refusal.status == status and words in refusal.message, refusal.message


def test_the_owner_of_the_approved_running_run_may() -> None:
    check(ALICE, production_run())


# --- the store: the inventory decides the environment, the ledger records ------------------------


@pytest.fixture
def store(tmp_path: Path, inventory) -> Iterator[Store]:
    opened = Store(
        f"sqlite:///{tmp_path / 'runs.sqlite'}",
        fleet=inventory.current,
        alertmanager=FakeAlertmanager(),
        now=lambda: NOW,
    )
    yield opened
    opened.close()


def test_the_store_decides_what_is_production(store: Store, inventory) -> None:
    store.check_promotion(ERIN, "staging", PAIRS, None)
    assert "production" in refused(store.check_promotion, ERIN, "production", PAIRS, None).message
    unknown = refused(store.check_promotion, ERIN, "qa", PAIRS, None)
    assert unknown.status == 400 and "its environments: production, staging" in unknown.message
    inventory.nonproduction = frozenset()  # nothing declared: staging is production too
    assert refused(store.check_promotion, ERIN, "staging", PAIRS, None).status == 403
    assert refused(store.check_promotion, ALICE, "staging", PAIRS, 99).status == 404


def test_a_promotion_is_recorded_with_its_versions_and_as_the_run_s_event(store: Store) -> None:
    run = store.create_run(ALICE, runbook="patching", stack="db", options=RunOptions())
    store.approve(run.id, BOB, "CHG-1")
    store.check_promotion(ALICE, "production", PAIRS, run.id)
    outcome = Outcome(promoted=tuple(PAIRS), unchanged=(("opsbook-demo-agent", "2.3.1"),))
    promotion = store.record_promotion(
        ALICE, "production", outcome, run_id=run.id, reason="patching on db"
    )
    assert (promotion.environment, promotion.by, promotion.run_id) == ("production", "alice", 1)
    assert [(e.package, e.version) for e in promotion.promoted] == PAIRS
    assert [(e.package, e.version) for e in promotion.unchanged] == [
        ("opsbook-demo-agent", "2.3.1")
    ]
    assert promotion.reason == "patching on db" and promotion.at.startswith("2026-11-29T12:00")
    (event,) = [e for e in store.last_events(run.id, 10) if e.type == "errata_promoted"]
    assert event.actor == "alice" and event.data["promotion"] == promotion.id
    assert event.message == (
        "errata promoted into production: opsbook-demo-db=1.0.1 "
        "(already there: opsbook-demo-agent=2.3.1)"
    )
    assert store.promotions(environment="staging") == []
    assert store.promotions(run_id=run.id) == [promotion]


def test_a_schema_4_database_gets_the_promotions_table(tmp_path: Path, inventory) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    try:
        for table in metadata.sorted_tables:
            if table not in (tables.promotions, tables.silences):
                table.create(engine)
        with engine.begin() as conn:
            for version in (1, 2, 3, 4):
                conn.execute(
                    insert(tables.schema).values(version=version, created_at=datetime.now())
                )
    finally:
        engine.dispose()
    store = Store(url, fleet=inventory.current, alertmanager=FakeAlertmanager())
    try:
        assert store.schema_version() == tables.SCHEMA_VERSION
        store.record_promotion(ERIN, "staging", Outcome(tuple(PAIRS), ()))
        assert len(store.promotions()) == 1
    finally:
        store.close()


# --- on the repository host: the forced command, and what ssh is given ---------------------------


def test_the_forced_command_is_exactly_the_promotion() -> None:
    assert promote_command("staging", [("opsbook-demo-base", "1.1"), ("libc6", "1:2.36~rc1")]) == (
        "sudo /usr/local/bin/opsbook-repo promote --suite staging opsbook-demo-base 1.1 libc6 "
        "'1:2.36~rc1'"
    )


def test_the_repository_s_answer_must_match_what_was_asked() -> None:
    out = "promoted a 1 to staging\nunchanged b 2: already in staging\n"
    assert parse_output(out, "staging", [("a", "1"), ("b", "2")]) == Outcome(
        promoted=(("a", "1"),), unchanged=(("b", "2"),)
    )
    with pytest.raises(ValueError, match="unexpected answer"):
        parse_output(out.replace("staging", "production"), "staging", [("a", "1"), ("b", "2")])
    with pytest.raises(ValueError, match="unexpected answer"):
        parse_output("promoted a 1 to staging\n", "staging", [("a", "1"), ("b", "2")])


FAKE_SSH = """#!/bin/sh
# A stand-in for ssh: keeps its arguments and the certificate it was given, answers as told.
printf '%s\\n' "$@" >"{folder}/argv"
for word in "$@"; do
  case $word in
    CertificateFile=*) cp "${{word#CertificateFile=}}" "{folder}/cert.pub" ;;
    UserKnownHostsFile=*) cp "${{word#UserKnownHostsFile=}}" "{folder}/known_hosts" ;;
  esac
done
cat "{folder}/stdout"
cat "{folder}/stderr" >&2
exit $(cat "{folder}/status")
"""


class FakeSsh:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "ssh"
        self.path.write_text(FAKE_SSH.format(folder=folder))
        self.path.chmod(0o755)
        self.answer()

    def answer(self, status: int = 0, stdout: str = "", stderr: str = "") -> None:
        (self.folder / "status").write_text(str(status))
        (self.folder / "stdout").write_text(stdout)
        (self.folder / "stderr").write_text(stderr)

    @property
    def argv(self) -> list[str]:
        return (self.folder / "argv").read_text().splitlines()


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture
def fake_ssh(tmp_path: Path) -> FakeSsh:
    return FakeSsh(tmp_path)


HOST_CA = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    .decode()
)


def promoter(ca: CertificateAuthority, fake_ssh: FakeSsh) -> SshPromoter:
    return SshPromoter(ca, RepoHost("opsbook", "pkgrepo"), HOST_CA, ssh=str(fake_ssh.path))


@needs_ssh_keygen
def test_the_certificate_can_do_that_promotion_and_nothing_else(
    ca: CertificateAuthority, fake_ssh: FakeSsh, tmp_path: Path
) -> None:
    fake_ssh.answer(stdout="promoted opsbook-demo-db 1.0.1 to production\n")
    outcome = promoter(ca, fake_ssh).promote("production", PAIRS, by="alice")
    assert outcome == Outcome(promoted=tuple(PAIRS), unchanged=())
    listing = subprocess.run(
        [SSH_KEYGEN, "-L", "-f", str(tmp_path / "cert.pub")], capture_output=True, text=True
    ).stdout
    assert "Principals: \n                errata-production\n" in listing
    assert (
        "force-command sudo /usr/local/bin/opsbook-repo promote --suite production "
        "opsbook-demo-db 1.0.1" in listing
    )
    assert "Extensions: (none)" in listing  # no pty, no forwarding
    assert 'Key ID: "opsbook:runs:errata:production:alice"' in listing
    valid = listing.split("Valid: from ")[1].split("\n")[0].split(" to ")
    span = datetime.fromisoformat(valid[1]) - datetime.fromisoformat(valid[0])
    assert span <= timedelta(minutes=2)  # a minute of clock skew, a minute of use
    assert (tmp_path / "known_hosts").read_text() == f"@cert-authority pkgrepo {HOST_CA}\n"
    argv = fake_ssh.argv
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert (
        argv[-3:] == ["opsbook", "pkgrepo", "promote"] and argv[argv.index("-F") + 1] == "/dev/null"
    )


def test_an_unreachable_host_is_503_and_a_refusal_502_naming_it(
    ca: CertificateAuthority, fake_ssh: FakeSsh
) -> None:
    fake_ssh.answer(255, stderr="ssh: connect to host pkgrepo port 22: Connection refused\n")
    down = refused(promoter(ca, fake_ssh).promote, "staging", PAIRS, by="erin")
    assert (down.status, down.code) == (503, ErrorCode.REPOSITORY_UNREACHABLE)
    assert "opsbook@pkgrepo" in down.message and "Connection refused" in down.message
    assert "nothing was promoted" in down.message
    fake_ssh.answer(2, stderr="opsbook-repo: opsbook-demo-db has no version '9' in incoming\n")
    no = refused(promoter(ca, fake_ssh).promote, "staging", PAIRS, by="erin")
    assert (no.status, no.code) == (502, ErrorCode.REPOSITORY_FAILED)
    assert "has no version '9' in incoming" in no.message
    fake_ssh.answer(0, stdout="something else\n")
    odd = refused(promoter(ca, fake_ssh).promote, "staging", PAIRS, by="erin")
    assert odd.status == 502 and "does not match" in odd.message
    missing = SshPromoter(ca, RepoHost("opsbook", "pkgrepo"), HOST_CA, ssh="/nonexistent/ssh")
    assert refused(missing.promote, "staging", PAIRS, by="erin").status == 503


def test_names_that_could_not_be_a_package_never_reach_the_host(
    ca: CertificateAuthority, fake_ssh: FakeSsh
) -> None:
    for environment, pairs in [
        ("staging", [("opsbook-demo-db", "1.0; reboot")]),
        ("staging", [("$(id)", "1.0")]),
        ("Staging Prod", PAIRS),
        ("staging", []),
    ]:
        assert refused(promoter(ca, fake_ssh).promote, environment, pairs, by="x").status == 400
    assert not (fake_ssh.folder / "argv").exists()


# --- settings -------------------------------------------------------------------------------------


def test_the_repository_host_setting() -> None:
    assert repo_host("opsbook@pkgrepo") == RepoHost("opsbook", "pkgrepo", 22)
    assert str(repo_host("opsbook@repo.example.com:2222")) == "opsbook@repo.example.com:2222"
    assert repo_host("") is None
    for bad in ("pkgrepo", "opsbook@", "opsbook@pkgrepo:0", "op sbook@pkgrepo", "a@b;c"):
        with pytest.raises(ValueError, match="user@host"):
            repo_host(bad)


def test_a_repository_host_needs_the_host_ca() -> None:
    base = {"JUPYTERHUB_API_TOKEN": "x" * 16}
    assert settings.load(base)["RUNS_PACKAGE_REPO_SSH"] is None
    with pytest.raises(settings.SettingsError, match="RUNS_SSH_HOST_CA: required"):
        settings.load(base | {"RUNS_PACKAGE_REPO_SSH": "opsbook@pkgrepo"})
    with pytest.raises(settings.SettingsError, match="RUNS_SSH_HOST_CA: expected one OpenSSH"):
        settings.load(base | {"RUNS_SSH_HOST_CA": "ssh-ed25519 AAAA"})
    loaded = settings.load(
        base | {"RUNS_PACKAGE_REPO_SSH": "opsbook@pkgrepo", "RUNS_SSH_HOST_CA": f"{HOST_CA} ca"}
    )
    assert loaded["RUNS_SSH_HOST_CA"] == HOST_CA
