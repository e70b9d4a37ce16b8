"""The runs service on the real stack: who may do what, enforced by the service itself.

Each engineer calls it as their notebooks do, with their own server's token; viewers with their
browser's session, through the hub's OAuth.
"""

import threading

import pytest

from opsbook.contract import wire
from opsbook.runs import RunsClient, RunsError

from .hubclient import HubUser

RUNS = "/services/runs"


def client_of(stack, username: str) -> RunsClient:
    """The engineer's own JupyterHub token, as their notebooks have it, through the proxy."""
    user = HubUser(stack.hub_url, username)
    user.sign_in(stack.demo_password)
    token = user.new_token(f"runs test {username}")
    return RunsClient(f"{stack.hub_url}{RUNS}", token, retry_for=5)


@pytest.fixture(scope="module")
def clients(stack):
    return {name: client_of(stack, name) for name in ("alice", "bob", "erin")}


def create(client: RunsClient, stack_name: str, environment: str, runbook: str = "access-test"):
    return client.create(
        wire.CreateRun(
            runbook=runbook,
            stack=stack_name,
            environment=environment,
            plan=[["web-1"], ["web-2"], ["web-3"]],
        )
    )


def refusal(call) -> RunsError:
    with pytest.raises(RunsError) as refused:
        call()
    return refused.value


def test_two_engineers_starting_the_same_run_at_once_make_exactly_one(clients):
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def start(name: str) -> None:
        barrier.wait()
        try:
            outcomes[name] = create(clients[name], "race", "staging", runbook="race-test")
        except RunsError as refused:
            outcomes[name] = refused

    threads = [threading.Thread(target=start, args=(name,)) for name in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = [o for o in outcomes.values() if isinstance(o, wire.Run)]
    refusals = [o for o in outcomes.values() if isinstance(o, RunsError)]
    assert len(runs) == 1 and len(refusals) == 1
    assert refusals[0].code is wire.ErrorCode.RUN_ACTIVE
    assert str(runs[0].id) in str(refusals[0]) and runs[0].owner in str(refusals[0])
    active = [r for r in clients["alice"].runs() if r.runbook == "race-test" and not r.finished]
    assert len(active) == 1
    clients[runs[0].owner].abort(runs[0].id, "test over")


def test_ops_may_not_touch_production_nor_take_over(clients):
    erin = clients["erin"]
    refused = refusal(lambda: create(erin, "db", "production"))
    assert refused.code is wire.ErrorCode.MISSING_SCOPE
    assert refused.reply.scope == wire.SCOPE_PRODUCTION
    run = create(clients["bob"], "db", "production")
    try:
        refused = refusal(lambda: erin.takeover(run.id, "I want it"))
        assert refused.reply.status == 403
    finally:
        clients["bob"].abort(run.id, "test over")


def test_handoff_rules_give_clear_errors(clients):
    alice, bob, erin = clients["alice"], clients["bob"], clients["erin"]
    run = create(alice, "web", "staging", runbook="handoff-rules")
    refused = refusal(lambda: alice.handoff(run.id, "erin", "erin is not on call"))
    assert refused.code is wire.ErrorCode.NOT_ON_CALL
    assert "bob" in str(refused)  # names who is on call
    alice.handoff(run.id, "bob", "over to you")
    alice.pause(run.id)
    refused = refusal(lambda: erin.accept(run.id))
    assert refused.code in (wire.ErrorCode.NOT_HANDED_TO_YOU, wire.ErrorCode.MISSING_SCOPE)
    accepted = bob.accept(run.id)
    assert accepted.owner == "bob"
    bob.finish(run.id, wire.RunState.FAILED, "rules test: nothing ran")
    refused = refusal(lambda: bob.resume(run.id))
    assert refused.code is wire.ErrorCode.RUN_FINISHED


def test_a_viewer_reads_the_status_page_and_every_write_is_refused(stack, clients):
    run = create(clients["alice"], "web", "staging", runbook="viewer-test")
    carol = HubUser(stack.hub_url, "carol")
    carol.sign_in(stack.demo_password)
    page = carol.session.get(f"{stack.hub_url}{RUNS}/", timeout=10)
    assert page.status_code == 200
    assert "viewer-test" in page.text
    assert stack.env["RUNS_SERVICE_TOKEN"] not in page.text
    xsrf = carol.session.cookies.get("_xsrf", path=f"{RUNS}/") or ""
    writes = [
        ("runs", {"runbook": "x", "stack": "web", "environment": "staging", "plan": [["web-1"]]}),
        (f"runs/{run.id}/notes", {"text": "carol was here"}),
        (f"runs/{run.id}/handoff", {"to": "bob"}),
        (f"runs/{run.id}/takeover", {"reason": "why not"}),
        (f"runs/{run.id}/abort", {"reason": "why not"}),
    ]
    for path, body in writes:
        answer = carol.session.post(
            f"{stack.hub_url}{RUNS}/api/{path}",
            json=body,
            headers={"X-XSRFToken": xsrf},
            timeout=10,
        )
        assert answer.status_code == 403, (path, answer.text)
        assert "custom:runs:" in answer.text, path
    clients["alice"].abort(run.id, "test over")
