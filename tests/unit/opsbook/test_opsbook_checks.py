"""Pre-checks and post-checks (opsbook.checks): the problems that stop a run, without a kernel.

The problems are worked out from play and gate results built here; one test of each runs the test
fleet's check.yml for real (ansible-runner) against the fake fleet's services on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opsbook_fakes import FakeServer
from opsbook_fleet import FLEET_DIR, FLEET_URL_VARIABLE, FakeFleet, demo_fleet, fleet_settings

from opsbook import checks, health
from opsbook.checks import ChecksFailed, PreChecks
from opsbook.errata import Erratum
from opsbook.health import CheckResult, GateResult
from opsbook.inventory import Inventory
from opsbook.plays import HostResult, PlayResult

INVENTORY = FLEET_DIR / "inventories" / "demo"
HOSTS = ("web-1", "web-2", "web-3")


def play(status: str = "successful", **states: str) -> PlayResult:
    """check.yml's result: every host ok but those in `states` (failed, unreachable, missing)."""
    results = {}
    for host in HOSTS:
        state = states.get(host, "ok")
        if state == "missing":
            continue
        results[host] = HostResult(
            host,
            ok=3,
            changed=0,
            failed=int(state == "failed"),
            unreachable=int(state == "unreachable"),
            skipped=0,
            failed_task="Check free space" if state != "ok" else None,
            message="/ is 97% full" if state != "ok" else None,
        )
    record = Path("/runs/check-1")
    return PlayResult(status, 0, results, [], record, record / "artifacts", "")


def gate(*failing: str) -> GateResult:
    return GateResult(
        tuple(
            CheckResult(host, "load", host not in failing, 3.0 if host in failing else 0.2, "m")
            for host in HOSTS
        )
    )


def test_pre_checks_pass_when_every_host_passes_check_yml_and_the_gate() -> None:
    found = PreChecks("web", HOSTS, play(), gate())
    assert found.passed and found.problems == []
    assert found.report().endswith("pre-checks passed: 3 hosts")
    found.raise_if_failed()


def test_pre_check_problems_name_each_host_and_the_record() -> None:
    found = PreChecks(
        "web", HOSTS, play("failed", **{"web-1": "failed", "web-3": "missing"}), gate()
    )
    assert found.problems == [
        "web-1: failed at 'Check free space': / is 97% full",
        "web-3: no result",
    ]
    assert not found.passed
    assert "pre-checks of web FAILED:\n  web-1: failed" in found.report()
    with pytest.raises(ChecksFailed) as raised:
        found.raise_if_failed()
    assert str(raised.value).startswith(
        "pre-checks of web failed; fix this before patching (check.yml: failed, record: "
        "/runs/check-1):\nweb-1: failed at 'Check free space'"
    )


def test_an_unhealthy_stack_stops_the_run_unless_told_otherwise() -> None:
    strict = PreChecks("web", HOSTS, play(), gate("web-2"))
    assert strict.problems == [gate("web-2").summary()]
    with pytest.raises(ChecksFailed, match="web-2: load: m"):
        strict.raise_if_failed()
    lenient = PreChecks("web", HOSTS, play(), gate("web-2"), require_healthy=False)
    assert lenient.passed
    assert "going on all the same (require_healthy_stack=False)" in lenient.report()
    lenient.raise_if_failed()
    unclear = PreChecks("web", HOSTS, play("canceled"), gate())
    assert not unclear.passed and "check.yml: canceled" in unclear.report()


def test_post_check_problems_include_approved_versions_not_installed() -> None:
    base = Erratum("opsbook-demo-base", "1.1", {h: "1.0" for h in HOSTS}, approved=True)
    events = [
        {
            "event": "runner_on_ok",
            "event_data": {
                "host": host,
                "res": {"ansible_facts": {"packages": {"opsbook-demo-base": [{"version": v}]}}},
            },
        }
        for host, v in (("web-1", "1.1"), ("web-2", "1.0"), ("web-3", "1.0"))
    ]
    checked = play(**{"web-3": "unreachable"})
    checked = PlayResult(
        checked.status, 0, checked.hosts, events, checked.private_data_dir, Path("/a"), ""
    )
    problems = checks.post_check_problems(
        checked, HOSTS, approved=[base], patched=["web-1", "web-2"]
    )
    assert problems == [
        "web-3: unreachable at 'Check free space': / is 97% full",
        "web-2: opsbook-demo-base is 1.0, expected 1.1 or newer",
    ]
    dry = checks.post_check_problems(
        checked, HOSTS, approved=[base], patched=HOSTS, check_mode=True
    )
    assert dry == ["web-3: unreachable at 'Check free space': / is 97% full"]
    result = checks.PostChecks("web", checked, tuple(problems))
    assert result.report().startswith("post-checks: web-3: unreachable")
    with pytest.raises(ChecksFailed, match="post-checks of web failed"):
        result.raise_if_failed()
    assert checks.PostChecks("web", checked, ()).report() == "post-checks: passed"


# check.yml for real


@pytest.fixture
def fleet(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeFleet:
    fake = demo_fleet()
    fake_server.responder = fake
    monkeypatch.setenv(FLEET_URL_VARIABLE, fake_server.url)
    return fake


def test_pre_and_post_checks_run_check_yml_and_ask_the_gate(
    fake_server: FakeServer, fleet: FakeFleet, tmp_path: Path
) -> None:
    settings = fleet_settings(fake_server.url, tmp_path / "runs")
    inventory = Inventory.load(INVENTORY)
    fleet.load["web-2:9100"] = 3.0
    seen: list[str] = []
    found = checks.pre_checks(
        settings,
        inventory,
        "web",
        HOSTS,
        health.gate_checks(max_load_per_cpu=1.0),
        on_event=lambda event: seen.append(event["event"]),
    )
    assert found.play.status == "successful" and set(found.play.hosts) == set(HOSTS)
    assert not found.health.passed and not found.passed
    assert [line.split(":")[0] for line in found.problems[0].splitlines()[1:]] == ["  web-2"]
    assert "playbook_on_stats" in seen
    after = checks.post_checks(settings, inventory, "web", HOSTS, patched=HOSTS)
    assert after.passed, after.problems
