"""Errata: Packages indexes served over HTTP, installed versions from package_facts events."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from opsbook_fakes import FakeServer, Request
from opsbook_fleet import FakeFleet, demo_fleet
from opsbook_runs_service import Service, approved

from opsbook.errata import (
    Erratum,
    choose,
    installed_versions,
    list_errata,
    not_applied,
    parse_packages,
    read_index,
)
from opsbook.errors import ErrataError, OpsbookError
from opsbook.plays import PlayResult
from opsbook.runs import RunSession, run_options
from opsbook.runsclient import RunsClient, RunsError

DATA = Path(__file__).parent / "data"
Events = list[dict[str, Any]]

# Bookworm's versions of the recorded packages (data/package-facts-events.json) and newer ones.
INCOMING = b"""\
Package: libc6
Version: 2.36-9+deb12u14
Architecture: amd64
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: libc6
Version: 2.36-9+deb12u15
Architecture: amd64
Description: GNU C Library: Shared libraries (security update)
 Fixes CVE-2026-0001.

Package: libc6
Version: 2.36-9+deb12u9
Architecture: amd64
Description: GNU C Library: Shared libraries

Package: diffutils
Version: 1:3.10-1
Architecture: amd64
Opsbook-Severity: bugfix
Opsbook-Advisory: OPSB-2026-0001
Opsbook-Reboot: no
Description: File comparison utilities

Package: bsdutils
Version: 2.40-1
Architecture: amd64
Description: basic utilities from 4.4BSD-Lite (no epoch: older than 1:2.38)

Package: nginx
Version: 1.26.0-1
Architecture: amd64
Description: not installed on the stack: no erratum
"""
STABLE = b"""\
Package: libc6
Version: 2.36-9+deb12u15
Architecture: amd64
Description: GNU C Library: Shared libraries (security update)
"""


def repository(suites: dict[str, bytes]) -> Any:
    """A responder serving each suite's Packages index, 404 for anything else."""

    def respond(request: Request) -> tuple[int, Any]:
        for suite, text in suites.items():
            if request.path == f"/debian/dists/{suite}/main/binary-amd64/Packages":
                return 200, text
        return 404, b"Not Found\n"

    return respond


@pytest.fixture
def repo(fake_server: FakeServer) -> str:
    # staging approved the libc6 update; production approved nothing yet
    fake_server.responder = repository({"incoming": INCOMING, "staging": STABLE, "production": b""})
    return f"{fake_server.url}/debian"


@pytest.fixture(scope="module")
def facts_events() -> Events:
    """package_facts run for real on two hosts (see data/record_package_facts.py)."""
    return json.loads((DATA / "package-facts-events.json").read_text())


# the Packages format


def test_parse_packages_reads_stanzas_and_continuations() -> None:
    stanzas = parse_packages(INCOMING.decode())
    assert [(s["Package"], s["Version"]) for s in stanzas][:2] == [
        ("libc6", "2.36-9+deb12u14"),
        ("libc6", "2.36-9+deb12u15"),
    ]
    assert stanzas[0]["Description"] == (
        "GNU C Library: Shared libraries\nContains the standard libraries that are used by "
        "nearly all programs on\nthe system."
    )
    assert len(stanzas) == 6
    assert stanzas[3]["Opsbook-Advisory"] == "OPSB-2026-0001"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Package: a\nVersion 1.0\n", "line 2: expected 'Field: value', got 'Version 1.0'"),
        (" continued\n", "line 1: continuation line without a field"),
        ("Package: a\n\nPackage: b\nVersion: 1\n", "entry at line 1 has no Version"),
        ("Version: 1\n", "entry at line 1 has no Package"),
        ("Package: a\nVersion: 1.0 beta\n", "entry at line 1: version '1.0 beta'"),
    ],
)
def test_malformed_indexes_are_refused(text: str, message: str) -> None:
    with pytest.raises(ErrataError, match=message):
        parse_packages(text, source="Packages")


# reading a suite over HTTP


def test_read_index_gives_versions_per_package_in_dpkg_order(repo: str) -> None:
    assert read_index(repo, "incoming") == {
        "bsdutils": ["2.40-1"],
        "diffutils": ["1:3.10-1"],
        "libc6": ["2.36-9+deb12u9", "2.36-9+deb12u14", "2.36-9+deb12u15"],  # u9 < u14
        "nginx": ["1.26.0-1"],
    }
    assert read_index(repo, "staging") == {"libc6": ["2.36-9+deb12u15"]}


