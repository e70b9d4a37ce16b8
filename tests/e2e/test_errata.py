"""Errata per environment, on the real stack: the package repository has a suite per environment,
each host updates from its own, and promotion is the runs service's action, performed on the
repository host with a one-minute, single-command certificate; no engineer's container can change
a suite. Tested from the side of those it keeps out, reading the suites as the hosts do (HTTP).

The tests run in file order on one fleet: each starts from where the previous one left it.
"""

from __future__ import annotations

import subprocess

import pytest
import requests
import testinfra

from opsbook.contract import wire
from opsbook.errata import read_index
from opsbook.runsclient import RunsClient, RunsError

from .hubclient import runs_client, signed_in
from .stack import all_healthy, as_engineer, compose, docker, reset_fleet, service_address, wait_for

SSH_DIR = "/run/opsbook/ssh"


@pytest.fixture(scope="module", autouse=True)
def fresh_fleet(stack):
    reset_fleet()


def client_of(stack, name: str) -> RunsClient:
    return runs_client(stack, name, f"errata test {name}")


@pytest.fixture(scope="module")
def clients(stack) -> dict[str, RunsClient]:
    return {name: client_of(stack, name) for name in ("alice", "bob", "erin")}


def container_of(service: str) -> str:
    return compose("ps", "-q", service).stdout.strip()


def repo_url() -> str:
    """The package repository as the hosts read it (http://pkgrepo/debian), from this machine."""
    return f"http://{service_address('pkgrepo')}/debian"


def suite(name: str) -> dict[str, list[str]]:
    return read_index(repo_url(), name)


def refusal(call) -> RunsError:
    with pytest.raises(RunsError) as caught:
        call()
    return caught.value


def test_each_environment_has_its_suite_starting_from_the_baseline(stack):
    baseline = {
        "opsbook-demo-agent": ["2.3.0"],
        "opsbook-demo-base": ["1.0"],
        "opsbook-demo-db": ["1.0"],
        "opsbook-demo-web": ["1.0"],
    }
    assert suite("staging") == baseline
    assert suite("production") == baseline
    assert requests.get(f"{repo_url()}/dists/stable/InRelease", timeout=5).status_code == 404
    for host, environment in (("web-1", "staging"), ("db-1", "production")):
        sources = docker(
            "exec", container_of(host), "cat", "/etc/apt/sources.list.d/opsbook-demo.list"
        ).stdout
        assert f"http://pkgrepo/debian {environment} main" in sources, host


def test_a_staging_promotion_leaves_the_production_suite_unchanged(clients):
    production_before = suite("production")
    promotion = clients["erin"].promote_errata(
        "staging",
        [("opsbook-demo-base", "1.1"), ("opsbook-demo-web", "1.1")],
        reason="e2e: staging first",
    )
    assert (promotion.environment, promotion.by, promotion.run_id) == ("staging", "erin", None)
    assert sorted((e.package, e.version) for e in promotion.promoted) == [
        ("opsbook-demo-base", "1.1"),
        ("opsbook-demo-web", "1.1"),
    ]
    staging = suite("staging")
    assert staging["opsbook-demo-base"] == ["1.0", "1.1"]
    assert staging["opsbook-demo-web"] == ["1.0", "1.1"]
    assert suite("production") == production_before
    listed = clients["bob"].promotions(environment="staging").promotions
    assert [p.id for p in listed] == [promotion.id]


def test_erin_cannot_promote_into_production(clients):
    before = suite("production")
    refused = refusal(
        lambda: clients["erin"].promote_errata("production", [("opsbook-demo-db", "1.0.1")])
    )
    assert refused.reply.status == 403
    assert refused.reply.scope == "custom:runs:production"
    assert "erin may not promote errata into production" in refused.reply.message
    assert suite("production") == before


def test_on_call_cannot_promote_into_production_without_an_approved_running_run(clients):
    alice = clients["alice"]
    before = suite("production")
    without = refusal(lambda: alice.promote_errata("production", [("opsbook-demo-db", "1.0.1")]))
    assert without.reply.status == 409 and "without a run" in without.reply.message
    run = alice.create(wire.CreateRun(runbook="errata-test", stack="db"))
    try:
        assert run.state is wire.RunState.AWAITING_APPROVAL
        waiting = refusal(
            lambda: alice.promote_errata(
                "production", [("opsbook-demo-db", "1.0.1")], run_id=run.id
            )
        )
        assert waiting.reply.status == 409 and "awaiting_approval" in waiting.reply.message
        staging_run = refusal(
            lambda: clients["erin"].promote_errata(
                "staging", [("opsbook-demo-db", "1.0.1")], run_id=run.id
            )
        )
        assert "is on a stack of production, not staging" in staging_run.reply.message
    finally:
        alice.abort(run.id, "e2e: only to be refused")
    assert suite("production") == before


