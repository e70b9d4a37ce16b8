"""Runs that outlive a shift, on the real stack: handoff, takeover, a service restart mid-run.

Alice and bob (both on call) work on the production stack `db` from their own containers, with
the runbooks (patching.ipynb, handoff.ipynb) executed by papermill as they would run them. Each
test approves a further erratum, so each has something to patch. db is production: each of
alice's runs waits for bob's approval (four eyes), which he gives through the API while her
runbook waits; the approval stays with the run when it changes hands.
"""

import subprocess

import pytest
import requests
import testinfra

from opsbook.contract import wire
from opsbook.runsclient import RunsClient

from .hubclient import signed_in
from .stack import compose, docker, reset_fleet, wait_for
from .test_patching import MACHINE_LOAD_BAR, output_text

DB = ["db-1", "db-2", "db-3"]


@pytest.fixture(scope="module", autouse=True)
def fresh_fleet(stack):
    reset_fleet()


@pytest.fixture(scope="module")
def engineers(stack):
    people = {}
    for name in ("alice", "bob"):
        people[name] = signed_in(stack, name, server=True)
    return people


@pytest.fixture(scope="module")
def ledger(stack, engineers) -> RunsClient:
    token = engineers["alice"].new_token("handoff tests")
    return RunsClient(f"{stack.hub_url}/services/runs", token, retry_for=30)


@pytest.fixture(scope="module")
def approver(stack, engineers) -> RunsClient:
    """bob's own token: he approves alice's production runs (she may not approve her own)."""
    token = engineers["bob"].new_token("handoff tests: approvals")
    return RunsClient(f"{stack.hub_url}/services/runs", token, retry_for=30)


def papermill(container: str, runbook: str, output: str, **parameters) -> list[str]:
    """The command that runs a runbook in an engineer's container, as the engineer."""
    args = ["docker", "exec", "-u", "1000", "-w", "/home/jovyan", container, "papermill"]
    args += [f"runbooks/{runbook}", output, "--kernel", "python3"]
    for name, value in parameters.items():
        args += ["-p", name, str(value)] if isinstance(value, str) else ["-y", f"{name}: {value}"]
    return args