def test_read_index_asks_the_debian_path(fake_server: FakeServer, repo: str) -> None:
    read_index(repo + "/", "staging")
    assert fake_server.requests[-1].path == "/debian/dists/staging/main/binary-amd64/Packages"


def test_unknown_suite_says_what_was_expected(repo: str) -> None:
    with pytest.raises(ErrataError, match=r"no suite 'testing' at .*/debian \(HTTP 404"):
        read_index(repo, "testing")


def test_repository_errors_are_explained(fake_server: FakeServer, closed_port_url: str) -> None:
    fake_server.responder = lambda request: (503, b"busy")
    with pytest.raises(ErrataError, match="answered HTTP 503 for http://"):
        read_index(fake_server.url, "incoming")
    with pytest.raises(ErrataError, match="package repository is unreachable at http://127"):
        read_index(closed_port_url, "incoming")
    with pytest.raises(ErrataError, match="repository URL 'pkgrepo/debian' is invalid"):
        read_index("pkgrepo/debian", "incoming")


def test_slow_repository_times_out(fake_server: FakeServer) -> None:
    def slow(request: Request) -> tuple[int, Any]:
        time.sleep(1)
        return 200, STABLE

    fake_server.responder = slow
    started = time.monotonic()
    with pytest.raises(ErrataError, match=r"did not answer .* in 0.2 s"):
        read_index(fake_server.url, "staging", timeout=0.2)
    assert time.monotonic() - started < 1


# installed versions


def test_installed_versions_from_recorded_package_facts(facts_events: Events) -> None:
    expected = {
        "bsdutils": "1:2.38.1-5+deb12u3",
        "diffutils": "1:3.8-4",
        "dpkg": "1.21.22",
        "libc6": "2.36-9+deb12u14",
    }
    assert installed_versions(facts_events) == {"web-1": expected, "web-2": expected}


def test_installed_versions_reads_a_play_result(facts_events: Events) -> None:
    play = PlayResult("successful", 0, {}, facts_events, Path("/x"), Path("/x/a"), "")
    assert installed_versions(play) == installed_versions(facts_events)


def test_several_architectures_count_the_highest(facts_events: Events) -> None:
    events = copy.deepcopy(facts_events)
    ok = next(e for e in events if e["event"] == "runner_on_ok")
    packages = ok["event_data"]["res"]["ansible_facts"]["packages"]
    packages["libc6"] = [
        {**packages["libc6"][0], "arch": "i386", "version": "2.36-9+deb12u9"},
        packages["libc6"][0],
    ]
    assert installed_versions(events)[ok["event_data"]["host"]]["libc6"] == "2.36-9+deb12u14"


def test_hosts_without_facts_are_absent(facts_events: Events) -> None:
    without_web_2 = [e for e in facts_events if e["event_data"].get("host") != "web-2"]
    assert list(installed_versions(without_web_2)) == ["web-1"]
    assert installed_versions([{"event": "runner_on_ok", "event_data": {"host": "x"}}]) == {}


# errata


def test_errata_are_newer_incoming_versions_of_installed_packages(
    repo: str, facts_events: Events
) -> None:
    installed = installed_versions(facts_events)
    installed["web-2"]["libc6"] = "2.36-9+deb12u15"  # web-2 has the update already
    assert list_errata(repo, installed, ["web-1", "web-2"], environment="staging") == [
        Erratum("diffutils", "1:3.10-1", {"web-1": "1:3.8-4", "web-2": "1:3.8-4"}, False),
        Erratum("libc6", "2.36-9+deb12u15", {"web-1": "2.36-9+deb12u14"}, True),
    ]
    # bsdutils 2.40-1 has no epoch: older than the installed 1:2.38; nginx is not installed


def test_errata_carry_what_the_index_says_of_them(repo: str, facts_events: Events) -> None:
    diffutils, libc = list_errata(
        repo, installed_versions(facts_events), ["web-1"], environment="staging"
    )
    assert libc.description == "GNU C Library: Shared libraries (security update)"
    assert libc.spec == "libc6=2.36-9+deb12u15"
    assert (libc.severity, libc.advisory, libc.needs_reboot) == ("", "", False)
    assert (diffutils.severity, diffutils.advisory) == ("bugfix", "OPSB-2026-0001")


