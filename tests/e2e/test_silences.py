"""Silences through the runs service, on the real stack: the real service and the real Alertmanager.

The runs service silences exactly a batch's hosts in Alertmanager when the batch starts and
expires the silence when the batch ends, when the run's lease runs out and when it is taken
over (engineers' containers are not told where Alertmanager is: tests/unit/hub/test_configure.py
and test_helm_parity.py). The runs API is driven as an engineer's kernel drives it (RunsClient,
with the engineer's own hub token); Alertmanager is asked directly, from this machine, what it
silences. The test stack's leases last 10 s
(RUNS_LEASE_SECONDS), so "stop renewing" orphans a run within seconds.
"""

from __future__ import annotations

import re

import pytest
import requests

from opsbook.contract import wire
from opsbook.runsclient import LedgerUnavailable, RunsClient

from .hubclient import runs_client
from .stack import compose, docker, wait_for

FLEET = [f"{host}:9100" for host in ("web-1", "web-2", "web-3", "db-1", "db-2", "db-3")]


def service_ip(service: str) -> str:
    container = compose("ps", "-q", service).stdout.strip()
    return docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()


def alertmanager_silences() -> list[dict]:
    url = f"http://{service_ip('alertmanager')}:9093/api/v2/silences"
    return requests.get(url, timeout=5).json()


def silenced_now() -> dict[str, set[str]]:
    """Each active silence's ID -> the fleet's instances its matchers cover (anchored regex)."""
    active = {}
    for silence in alertmanager_silences():
        if silence["status"]["state"] != "active":
            continue
        covered = set(FLEET)
        for matcher in silence["matchers"]:
            if matcher["name"] != "instance":
                continue
            value = matcher["value"]
            covered &= {
                i for i in FLEET if (re.fullmatch(value, i) if matcher["isRegex"] else i == value)
            }
        active[silence["id"]] = covered
    return active


def state_of(silence_id: str) -> str:
    (found,) = [s for s in alertmanager_silences() if s["id"] == silence_id]
    return found["status"]["state"]


@pytest.fixture(scope="module")
def people(stack) -> dict[str, RunsClient]:
    """alice and bob (both on call), each with a token of their own at the hub."""
    clients = {}
    for name in ("alice", "bob"):
        clients[name] = runs_client(stack, name, "silences tests", retry_for=5)
    return clients


@pytest.fixture(autouse=True)
def nothing_silenced_before(stack):
    wait_for(lambda: silenced_now() == {}, 60, "no silence in force before the test")


def web_run(client: RunsClient, runbook: str) -> wire.Run:
    options = wire.RunOptions(batch_size=1)
    return client.create(wire.CreateRun(runbook=runbook, stack="web", options=options))


def ok(hosts: list[str]) -> list[wire.HostResult]:
    return [wire.HostResult(host=host, state=wire.HostState.OK) for host in hosts]


def test_a_batch_is_silenced_exactly_while_it_runs_and_the_ledger_says_so(people):
    alice = people["alice"]
    run = web_run(alice, "silences-batches")
    for number, host in enumerate(("web-1", "web-2"), start=1):
        alice.lease(run.id)  # as the kernel renews it (the test stack's leases last 10 s)
        started = alice.start_batch(run.id, number, [host])
        silence = started.batches[number - 1].silence
        assert silence is not None and silence.instances == [f"{host}:9100"]
        # Alertmanager silences that batch's host and no other host of the fleet
        assert silenced_now() == {silence.id: {f"{host}:9100"}}
        alice.finish_batch(run.id, number, ok([host]))
        assert state_of(silence.id) == "expired"
        assert silenced_now() == {}
    ledger = alice.run(run.id)
    assert [b.silence.why for b in ledger.batches[:2]] == ["batch 1 finished", "batch 2 finished"]
    events = [e for e in alice.events(run.id) if e.type.startswith("silence_")]
    assert [(e.type, e.batch) for e in events] == [
        ("silence_set", 1),
        ("silence_expired", 1),
        ("silence_set", 2),
        ("silence_expired", 2),
    ]
    assert {e.actor for e in events} == {"runs"}
    alice.abort(run.id, "test over")


def test_a_lease_that_runs_out_ends_the_silence_and_the_new_owner_gets_one_of_their_own(people):
    alice, bob = people["alice"], people["bob"]
    run = web_run(alice, "silences-takeover")
    first = alice.start_batch(run.id, 1, ["web-1"]).batches[0].silence
    assert silenced_now() == {first.id: {"web-1:9100"}}
    # alice's kernel dies: nobody renews the lease (10 s); the sweeper orphans the run
    wait_for(lambda: alice.run(run.id).state is wire.RunState.ORPHANED, 60, "the run orphaned")
    wait_for(lambda: state_of(first.id) == "expired", 30, "alice's silence expired")
    assert silenced_now() == {}
    orphaned = alice.run(run.id)
    assert orphaned.batches[0].silence.why == "alice's lease ran out"

    taken = bob.takeover(run.id, "alice's kernel died mid-batch")
    assert taken.owner == "bob" and silenced_now() == {}
    again = bob.start_batch(run.id, 1, ["web-1"]).batches[0].silence
    assert again.id != first.id
    assert silenced_now() == {again.id: {"web-1:9100"}}
    (created,) = [s for s in alertmanager_silences() if s["id"] == again.id]
    assert created["createdBy"] == "bob"
    bob.finish_batch(run.id, 1, ok(["web-1"]))
    assert silenced_now() == {}
    bob.abort(run.id, "test over")
    kinds = [
        (e.type, e.actor) for e in bob.events(run.id) if e.type.startswith(("silence", "lease"))
    ]
    assert kinds == [
        ("silence_set", "runs"),
        ("lease_expired", "runs"),
        ("silence_expired", "runs"),
        ("silence_set", "runs"),
        ("silence_expired", "runs"),
    ]


def test_without_an_answer_from_alertmanager_no_batch_starts(people):
    alice = people["alice"]
    run = web_run(alice, "silences-closed")
    compose("stop", "alertmanager")
    try:
        alice.lease(run.id)  # the run stays alice's meanwhile (the test stack's leases: 10 s)
        with pytest.raises(LedgerUnavailable) as raised:
            alice.start_batch(run.id, 1, ["web-1"])
    finally:
        compose("start", "alertmanager")
    assert "batch 1 of run" in str(raised.value) and "did not start" in str(raised.value)
    assert "RUNS_ALERTMANAGER_URL=http://alertmanager:9093" in str(raised.value)
    ledger = alice.run(run.id)
    assert ledger.batches[0].state is wire.BatchState.PENDING and ledger.current_batch is None
    assert not [e for e in alice.events(run.id) if e.type == "batch_started"]
    wait_for(lambda: silenced_now() == {}, 60, "Alertmanager back")
    alice.abort(run.id, "test over")
