"""Four eyes on production, on the real stack: a production run waits for a second on-call engineer.

alice (on call, admin) asks for a production run on `db` from her own runbook (patching.ipynb as a
dry run, executed by papermill in her container, waiting for the approval as an engineer's would);
she cannot approve it herself, erin (ops only) cannot either; bob approves it from the status page
in Chromium, and the runbook goes on by itself. A rejected run stops with the reason; an approval
that expires (the test stack: RUNS_APPROVAL_TTL=120) stops the run; a staging run needs none; the
team's webhook hears the request with a link that works.
"""

import json
import re
import subprocess
from urllib.parse import urljoin

import pytest
import requests

from opsbook.contract import wire
from opsbook.contract.scopes import SCOPE_PRODUCTION
from opsbook.runsclient import RunsClient, RunsError

from .hubclient import runs_client, sign_in_with_browser, signed_in
from .stack import compose, docker, wait_for
from .test_patching import MACHINE_LOAD_BAR, output_text

RUNS = "/services/runs"
TTL = 120  # RUNS_APPROVAL_TTL of the test stack (tests/e2e/stack.py)


def client_of(stack, name: str) -> RunsClient:
    return runs_client(stack, name, "approvals test", retry_for=30)


@pytest.fixture(scope="module")
def clients(stack) -> dict[str, RunsClient]:
    return {name: client_of(stack, name) for name in ("alice", "bob", "erin")}


@pytest.fixture(scope="module")
def alice(stack) -> str:
    """alice's own container, where her runbooks run."""
    signed_in(stack, "alice", server=True)
    return stack.container_of("alice")


def dry_run_of_db(container: str, output: str, **parameters) -> subprocess.Popen:
    """alice's patching.ipynb on db, as a dry run (nothing installed), started in her container
    by papermill; it waits for the run's approval right after starting it."""
    values = {
        "stack": "db",
        "batch_size": 3,
        "approve": "none",
        "check_mode": True,
        "max_load_per_cpu": MACHINE_LOAD_BAR,
        "approval_deadline": 600,
        **parameters,
    }
    args = ["docker", "exec", "-u", "1000", "-w", "/home/jovyan", container, "papermill"]
    args += ["runbooks/patching.ipynb", output, "--kernel", "python3"]
    for name, value in values.items():
        args += ["-y", json.dumps({name: value})]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def last_run_id(ledger: RunsClient) -> int:
    return max((run.id for run in ledger.runs()), default=0)


def waiting_run(ledger: RunsClient, after: int, runbook: str = "patching") -> wire.Run:
    """The new run on db (id above `after`) once it awaits approval."""

    def found() -> wire.Run | None:
        for run in ledger.runs():
            if run.id > after and run.runbook == runbook and run.stack == "db":
                return run if run.state is wire.RunState.AWAITING_APPROVAL else None
        return None

    wait_for(found, 300, "alice's production run awaiting approval")
    return found()


def refusal(call) -> RunsError:
    with pytest.raises(RunsError) as refused:
        call()
    return refused.value


def webhook_texts() -> list[str]:
    """What the team's chat heard (the demo's recorder stands in for it)."""
    recorder = compose("ps", "-q", "recorder").stdout.strip()
    address = docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", recorder
    ).stdout.strip()
    answer = requests.get(f"http://{address}:8080/runs", timeout=5).json()
    return [record["body"]["text"] for record in answer]


def test_bob_approves_alices_production_run_from_the_status_page(stack, alice, clients, browser):
    previous = last_run_id(clients["alice"])
    runbook = dry_run_of_db(alice, "approval-db.ipynb")
    try:
        run = waiting_run(clients["alice"], previous)
        assert run.created_by == "alice" and run.approvals_needed == 1
        assert run.approval_expires_at is not None

        # alice may not approve her own run, admin or not; erin is not on call
        own = refusal(lambda: clients["alice"].approve(run.id, "I checked it myself"))
        assert own.reply.status == 409 and own.code is wire.ErrorCode.SELF_APPROVAL
        assert "bob" in str(own)  # who else may
        erin = refusal(lambda: clients["erin"].approve(run.id, "looks fine to me"))
        assert erin.reply.status == 403 and erin.code is wire.ErrorCode.MISSING_SCOPE
        assert erin.reply.scope == SCOPE_PRODUCTION
        assert clients["bob"].run(run.id).state is wire.RunState.AWAITING_APPROVAL

        # bob, signed in through the provider in a real browser, reads the request and approves
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        heading = page.get_by_text(f"Run {run.id}: patching on db")
        sign_in_with_browser(page, stack, f"{RUNS}/runs/{run.id}", "bob", heading)
        heading.first.wait_for(timeout=30_000)
        text = page.inner_text("body")
        assert "Awaiting approval" in text
        assert "alice" in text and "db-1, db-2, db-3" in text  # the requester, the plan
        assert "check_mode" in text  # the options
        reason = "CHG-4711: dry run of db agreed with the DBAs"
        page.fill("textarea[name=reason]", reason)
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("Your approval was recorded").wait_for(timeout=30_000)

        # alice's runbook goes on by itself: the dry run of every batch, inside the run
        assert runbook.wait(timeout=900) == 0, output_text(alice, "approval-db.ipynb")[-4000:]
    finally:
        if runbook.poll() is None:
            runbook.kill()
    printed = output_text(alice, "approval-db.ipynb")
    assert "awaits approval" in printed and "who may approve: bob" in printed
    assert "approved by bob at" in printed and reason in printed

    done = clients["alice"].run(run.id)
    assert done.state is wire.RunState.COMPLETED and done.owner == "alice"
    assert [b.started_by for b in done.batches] == ["alice"]
    (decision,) = done.approvals
    assert (decision.approver, decision.decision, decision.reason) == (
        "bob",
        wire.ApprovalDecisionKind.APPROVE,
        reason,
    )
    approved_at = wire.parse_wire_time(decision.at)
    assert wire.parse_wire_time(done.created_at) <= approved_at
    assert approved_at <= wire.parse_wire_time(done.batches[0].started_at)
    events = list(clients["alice"].events(run.id))
    requested = next(e for e in events if e.type == "approval_requested")
    approved = next(e for e in events if e.type == "approved")
    assert requested.actor == "alice" and approved.actor == "bob"
    assert requested.seq < approved.seq < next(e.seq for e in events if e.type == "batch_started")

    # the page shows who approved, when and why
    page.goto(f"{stack.hub_url}{RUNS}/runs/{run.id}")
    text = page.inner_text("body")
    assert f"bob approved {approved_at:%H:%M:%S} UTC: {reason}" in text

    # the on-call channel heard the request, with a link that opens the run's page
    texts = webhook_texts()
    (request,) = [t for t in texts if t.startswith(f"APPROVAL REQUESTED: run {run.id} (")]
    assert "PRODUCTION" in request
    link = re.search(r"Approve or reject it at (\S+)$", request).group(1)
    page.goto(urljoin(f"{stack.hub_url}/", link))
    assert f"Run {run.id}: patching on db" in page.inner_text("body")
    assert any(
        f"run {run.id} (" in t and f"bob approved the run (1 of 1): {reason}" in t for t in texts
    )
    context.close()