def test_only_the_given_hosts_count(repo: str, facts_events: Events) -> None:
    installed = installed_versions(facts_events)
    installed["web-2"] = {"nginx": "1.22.1-9"}
    errata = list_errata(repo, installed, ["web-2"], environment="staging")
    assert [(e.package, e.hosts_affected) for e in errata] == [("nginx", {"web-2": "1.22.1-9"})]


def test_a_host_without_known_packages_is_an_error(repo: str, facts_events: Events) -> None:
    with pytest.raises(ErrataError, match=r"installed packages of web-3 are not known"):
        list_errata(
            repo, installed_versions(facts_events), ["web-1", "web-3"], environment="staging"
        )
    with pytest.raises(ErrataError, match="no hosts given"):
        list_errata(repo, {}, [], environment="staging")


def test_approved_means_in_the_suite_of_the_stack_s_environment(
    repo: str, facts_events: Events
) -> None:
    installed = installed_versions(facts_events)
    staging = list_errata(repo, installed, ["web-1"], environment="staging")
    production = list_errata(repo, installed, ["web-1"], environment="production")
    assert [(e.spec, e.approved) for e in staging] == [
        ("diffutils=1:3.10-1", False),
        ("libc6=2.36-9+deb12u15", True),
    ]
    assert [(e.spec, e.approved) for e in production] == [
        ("diffutils=1:3.10-1", False),
        ("libc6=2.36-9+deb12u15", False),  # approved for staging is not approved for production
    ]
    with pytest.raises(ErrataError, match=r"no suite 'qa'.*OPSBOOK_REPO_SUITES"):
        list_errata(repo, installed, ["web-1"], environment="qa")
    with pytest.raises(ErrataError, match="expected the stack's environment"):
        list_errata(repo, installed, ["web-1"], environment="incoming")


# choosing and checking


ERRATA = [
    Erratum("opsbook-demo-agent", "2.3.1", {"web-1": "2.3.0"}, True),
    Erratum("opsbook-demo-agent", "2.4.0", {"web-1": "2.3.0"}, False),
    Erratum("opsbook-demo-base", "1.1", {"web-1": "1.0", "web-2": "1.0"}, False),
]


@pytest.mark.parametrize(
    ("approve", "expected"),
    [
        ("all", ERRATA),
        (" ALL ", ERRATA),
        ("none", []),
        ("", []),
        (None, []),
        ([], []),
        (["opsbook-demo-base=1.1"], [ERRATA[2]]),
        ("opsbook-demo-base=1.1, opsbook-demo-agent=2.4.0", ERRATA[1:]),  # in list order
    ],
)
def test_choose(approve: Any, expected: list[Erratum]) -> None:
    assert choose(ERRATA, approve) == expected


def test_choosing_what_is_not_there_is_an_error() -> None:
    with pytest.raises(ErrataError, match=r"'opsbook-demo-base=1.2' not among this stack's errata"):
        choose(ERRATA, ["opsbook-demo-base=1.2"])
    with pytest.raises(ErrataError, match=r"cannot read 'opsbook-demo-base'; expected"):
        choose(ERRATA, "opsbook-demo-base")


def test_not_applied_lists_hosts_still_behind() -> None:
    installed = {
        "web-1": {"opsbook-demo-agent": "2.4.0", "opsbook-demo-base": "1.1"},
        "web-2": {"opsbook-demo-base": "1.0"},
    }
    assert not_applied(ERRATA, installed) == [
        "web-2: opsbook-demo-base is 1.0, expected 1.1 or newer"
    ]
    assert not_applied(ERRATA, {"web-1": {}}) == [
        "web-1: opsbook-demo-agent is not installed, expected 2.3.1 or newer",
        "web-1: opsbook-demo-agent is not installed, expected 2.4.0 or newer",
        "web-1: opsbook-demo-base is not installed, expected 1.1 or newer",
        "web-2: opsbook-demo-base: installed version unknown",
    ]
    assert not_applied(ERRATA, installed, hosts=["web-1"]) == []


# promoting: an action of the runs service, inside the run (its promoter: the fake repository)


@pytest.fixture
def fleet(fake_server: FakeServer, runs_service: Service) -> FakeFleet:
    fake = demo_fleet()
    fake_server.responder = fake
    runs_service.repository = fake
    return fake


def as_user(service: Service, who: str) -> RunsClient:
    return RunsClient(service.url, f"{who}-token", retry_for=10)


