"""The runs service on the real stack: who may do what, enforced by the service itself.

Each engineer calls it as their notebooks do, with their own server's token; viewers with their
browser's session, through the hub's OAuth.
"""

import threading

import pytest
import requests
import yaml

from opsbook.contract import wire
from opsbook.contract.scopes import SCOPE_PRODUCTION
from opsbook.runsclient import RunsClient, RunsError

from .hubclient import HubUser, runs_client

RUNS = "/services/runs"


def client_of(stack, username: str) -> RunsClient:
    """The engineer's own JupyterHub token, as their notebooks have it, through the proxy."""
    return runs_client(stack, username, f"runs test {username}", retry_for=5)


@pytest.fixture(scope="module")
def clients(stack):
    return {name: client_of(stack, name) for name in ("alice", "bob", "erin")}


def create(client: RunsClient, stack_name: str, runbook: str = "access-test"):
    return client.create(wire.CreateRun(runbook=runbook, stack=stack_name))


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
            outcomes[name] = create(clients[name], "web", runbook="race-test")
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
    refused = refusal(lambda: create(erin, "db"))
    assert refused.code is wire.ErrorCode.MISSING_SCOPE
    assert refused.reply.scope == SCOPE_PRODUCTION
    run = create(clients["bob"], "db")
    try:
        refused = refusal(lambda: erin.takeover(run.id, "I want it"))
        assert refused.reply.status == 403
    finally:
        clients["bob"].abort(run.id, "test over")


def test_the_service_decides_the_environment_whatever_the_body_says(stack, clients):
    """erin (ops: staging only), with her own token, sends the body an old or dishonest client
    would: db declared staging, with a plan of its own. The service reads the inventory."""
    answer = requests.post(
        f"{clients['erin'].url}/api/runs",
        json={"runbook": "x", "stack": "db", "environment": "staging", "plan": [["db-1"]]},
        headers={"Authorization": f"token {clients['erin'].token}"},
        timeout=10,
    )
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["scope"] == SCOPE_PRODUCTION and SCOPE_PRODUCTION in error["message"]
    assert "production" in error["message"]
    assert not [r for r in clients["alice"].runs() if r.runbook == "x" and not r.finished]


def test_a_run_is_what_the_inventory_says(clients):
    run = clients["erin"].create(
        wire.CreateRun(runbook="resolve-test", stack="web", options=wire.RunOptions(batch_size=2))
    )
    try:
        assert (run.environment, run.production) == ("staging", False)
        assert [batch.hosts for batch in run.batches] == [["web-1", "web-2"], ["web-3"]]
        assert run.options.batch_size == 2
        listed = {s.name: s for s in clients["erin"].stacks().stacks}
        assert listed["db"].production and not listed["web"].production
    finally:
        clients["erin"].abort(run.id, "test over")


@pytest.mark.parametrize("look_alike", ["DB", "db\u200b", "\uff44\uff42", " db "])
def test_look_alike_stack_names_are_refused_never_a_second_lock(clients, look_alike):
    alice = clients["alice"]  # on call: a refusal here is about the name, not the scope
    run = create(alice, "db", runbook="look-alike-test")
    try:
        refused = refusal(lambda: create(alice, look_alike, runbook="look-alike-test"))
        assert refused.reply.status == 400, refused
        assert "db" in str(refused)
    finally:
        alice.abort(run.id, "test over")


def test_an_unknown_stack_is_refused_naming_the_known_ones(clients):
    refused = refusal(lambda: create(clients["alice"], "nosuchstack"))
    assert refused.reply.status == 400
    assert "db" in str(refused) and "web" in str(refused)


def test_a_run_whose_stack_changed_before_accept_is_refused_until_replanned(stack, clients):
    """alice hands her run on web to bob; before he accepts, web-3 leaves the stack in the
    inventory. Accepting would patch what the ledger holds, so it is refused, naming the change;
    an explicit re-plan (recorded) makes the run match the inventory again."""
    alice, bob = clients["alice"], clients["bob"]
    run = create(alice, "web", runbook="inventory-change-test")
    alice.handoff(run.id, "bob", "over to you")
    alice.pause(run.id)
    original = stack.inventory.read_text()
    inventory = yaml.safe_load(original)
    groups = inventory["all"]["children"]["fleet"]["children"]["stacks"]["children"]
    groups["web"]["hosts"].pop("web-3")
    groups["canary"] = {"hosts": {"web-3": {"opsbook_exporter": "web-3:9100"}}}
    try:
        stack.inventory.write_text(yaml.safe_dump(inventory))
        refused = refusal(lambda: bob.accept(run.id))
        assert refused.code is wire.ErrorCode.PLAN_CHANGED, refused
        assert "web-3 left stack web" in str(refused) and "replan" in str(refused)
        replanned = bob.replan(run.id, "web-3 moved to the canary stack")
        assert [h for b in replanned.batches for h in b.hosts] == ["web-1", "web-2"]
        assert bob.accept(run.id).owner == "bob"
        record = [e for e in bob.events(run.id) if e.type == "replan"]
        assert record and record[0].actor == "bob" and "canary" in (record[0].message or "")
    finally:
        stack.inventory.write_text(original)
        bob.abort(run.id, "test over")


def test_handoff_rules_give_clear_errors(clients):
    alice, bob, erin = clients["alice"], clients["bob"], clients["erin"]
    run = create(alice, "web", runbook="handoff-rules")
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
    run = create(clients["alice"], "web", runbook="viewer-test")
    carol = HubUser(stack.hub_url, "carol")
    carol.sign_in(stack.demo_password)
    page = carol.session.get(f"{stack.hub_url}{RUNS}/", timeout=10)
    assert page.status_code == 200
    assert "viewer-test" in page.text
    assert stack.env["RUNS_SERVICE_TOKEN"] not in page.text
    xsrf = carol.session.cookies.get("_xsrf", path=f"{RUNS}/") or ""
    writes = [
        ("runs", {"runbook": "x", "stack": "web"}),
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