def test_a_rejected_run_stops_the_runbook_with_the_reason(alice, clients):
    previous = last_run_id(clients["alice"])
    runbook = dry_run_of_db(alice, "rejected-db.ipynb")
    try:
        run = waiting_run(clients["alice"], previous)
        clients["bob"].reject(run.id, "change freeze until Monday")
        assert runbook.wait(timeout=300) != 0  # the runbook fails loudly
    finally:
        if runbook.poll() is None:
            runbook.kill()
    printed = output_text(alice, "rejected-db.ipynb")
    assert "NotApproved" in printed or "will not run" in printed
    assert "rejected by bob at" in printed and "change freeze until Monday" in printed
    rejected = clients["alice"].run(run.id)
    assert rejected.state is wire.RunState.REJECTED
    assert "change freeze until Monday" in (rejected.summary or "")
    assert all(batch.state is wire.BatchState.PENDING for batch in rejected.batches)
    heard = webhook_texts()
    assert any(f"run {run.id} (" in t and "bob rejected the run: change freeze" in t for t in heard)


def test_an_approval_that_expires_stops_the_run(alice, clients):
    """Both ways, side by side: a request nobody decides (alice's runbook waits for it), and an
    approval not followed by a batch (an API run that never starts one)."""
    previous = last_run_id(clients["alice"])
    approved_idle = clients["alice"].create(wire.CreateRun(runbook="expiry-test", stack="db"))
    clients["bob"].approve(approved_idle.id, "approved, but it never starts")
    assert clients["alice"].run(approved_idle.id).state is wire.RunState.RUNNING
    runbook = dry_run_of_db(alice, "expired-db.ipynb")
    try:
        undecided = waiting_run(clients["alice"], previous)
        assert runbook.wait(timeout=TTL + 120) != 0
    finally:
        if runbook.poll() is None:
            runbook.kill()
    printed = output_text(alice, "expired-db.ipynb")
    assert "approval expired at" in printed

    for run_id in (undecided.id, approved_idle.id):
        wait_for(
            lambda run_id=run_id: clients["alice"].run(run_id).finished,
            TTL + 60,
            f"run {run_id} stopped by the expiry",
        )
        run = clients["alice"].run(run_id)
        assert run.state is wire.RunState.ABORTED
        assert "approval expired at" in (run.summary or "")
        expired = next(e for e in clients["alice"].events(run_id) if e.type == "approval_expired")
        assert expired.actor == "runs"
    # nothing may run on an expired approval
    late = refusal(lambda: clients["alice"].start_batch(approved_idle.id, 1, ["db-1"]))
    assert late.reply.status == 409
    too_late = refusal(lambda: clients["bob"].approve(undecided.id, "sorry, I was away"))
    assert too_late.reply.status == 409 and too_late.code is wire.ErrorCode.APPROVAL_EXPIRED
    assert any(f"run {undecided.id} (" in t and "expired" in t for t in webhook_texts())


def test_a_staging_run_needs_no_approval(clients):
    run = clients["alice"].create(wire.CreateRun(runbook="approval-staging-test", stack="web"))
    try:
        assert run.state is wire.RunState.RUNNING and run.approvals_needed == 0
        assert run.lease_expires_at is not None  # held at once
        refused = refusal(lambda: clients["bob"].approve(run.id, "nothing to approve"))
        assert refused.reply.status == 409
    finally:
        clients["alice"].abort(run.id, "approvals test over")