WANTED = [
    Erratum("opsbook-demo-base", "1.1", {"web-1": "1.0"}, False),
    Erratum("opsbook-demo-agent", "2.4.0", {"web-1": "2.3.0"}, False),
]


def test_a_staging_promotion_inside_the_run_leaves_production_unchanged(
    fleet: FakeFleet, runs_service: Service
) -> None:
    production_before = set(fleet.suites["production"])
    session = RunSession.start(as_user(runs_service, "erin"), runbook="patching", stack="web")
    promotion = session.promote(WANTED)
    assert (promotion.environment, promotion.by, promotion.run_id) == ("staging", "erin", 1)
    assert {("opsbook-demo-base", "1.1"), ("opsbook-demo-agent", "2.4.0")} <= fleet.suites[
        "staging"
    ]
    assert fleet.suites["production"] == production_before
    assert fleet.log == ["promote staging opsbook-demo-agent=2.4.0 opsbook-demo-base=1.1"]
    again = session.promote(WANTED[:1])  # idempotent: the ledger says it was there already
    assert again.promoted == [] and [e.version for e in again.unchanged] == ["1.1"]
    events = [e for e in session.client.events(1) if e.type == "errata_promoted"]
    assert [e.data["environment"] for e in events] == ["staging", "staging"]
    assert events[0].message == (
        "errata promoted into staging: opsbook-demo-base=1.1, opsbook-demo-agent=2.4.0"
    )
    listed = as_user(runs_service, "carol").promotions(environment="staging").promotions
    assert [p.id for p in listed] == [again.id, promotion.id]  # newest first, readable by all


def test_production_needs_an_approved_run_of_its_owner(
    fleet: FakeFleet, runs_service: Service
) -> None:
    erin, alice, bob = (as_user(runs_service, who) for who in ("erin", "alice", "bob"))
    pairs = [("opsbook-demo-db", "1.0.1")]
    with pytest.raises(RunsError, match="needs the JupyterHub scope custom:runs:production"):
        erin.promote_errata("production", pairs)
    with pytest.raises(RunsError, match="without a run: production is production"):
        alice.promote_errata("production", pairs)
    session = RunSession.start(alice, runbook="patching", stack="db")
    with pytest.raises(OpsbookError, match="awaits approval: no promotion"):
        session.promote(WANTED)
    with pytest.raises(RunsError, match="awaiting_approval"):  # the service says the same
        alice.promote_errata("production", pairs, run_id=session.run.id)
    approved(session, runs_service)
    with pytest.raises(RunsError, match="owned by alice, not by you \\(bob\\)"):
        bob.promote_errata("production", pairs, run_id=session.run.id)
    with pytest.raises(RunsError, match="is on a stack of production, not staging"):
        alice.promote_errata("staging", pairs, run_id=session.run.id)
    assert fleet.log == []  # nothing reached the repository
    promotion = alice.promote_errata("production", pairs, run_id=session.run.id)
    assert [(e.package, e.version) for e in promotion.promoted] == pairs
    assert ("opsbook-demo-db", "1.0.1") in fleet.suites["production"]
    assert ("opsbook-demo-db", "1.0.1") not in fleet.suites["staging"]


def test_nothing_is_recorded_when_the_repository_fails(
    fleet: FakeFleet, runs_service: Service
) -> None:
    alice = as_user(runs_service, "alice")
    with pytest.raises(RunsError, match="not in incoming") as failed:
        alice.promote_errata("staging", [("opsbook-demo-base", "9.9")])
    assert failed.value.reply.status == 502
    runs_service.repository = None
    with pytest.raises(RunsError, match="no package repository") as unreachable:
        alice.promote_errata("staging", [("opsbook-demo-base", "1.1")])
    assert unreachable.value.reply.status == 503
    with pytest.raises(RunsError, match="no environment 'qa' in the inventory"):
        alice.promote_errata("qa", [("opsbook-demo-base", "1.1")])
    with pytest.raises(RunsError, match="is not a Debian version"):
        alice.promote_errata("staging", [("opsbook-demo-base", "1.1; reboot")])
    assert alice.promotions().promotions == []


def test_a_dry_run_promotes_nothing(fleet: FakeFleet, runs_service: Service) -> None:
    session = RunSession.start(
        as_user(runs_service, "alice"),
        runbook="patching",
        stack="web",
        options=run_options(check_mode=True),
    )
    with pytest.raises(OpsbookError, match="dry run"):
        session.promote(WANTED)
    assert fleet.log == []