def run_runbook(container: str, runbook: str, output: str, **parameters) -> None:
    done = subprocess.run(
        papermill(container, runbook, output, **parameters),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, output_text(container, output)[-4000:]


def patch_db(**parameters) -> dict:
    return {"stack": "db", "batch_size": 1, "max_load_per_cpu": MACHINE_LOAD_BAR, **parameters}


def latest_db_run(ledger: RunsClient) -> wire.Run:
    runs = [r for r in ledger.runs() if r.runbook == "patching" and r.stack == "db"]
    return max(runs, key=lambda r: r.id)


def latest_db_run_id(ledger: RunsClient) -> int:
    return max(
        (r.id for r in ledger.runs() if r.runbook == "patching" and r.stack == "db"), default=0
    )


def approve_when_asked(approver: RunsClient, after: int, reason: str) -> wire.Run:
    """Once alice's new run on db (id above `after`) awaits approval, bob approves it."""

    def asked() -> wire.Run | None:
        for run in approver.runs():
            if run.id > after and run.runbook == "patching" and run.stack == "db":
                return run if run.state is wire.RunState.AWAITING_APPROVAL else None
        return None

    wait_for(asked, 300, "alice's run on db awaiting approval")
    return approver.approve(asked().id, reason)


def run_approved(
    container: str, runbook: str, output: str, approver: RunsClient, reason: str, **parameters
) -> wire.Run:
    """alice's patching.ipynb on db, approved by bob while it waits; until it ends."""
    previous = latest_db_run_id(approver)
    process = subprocess.Popen(
        papermill(container, runbook, output, **parameters),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = approve_when_asked(approver, previous, reason)
        assert process.wait(timeout=900) == 0, output_text(container, output)[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
    return run


def patch_records(container: str) -> set[str]:
    """The folders of the patch plays this engineer's kernel ran (one per batch attempt)."""
    listing = docker("exec", container, "ls", "/home/jovyan/.opsbook/runs", check=False).stdout
    return {name for name in listing.split() if "-patch-" in name}


def runner_event_files(container: str, records: set[str]) -> int:
    """ansible-runner's own count: one file per event it produced, in each play's artifacts."""
    total = 0
    for record in records:
        found = docker(
            "exec",
            container,
            "sh",
            "-c",
            f"ls /home/jovyan/.opsbook/runs/{record}/artifacts/*/job_events/ | wc -l",
        )
        total += int(found.stdout.strip())
    return total


def ledger_runner_events(ledger: RunsClient, run_id: int) -> list[wire.Event]:
    return [e for e in ledger.events(run_id) if e.kind is wire.EventKind.RUNNER]


def installed(package: str) -> dict[str, str]:
    versions = {}
    for host in DB:
        container = compose("ps", "-q", host).stdout.strip()
        versions[host] = testinfra.get_host(f"docker://{container}").package(package).version
    return versions


def test_a_run_handed_off_after_batch_1_is_finished_by_bob_from_his_container(
    stack, engineers, ledger, approver
):
    alice, bob = stack.container_of("alice"), stack.container_of("bob")
    before = {alice: patch_records(alice), bob: patch_records(bob)}
    note = "batch 1 went fine; db-2 is the primary, watch replication after its reboot"
    run_approved(
        alice,
        "patching.ipynb",
        "handoff-alice.ipynb",
        approver,
        "CHG-101: base 1.1 on db, agreed with the DBAs",
        **patch_db(
            approve=["opsbook-demo-base=1.1"],
            handoff_to="bob",
            handoff_after_batch=1,
            handoff_note=note,
        ),
    )
    run = latest_db_run(ledger)
    assert run.state is wire.RunState.HANDED_OFF
    assert [b.state for b in run.batches] == [wire.BatchState.DONE, *[wire.BatchState.PENDING] * 2]
    assert installed("opsbook-demo-base") == {"db-1": "1.1", "db-2": "1.0", "db-3": "1.0"}

    run_runbook(bob, "handoff.ipynb", "handoff-bob.ipynb", action="accept")
    assert note in output_text(bob, "handoff-bob.ipynb")  # bob read the note before accepting
    run = ledger.run(run.id)
    assert run.state is wire.RunState.COMPLETED
    assert run.owner == "bob"
    assert [b.started_by for b in run.batches] == ["alice", "bob", "bob"]
    assert installed("opsbook-demo-base") == {host: "1.1" for host in DB}
    events = list(ledger.events(run.id))
    assert any(
        e.type == "handoff" and e.actor == "alice" and note in (e.message or "") for e in events
    )
    assert any(e.type == "accept" and e.actor == "bob" for e in events)
    # bob approved alice's run before it started; handed to him, it kept that approval
    assert [(a.approver, a.reason) for a in run.approvals] == [
        ("bob", "CHG-101: base 1.1 on db, agreed with the DBAs")
    ]
    assert [e.type for e in events].count("approval_requested") == 1
    # Every event ansible-runner produced, in alice's and in bob's container, is in the record.
    produced = sum(runner_event_files(c, patch_records(c) - before[c]) for c in (alice, bob))
    recorded = ledger_runner_events(ledger, run.id)
    assert produced > 0
    assert len(recorded) == produced
    assert {e.actor for e in recorded if e.batch == 1} == {"alice"}
    assert {e.actor for e in recorded if e.batch in (2, 3)} == {"bob"}


def test_a_run_whose_container_died_mid_batch_is_taken_over_and_finished(
    stack, engineers, ledger, approver
):
    alice, bob = stack.container_of("alice"), stack.container_of("bob")
    previous = latest_db_run_id(ledger)
    patching = subprocess.Popen(
        papermill(
            alice, "patching.ipynb", "dies.ipynb", **patch_db(approve=["opsbook-demo-agent=2.3.1"])
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        approve_when_asked(approver, previous, "CHG-102: agent 2.3.1 on db")

        def batch_2_running():
            run = latest_db_run(ledger)
            return not run.finished and run.batches[1].state is wire.BatchState.RUNNING

        wait_for(batch_2_running, 600, "batch 2 of alice's run under way")
        docker("kill", alice)  # the container dies mid-batch: kernel, play and all
    finally:
        patching.wait(timeout=60)
    run = latest_db_run(ledger)
    wait_for(
        lambda: ledger.run(run.id).state is wire.RunState.ORPHANED,
        60,
        "the run orphaned once alice's lease ran out",
    )
    # the silence of her dead kernel's batch (db-2) ended with her lease, not at its ceiling
    interrupted = ledger.run(run.id).batches[1].silence
    assert interrupted.why == "alice's lease ran out" and interrupted.expired_at is not None

    run_runbook(
        bob,
        "handoff.ipynb",
        "takeover-bob.ipynb",
        action="takeover",
        stack="db",
        reason="alice's container died mid-batch",
    )
    run = ledger.run(run.id)
    assert run.state is wire.RunState.COMPLETED
    assert run.batches[1].attempts == 2  # the interrupted batch ran again
    assert [b.started_by for b in run.batches] == ["alice", "bob", "bob"]
    takeover = next(e for e in ledger.events(run.id) if e.type == "takeover")
    assert takeover.actor == "bob"
    assert "alice's container died" in takeover.message
    assert "db-2" in takeover.data["in_doubt"]
    assert installed("opsbook-demo-agent") == {host: "2.3.1" for host in DB}
    assert all(h.state is wire.HostState.OK for h in run.hosts)  # none left untracked
    assert all(b.silence.expired_at for b in run.batches)  # each batch's silence: ended
    assert [a.approver for a in run.approvals] == ["bob"]  # taken over: still approved
    engineers["alice"].stop_server()


def test_restarting_the_runs_service_mid_run_loses_no_event(stack, engineers, ledger, approver):
    engineers["alice"].start_server()
    alice = stack.container_of("alice")
    before = patch_records(alice)
    errata = ["opsbook-demo-agent=2.4.0", "opsbook-demo-db=1.0.1"]
    previous = latest_db_run_id(ledger)
    patching = subprocess.Popen(
        papermill(alice, "patching.ipynb", "restart.ipynb", **patch_db(approve=errata)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    approve_when_asked(approver, previous, "CHG-103: agent 2.4.0 and db 1.0.1")

    def batch_1_running():
        run = latest_db_run(ledger)
        return run.id != previous and run.batches[0].state is wire.BatchState.RUNNING

    wait_for(batch_1_running, 300, "alice's new run under way")
    runs_container = compose("ps", "-q", "runs").stdout.strip()
    started_before = docker("inspect", "--format", "{{.State.StartedAt}}", runs_container).stdout
    compose("restart", "runs")
    started_after = docker("inspect", "--format", "{{.State.StartedAt}}", runs_container).stdout
    assert started_after != started_before  # the service really went down and came back
    assert patching.wait(timeout=900) == 0, output_text(alice, "restart.ipynb")[-4000:]
    run = latest_db_run(ledger)
    assert run.state is wire.RunState.COMPLETED
    produced = runner_event_files(alice, patch_records(alice) - before)
    assert len(ledger_runner_events(ledger, run.id)) == produced
    assert installed("opsbook-demo-agent") == {host: "2.4.0" for host in DB}
    assert installed("opsbook-demo-db") == {host: "1.0.1" for host in DB}
    # the restart expired no silence of the batch in flight early, and every one is over now
    silences = [b.silence for b in run.batches]
    assert all(s.why == f"batch {n} finished" for n, s in enumerate(silences, start=1))


def test_the_team_heard_of_each_step_on_the_webhook(ledger):
    """Slack-style messages (the demo's recorder stands in for the chat) for every step above."""
    recorder = compose("ps", "-q", "recorder").stdout.strip()
    address = docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", recorder
    ).stdout.strip()
    texts = [
        r["body"]["text"] for r in requests.get(f"http://{address}:8080/runs", timeout=5).json()
    ]
    db_runs = sorted(r.id for r in ledger.runs() if r.runbook == "patching" and r.stack == "db")
    handed, died = db_runs[-3], db_runs[-2]
    about = {run: [t for t in texts if f"run {run} (" in t] for run in (handed, died)}
    assert any("handed" in t and "bob" in t for t in about[handed])
    assert any("accepted" in t for t in about[handed])
    assert any(t.startswith("FAILURE") and "lease" in t for t in about[died])
    assert any("took over" in t for t in about[died])
    assert all("PRODUCTION" in t for t in about[handed])  # db is production: it says so
    # each run's approval request reached the on-call channel, then bob's approval
    for run in (handed, died):
        assert any(t.startswith(f"APPROVAL REQUESTED: run {run} (") for t in texts)
        assert any("bob approved the run" in t for t in about[run])