def test_erins_container_cannot_reach_the_repository_over_ssh(stack):
    signed_in(stack, "erin", server=True)
    container = stack.container_of("erin")

    def as_erin(*command: str) -> subprocess.CompletedProcess:
        return as_engineer(container, *command)

    renewed = as_erin(
        "python3",
        "-c",
        "from opsbook import sshcert; from opsbook.runsclient import RunsClient; "
        "print(sshcert.ensure_certificate(RunsClient.from_env(), min_seconds=10**6).principals)",
    )
    assert renewed.returncode == 0, renewed.stderr
    assert renewed.stdout.strip() == "['staging']"  # no repo, no errata-* principal
    assert (
        as_erin("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "web-1", "true").returncode
        == 0
    )
    for command in ("true", "sudo /usr/local/bin/opsbook-repo promote --suite production x 1"):
        tried = as_erin(
            "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "opsbook@pkgrepo", command
        )
        assert tried.returncode != 0
        # Refused by the host (her certificate names no principal it accepts), or not even
        # reached once engineers' containers are kept off its sshd by the network.
        assert any(
            reason in tried.stderr
            for reason in ("Permission denied", "Connection refused", "timed out", "No route")
        ), tried.stderr


def test_a_production_promotion_inside_an_approved_run_is_in_the_ledger(clients):
    alice, bob = clients["alice"], clients["bob"]
    run = alice.create(wire.CreateRun(runbook="errata-test", stack="db"))
    try:
        bob.approve(run.id, "e2e: the DBAs agree")
        alice.lease(run.id)
        promotion = alice.promote_errata(
            "production",
            [("opsbook-demo-db", "1.0.1"), ("opsbook-demo-agent", "2.3.0")],
            run_id=run.id,
            reason="e2e: production inside its run",
        )
    finally:
        alice.abort(run.id, "e2e: promotion checked")
    assert (promotion.environment, promotion.by, promotion.run_id) == (
        "production",
        "alice",
        run.id,
    )
    assert [(e.package, e.version) for e in promotion.promoted] == [("opsbook-demo-db", "1.0.1")]
    assert [(e.package, e.version) for e in promotion.unchanged] == [
        ("opsbook-demo-agent", "2.3.0")
    ]
    assert suite("production")["opsbook-demo-db"] == ["1.0", "1.0.1"]
    assert suite("staging")["opsbook-demo-db"] == ["1.0"]  # production's approval is its own
    assert clients["erin"].promotions(run_id=run.id).promotions == [promotion]
    events = [e for e in alice.events(run.id) if e.type == "errata_promoted"]
    assert len(events) == 1 and events[0].actor == "alice"
    assert events[0].data["promoted"] == [{"package": "opsbook-demo-db", "version": "1.0.1"}]
    # The repository host logged the service's one-off certificate, named for alice.
    logs = docker("logs", container_of("pkgrepo"), check=False)
    assert "ID opsbook:runs:errata:production:alice" in logs.stdout + logs.stderr


def fleet_host(service: str):
    return testinfra.get_host(f"docker://{container_of(service)}")


def test_a_staging_host_installs_from_staging_and_a_production_host_from_production():
    """After the promotions above: base 1.1 approved for staging only, db 1.0.1 for production."""
    for service in ("web-1", "db-1"):
        host = fleet_host(service)
        update = host.run("apt-get update -q 2>&1")
        assert update.rc == 0, update.stdout
        upgrade = host.run("apt-get install -y -q --only-upgrade opsbook-demo-base 2>&1")
        assert upgrade.rc == 0, upgrade.stdout
    assert fleet_host("web-1").package("opsbook-demo-base").version == "1.1"
    assert fleet_host("db-1").package("opsbook-demo-base").version == "1.0"
    db = fleet_host("db-1")
    assert db.run("apt-get install -y -q --only-upgrade opsbook-demo-db 2>&1").rc == 0
    assert db.package("opsbook-demo-db").version == "1.0.1"


def test_an_unreachable_repository_is_a_503_naming_it_and_nothing_is_recorded(clients):
    erin = clients["erin"]
    recorded = len(erin.promotions().promotions)
    compose("stop", "pkgrepo")
    try:
        down = refusal(lambda: erin.promote_errata("staging", [("opsbook-demo-agent", "2.4.0")]))
        assert down.reply.status == 503
        assert down.reply.code is wire.ErrorCode.REPOSITORY_UNREACHABLE
        assert "opsbook@pkgrepo" in down.reply.message
        assert "RUNS_PACKAGE_REPO_SSH" in down.reply.message
    finally:
        compose("start", "pkgrepo")
        wait_for(all_healthy, 120, "pkgrepo healthy again")
    assert len(erin.promotions().promotions) == recorded
    assert suite("staging")["opsbook-demo-agent"] == ["2.3.0"]
