"""The contract shared by the runs service and its client (opsbook.contract: wire format, stack
names, environments), and what the service package may import (the runs image installs opsbook
without Ansible or Prometheus)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from opsbook.contract.stacks import (
    environment_names,
    is_production,
    stack_key,
    stack_name_problem,
)
from opsbook.contract.wire import (
    FINISHED_STATES,
    RUN_ACTIONS,
    AppendEvents,
    ApprovalDecision,
    ApprovalDecisionKind,
    ApprovalView,
    BatchOrder,
    BatchState,
    BatchView,
    CreateRun,
    ErrorCode,
    ErrorReply,
    EventIn,
    Handoff,
    HostResult,
    HostState,
    HostView,
    Run,
    RunOptions,
    RunState,
    WireError,
    parse_wire_time,
    wire_time,
)


def sample_run() -> Run:
    return Run(
        id=3,
        runbook="patching",
        stack="web",
        environment="production",
        production=True,
        options=RunOptions(batch_size=2, order=BatchOrder.REVERSE, limit=["web-1"]),
        parameters={"errata": ["DSA-1"], "reboot": True},
        state=RunState.HANDED_OFF,
        owner="alice",
        lease_expires_at=None,
        lease_seconds=60,
        created_by="alice",
        created_at="2026-11-26T12:00:00.000000+00:00",
        updated_at="2026-11-26T12:05:00.000000+00:00",
        handoff=Handoff(to="bob", note="web-2 slow", by="alice", at="2026-11-26T12:04:00+00:00"),
        batches=[BatchView(number=1, hosts=["web-1"], state=BatchState.DONE, started_by="alice")],
        hosts=[HostView(name="web-1", batch=1, state=HostState.OK)],
        last_seq=42,
    )


def test_a_run_survives_the_trip_through_json():
    run = sample_run()
    data = json.loads(json.dumps(run.to_dict()))
    assert data["state"] == "handed_off" and data["hosts"][0]["state"] == "ok"
    assert Run.from_dict(data) == run
    assert run.host_states() == {"web-1": HostState.OK} and not run.finished


def test_approvals_travel_with_the_run_and_an_older_sender_has_none():
    run = Run.from_dict(
        {
            **sample_run().to_dict(),
            "state": "awaiting_approval",
            "approvals": [
                {
                    "approver": "bob",
                    "decision": "approve",
                    "reason": "ok",
                    "at": "2026-11-26T12:06Z",
                }
            ],
            "approvals_needed": 2,
            "approval_expires_at": "2026-11-26T12:30:00.000000+00:00",
        }
    )
    assert run.state is RunState.AWAITING_APPROVAL and not run.finished
    assert run.approvals == [
        ApprovalView(
            approver="bob",
            decision=ApprovalDecisionKind.APPROVE,
            reason="ok",
            at="2026-11-26T12:06Z",
        )
    ]
    assert Run.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    older = sample_run().to_dict()
    for name in ("approvals", "approvals_needed", "approval_expires_at"):
        del older[name]
    assert Run.from_dict(older).approvals_needed == 0 and Run.from_dict(older).approvals == []
    assert RunState.REJECTED in FINISHED_STATES and {"approve", "reject"} <= set(RUN_ACTIONS)
    with pytest.raises(WireError, match="reason: missing"):
        ApprovalDecision.from_dict({})


def test_unknown_fields_are_ignored_so_either_side_may_add_fields():
    data = {**sample_run().to_dict(), "added_in_a_later_version": 1}
    assert Run.from_dict(data) == sample_run()


def test_defaults_fill_what_an_older_sender_left_out():
    request = CreateRun.from_dict({"runbook": "patching", "stack": "web"})
    assert request.parameters == {} and request.options == RunOptions()
    assert RunOptions.from_dict({"batch_size": 3}) == RunOptions(batch_size=3)


def test_an_older_clients_environment_and_plan_are_ignored():
    """The service decides what a run is: a body naming an environment or a plan still parses,
    and neither reaches the request."""
    request = CreateRun.from_dict(
        {"runbook": "patching", "stack": "db", "environment": "staging", "plan": [["db-1"]]}
    )
    assert request == CreateRun(runbook="patching", stack="db")
    assert "environment" not in request.to_dict() and "plan" not in request.to_dict()
    assert EventIn.from_dict({"type": "runner_on_ok"}) == EventIn(type="runner_on_ok")


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        (CreateRun, [], "CreateRun: expected a JSON object, got a list"),
        (CreateRun, {"runbook": "p"}, "stack: missing (expected a string)"),
        (
            CreateRun,
            {"runbook": "p", "stack": "s", "options": {"limit": ["a", 2]}},
            "options.limit[1]: expected a string, got 2",
        ),
        (
            CreateRun,
            {"runbook": "p", "stack": "s", "options": {"order": "random"}},
            "options.order: expected one of inventory, reverse, got 'random'",
        ),
        (
            CreateRun,
            {"runbook": "p", "stack": "s", "options": {"batch_size": "2"}},
            "options.batch_size: expected a whole number, got '2'",
        ),
        (
            AppendEvents,
            {"events": [{"type": "x", "batch": True}]},
            "events[0].batch: expected a whole number or null, got true",
        ),
        (
            HostResult,
            {"host": "a", "state": "fine"},
            "state: expected one of pending, running, ok, failed, unreachable, in_doubt, "
            "got 'fine'",
        ),
    ],
)
def test_a_bad_body_names_the_field(kind, data, message):
    with pytest.raises(WireError) as caught:
        kind.from_dict(data)
    assert str(caught.value) == message


def test_error_bodies():
    reply = ErrorReply(status=409, code=ErrorCode.RUN_ACTIVE, message="taken", run_id=4)
    body = json.loads(json.dumps(reply.to_body()))
    assert body["error"]["code"] == "run_active"
    assert ErrorReply.from_body(body) == reply
    with pytest.raises(WireError):
        ErrorReply.from_body({"message": "not ours"})


def test_times_travel_in_utc():
    moment = datetime(2026, 11, 26, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    text = wire_time(moment)
    assert text == "2026-11-26T12:00:00.000000+00:00"
    assert parse_wire_time(text) == moment
    assert parse_wire_time("2026-11-26T12:00:00Z").tzinfo is not None
    for bad in ("2026-11-26T12:00:00", "yesterday"):
        with pytest.raises(WireError):
            parse_wire_time(bad)
    with pytest.raises(WireError):
        wire_time(datetime(2026, 1, 1))
    assert wire_time(datetime(2026, 1, 1, tzinfo=UTC)).endswith("+00:00")


def test_only_environments_declared_non_production_are_not_production_case_blind():
    declared = environment_names("Staging, dev  qa")
    assert declared == frozenset({"staging", "dev", "qa"})
    assert not is_production(" STAGING ", declared)
    assert not is_production("staging", frozenset({"Staging"}))
    assert is_production("production", declared)
    assert is_production("stagin", declared)  # misspelt: production (fail closed)
    assert is_production("lab", declared)  # not declared: production
    assert is_production("staging", environment_names(""))  # nothing declared: all production


def test_option_problems_name_the_field():
    assert RunOptions().problems() == []
    problems = RunOptions(batch_size=0, max_fail=-1, max_load_per_cpu=0).problems()
    assert [p.split(":")[0] for p in problems] == [
        "options.batch_size",
        "options.max_fail",
        "options.max_load_per_cpu",
    ]


@pytest.mark.parametrize("name", ["db", "web-1", "a", "db_2.eu", "9", "x" * 63])
def test_stack_names_of_the_charset(name):
    assert stack_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", " db", "DB", "db\u200b", "\uff44\uff42", "-db", "db/1", "x" * 64, "d b"]
)
def test_other_stack_names_are_refused_saying_the_rule(name):
    problem = stack_name_problem(name)
    assert problem and "lower-case letters" in problem


def test_look_alikes_share_the_key_of_the_stack_they_imitate():
    assert stack_key("DB") == stack_key("\uff44\uff42") == stack_key(" db ") == "db"
    assert stack_key("db\u200b") != "db"  # not a look-alike by key: refused by the charset


def test_the_service_imports_neither_ansible_nor_prometheus():
    code = (
        "import sys, opsbook, opsbook.contract.wire, opsbook.service.app\n"
        "import opsbook.service.__main__, opsbook.service.fleet\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'ansible', 'ansible_runner', 'prometheus_api_client', 'pandas', 'ipywidgets', 'yaml'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_contract_imports_only_the_standard_library():
    code = (
        "import sys; before = set(sys.modules)\n"
        "import opsbook.contract.wire, opsbook.contract.scopes, opsbook.contract.stacks\n"
        "import opsbook.contract.settings\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(','.join(sorted(new - set(sys.stdlib_module_names) - {'opsbook'})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
