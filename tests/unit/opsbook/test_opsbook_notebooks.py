"""The runbook library: well-formed notebooks, and the runbooks run unattended by papermill.

The papermill runs execute each runbook top to bottom in a real kernel, as an engineer's
`papermill runbooks/patching.ipynb ...` would, against the fake fleet (Prometheus, Alertmanager
and the package repository on loopback) and the test playbooks in data/fleet, run by
ansible-runner on this machine.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest
from opsbook_fakes import FakeServer
from opsbook_fleet import FakeFleet, demo_fleet, fleet_environment
from opsbook_runs_service import Approver, Service

from opsbook.contract import wire
from opsbook.runsclient import RunsClient

LIBRARY = Path(__file__).parents[3] / "shared-notebooks"
NOTEBOOKS = [
    "index.ipynb",
    "patching.ipynb",
    "handoff.ipynb",
    "approvals.ipynb",
    "health-check.ipynb",
]
CELL_TIMEOUT_SECONDS = 120
RUNBOOK_PARAMETERS = {
    "patching.ipynb": [
        "stack",
        "batch_size",
        "max_fail",
        "approve",
        "check_mode",
        "gate_timeout",
        "require_healthy_stack",
        "max_load_per_cpu",
        "handoff_to",
        "handoff_after_batch",
        "handoff_note",
        "approval_deadline",
    ],
    "handoff.ipynb": ["run_id", "stack", "action", "reason"],
    "approvals.ipynb": ["run_id", "decision", "reason"],
    "health-check.ipynb": ["stacks", "hours", "fail_on_unhealthy"],
}


def require(name: str) -> ModuleType:
    """Import a module the engineer's image has; skip without it, except in CI."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name)


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(LIBRARY / name, as_version=nbformat.NO_CONVERT)


def python_of(source: str) -> str | None:
    """A code cell's Python: None for a cell magic (%%bash ...), line magics and ! dropped."""
    if source.lstrip().startswith("%%"):
        return None
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_nbformat_4_5_with_ids(name: str) -> None:
    notebook = read(name)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) == (4, 5)
    ids = [cell.id for cell in notebook.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_outputs_are_committed(name: str) -> None:
    for cell in read(name).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
        assert "papermill" not in cell.metadata, cell.id


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_code_cell_compiles(name: str) -> None:
    for cell in read(name).cells:
        if cell.cell_type != "code":
            continue
        python = python_of(cell.source)
        if python is not None:
            ast.parse(python, filename=f"{name}:{cell.id}")
        elif cell.source.startswith("%%bash") and shutil.which("bash"):
            script = cell.source.split("\n", 1)[1]
            check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
            assert check.returncode == 0, f"{name}:{cell.id}: {check.stderr}"


@pytest.mark.parametrize("name", RUNBOOK_PARAMETERS)
def test_runbook_has_one_parameters_cell(name: str) -> None:
    tagged = [c for c in read(name).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assigned = [
        node.targets[0].id
        for node in ast.parse(tagged[0].source).body
        if isinstance(node, ast.Assign)
    ]
    assert assigned == RUNBOOK_PARAMETERS[name]


def test_papermill_reads_the_parameters_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    papermill = require("papermill")
    parameters = papermill.inspect_notebook(str(LIBRARY / "patching.ipynb"))
    assert list(parameters) == RUNBOOK_PARAMETERS["patching.ipynb"]
    assert parameters["check_mode"]["default"] == "False"
    assert "Unable to parse" not in caplog.text  # a '=' in a comment would confuse papermill


def test_index_links_every_runbook() -> None:
    text = "\n".join(cell.source for cell in read("index.ipynb").cells)
    linked = set(re.findall(r"\]\(([\w.-]+\.ipynb)\)", text))
    assert linked == set(RUNBOOK_PARAMETERS)
    assert all((LIBRARY / name).exists() for name in linked)


# unattended runs


@pytest.fixture
def fleet(
    fake_server: FakeServer, runs_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeFleet:
    """The fake fleet, and the kernel's environment pointing at it (as the hub's would)."""
    require("papermill")
    require("ipywidgets")
    require("matplotlib")
    fake = demo_fleet(reboot_seconds=0.3, scrape_interval=0.2)
    fake_server.responder = fake
    runs_service.repository = fake  # the service promotes errata on the fake repository
    for name, value in fleet_environment(fake_server.url, tmp_path / "runs").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPSBOOK_RUNS_URL", runs_service.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    # the kernel runs this Python; the %%bash cell finds its ansible-playbook
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return fake


def run(name: str, output: Path, **parameters: Any) -> nbformat.NotebookNode:
    papermill = require("papermill")
    try:
        papermill.execute_notebook(
            str(LIBRARY / name),
            str(output),
            parameters=parameters,
            cwd=str(output.parent),
            progress_bar=False,
            kernel_name="python3",
            # a cell that hangs fails the test rather than the whole test run
            execution_timeout=CELL_TIMEOUT_SECONDS,
        )
    finally:
        assert output.exists()
    return nbformat.read(output, as_version=4)


def printed(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    cell = next(cell for cell in notebook.cells if cell.id == cell_id)
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.notebooks
def test_patching_runs_unattended(fleet: FakeFleet, tmp_path: Path) -> None:
    notebook = run("patching.ipynb", tmp_path / "patching-web.ipynb", stack="web", batch_size=3)
    summary = printed(notebook, "summary")
    assert summary.startswith(
        "Rolling patch of web (staging), run 1: complete\n"
        "  batch 1 of 1 (web-1, web-2, web-3): done by alice, health gate passed\n"
        "  done (3): web-1, web-2, web-3\n"
    )
    assert "errata approved: opsbook-demo-agent=2.3.1, opsbook-demo-agent=2.4.0" in summary
    assert "post-checks: passed" in summary
    listed = printed(notebook, "by-hand").split("hosts (3):")[1].split()  # --list-hosts
    assert sorted(listed) == ["web-1", "web-2", "web-3"]
    assert (
        fleet.log[0]
        == "promote staging opsbook-demo-agent=2.4.0 opsbook-demo-base=1.1 opsbook-demo-web=1.1"
    )
    assert fleet.installed["web-2"] == {
        "opsbook-demo-agent": "2.4.0",
        "opsbook-demo-base": "1.1",
        "opsbook-demo-web": "1.1",
    }
    assert fleet.installed["db-1"]["opsbook-demo-base"] == "1.0"  # another stack: untouched
    assert ("opsbook-demo-base", "1.1") not in fleet.suites["production"]  # staging's only
    assert fleet.silences and fleet.active_silences == []
    assert list((tmp_path / "runs").iterdir())  # every play's record is kept


@pytest.mark.notebooks
def test_a_run_handed_off_mid_way_is_finished_by_the_next_engineer(
    fleet: FakeFleet, runs_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = run(
        "patching.ipynb",
        tmp_path / "alice.ipynb",
        stack="web",
        batch_size=1,
        handoff_to="bob",
        handoff_after_batch=1,
        handoff_note="web-1 done; watch web-2's disk",
    )
    assert "run 1: handed off to bob by alice" in printed(alice, "summary")
    assert fleet.installed["web-1"]["opsbook-demo-base"] == "1.1"
    assert fleet.installed["web-3"]["opsbook-demo-base"] == "1.0"  # not alice's any more
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "bob-token")
    monkeypatch.setenv("JUPYTERHUB_USER", "bob")
    bob = run("handoff.ipynb", tmp_path / "bob.ipynb", action="accept")
    history = "".join(o.get("text", "") for c in bob.cells for o in c.get("outputs", []))
    assert "watch web-2's disk" in history
    # bob's summary is the run's: alice's batch too, never "not part of this run"
    assert "  batch 1 of 3 (web-1): done by alice, health gate passed" in history
    assert "Rolling patch of web (staging), run 1: complete" in history
    assert "  done (3): web-1, web-2, web-3" in history
    assert "not part of this run" not in history
    assert "post-checks: passed" in history
    (finished,) = runs_service.store.list_runs(active=False)
    assert finished.state.value == "completed"
    assert [b.started_by for b in finished.batches] == ["alice", "bob", "bob"]
    assert all(fleet.installed[h]["opsbook-demo-base"] == "1.1" for h in ("web-2", "web-3"))


@pytest.mark.notebooks
def test_patching_fails_loudly_when_the_run_stops(
    fleet: FakeFleet, runs_service: Service, tmp_path: Path
) -> None:
    papermill = require("papermill")
    fleet.broken_hosts = {"db-1"}
    output = tmp_path / "patching-db.ipynb"
    with (
        Approver(runs_service, by="bob") as bob,  # db is production: bob approves it
        pytest.raises(papermill.PapermillExecutionError) as raised,
    ):
        run("patching.ipynb", output, stack="db", approve=["opsbook-demo-db=1.0.1"])
    assert bob.approved == [1] and not bob.refused
    assert raised.value.ename == "RollingStopped"
    notebook = nbformat.read(output, as_version=4)
    assert "awaits approval" in printed(notebook, "approval")  # it said so while it waited
    assert "approved by bob at" in printed(notebook, "approval")
    summary = printed(notebook, "summary")  # printed before the error
    assert "STOPPED: batch 1 of 3: 1 host failed the play, more than max_fail=0" in summary
    assert "not started (2): db-2, db-3" in summary
    assert "errata approved: opsbook-demo-agent=2.3.1, opsbook-demo-db=1.0.1" in summary
    # promoted by the runs service inside the approved run, into production's suite only
    assert ("opsbook-demo-db", "1.0.1") in fleet.suites["production"]
    assert ("opsbook-demo-db", "1.0.1") not in fleet.suites["staging"]
    assert ("opsbook-demo-base", "1.1") not in fleet.suites["production"]  # only what approve named
    (promotion,) = RunsClient(runs_service.url, "carol-token").promotions().promotions
    assert (promotion.environment, promotion.by, promotion.run_id) == ("production", "alice", 1)
    assert [(e.package, e.version) for e in promotion.promoted] == [("opsbook-demo-db", "1.0.1")]
    assert promotion.unchanged == []  # agent 2.3.1 was approved already: not sent again
    assert fleet.active_silences == []
    assert "upgrade db-2" not in fleet.log


@pytest.mark.notebooks
def test_patching_dry_run_changes_nothing(fleet: FakeFleet, tmp_path: Path) -> None:
    notebook = run(
        "patching.ipynb", tmp_path / "dry.ipynb", stack="web", batch_size=3, check_mode=True
    )
    assert "DRY RUN (check mode) of the rolling patch of web (staging), run 1: complete" in printed(
        notebook, "summary"
    )
    assert fleet.log == []  # nothing promoted, silenced or upgraded
    assert ("opsbook-demo-base", "1.1") not in fleet.suites["staging"]


@pytest.mark.notebooks
def test_health_check_runs_unattended_and_fails_closed(fleet: FakeFleet, tmp_path: Path) -> None:
    papermill = require("papermill")
    notebook = run("health-check.ipynb", tmp_path / "health.ipynb")
    verdict = printed(notebook, "verdict")
    assert "db: health gate passed: 3 hosts" in verdict
    assert "web: health gate passed: 3 hosts" in verdict
    fleet.prometheus_answers = False
    with pytest.raises(papermill.PapermillExecutionError, match="unhealthy stacks: db, web"):
        run("health-check.ipynb", tmp_path / "down.ipynb", fail_on_unhealthy=True)


@pytest.mark.notebooks
def test_an_unhealthy_host_stops_the_run_before_or_at_its_batch(
    fleet: FakeFleet, tmp_path: Path
) -> None:
    papermill = require("papermill")
    fleet.load["web-2:9100"] = 3.0  # web-2 fails the health gate (load per CPU >= 1)
    with pytest.raises(papermill.PapermillExecutionError, match="pre-checks of web failed"):
        run("patching.ipynb", tmp_path / "unhealthy.ipynb", stack="web")
    assert fleet.log == []  # nothing promoted, silenced or upgraded
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        run(
            "patching.ipynb",
            tmp_path / "web2-down.ipynb",
            stack="web",
            approve=["opsbook-demo-agent=2.4.0"],
            require_healthy_stack=False,
            gate_timeout=2,
        )
    assert raised.value.ename == "RollingStopped"
    assert "STOPPED: batch 2 of 3: health gate failed for web-2" in raised.value.evalue
    assert fleet.installed["web-1"]["opsbook-demo-agent"] == "2.4.0"  # batch 1: done
    assert fleet.installed["web-3"]["opsbook-demo-agent"] == "2.3.0"  # batch 3: not started
    assert fleet.active_silences == []


@pytest.mark.notebooks
def test_a_production_run_that_is_rejected_stops_the_runbook_with_the_reason(
    fleet: FakeFleet, runs_service: Service, tmp_path: Path
) -> None:
    papermill = require("papermill")
    output = tmp_path / "patching-db-rejected.ipynb"
    bob = RunsClient(runs_service.url, "bob-token", retry_for=10)

    def reject_when_asked() -> None:
        # Once the runbook has asked who is on call (to say who may approve), not before: a
        # rejection that came first would be what the runbook says instead.
        runs_service.oncall_asked.clear()
        deadline = time.monotonic() + CELL_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            waiting = [r for r in bob.runs() if r.state.value == "awaiting_approval"]
            if waiting and runs_service.oncall_asked.is_set():
                bob.reject(waiting[0].id, "change freeze until Monday")
                return
            time.sleep(0.2)

    rejecter = threading.Thread(target=reject_when_asked, daemon=True)
    rejecter.start()
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        run("patching.ipynb", output, stack="db")
    rejecter.join(10)
    assert raised.value.ename == "NotApproved"
    assert "rejected by bob at" in raised.value.evalue
    assert "change freeze until Monday" in raised.value.evalue
    assert "who may approve: bob" in printed(nbformat.read(output, as_version=4), "approval")
    assert fleet.log == []  # nothing promoted, silenced or upgraded
    (rejected,) = runs_service.store.list_runs(active=False)
    assert rejected.state.value == "rejected"


@pytest.mark.notebooks
def test_patching_gives_up_at_its_approval_deadline(
    fleet: FakeFleet, runs_service: Service, tmp_path: Path
) -> None:
    papermill = require("papermill")
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        run("patching.ipynb", tmp_path / "patching-db-late.ipynb", stack="db", approval_deadline=2)
    assert raised.value.ename == "NotApproved"
    assert "not approved within the runbook's deadline of 2 s" in raised.value.evalue
    (aborted,) = runs_service.store.list_runs(active=False)
    assert aborted.state.value == "aborted"
    assert fleet.log == []


@pytest.mark.notebooks
def test_approvals_lists_the_pending_runs_and_decides_with_a_reason(
    fleet: FakeFleet, runs_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    papermill = require("papermill")
    alice = RunsClient(runs_service.url, "alice-token", retry_for=10)
    asked = alice.create(
        wire.CreateRun(
            runbook="patching",
            stack="db",
            options=wire.RunOptions(batch_size=2),
            parameters={"approved_errata": ["opsbook-demo-db=1.0.1"]},
        )
    )
    # alice may not approve her own run: the service's refusal is what the runbook shows
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        run(
            "approvals.ipynb",
            tmp_path / "alice.ipynb",
            run_id=asked.id,
            decision="approve",
            reason="trust me",
        )
    assert raised.value.ename == "RunsError"
    assert f"you (alice) requested run {asked.id}, so you may not approve it" in (
        raised.value.evalue
    )
    assert "bob" in raised.value.evalue  # who else may
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "bob-token")
    listed = run("approvals.ipynb", tmp_path / "list.ipynb")
    pending = printed(listed, "pending")
    assert f"run {asked.id}: patching of db (production, PRODUCTION), requested by alice" in pending
    assert "batch 1: db-1, db-2" in pending and "batch 2: db-3" in pending
    assert "opsbook-demo-db=1.0.1" in pending and "options: batch_size=2" in pending
    assert f"{runs_service.url}/runs/{asked.id}" in pending
    assert "no run chosen" in printed(listed, "decide")
    approved = run(
        "approvals.ipynb",
        tmp_path / "bob.ipynb",
        run_id=asked.id,
        decision="approve",
        reason="CHG-42 agreed with the DBAs",
    )
    assert f"run {asked.id} is running" in printed(approved, "outcome")
    assert "approved by bob at" in printed(approved, "outcome")
    assert "CHG-42 agreed with the DBAs" in printed(approved, "outcome")
    run_now = alice.run(asked.id)
    assert run_now.state is wire.RunState.RUNNING and run_now.owner == "alice"
    assert [(a.approver, a.reason) for a in run_now.approvals] == [
        ("bob", "CHG-42 agreed with the DBAs")
    ]
    alice.abort(asked.id, "test over")
    again = alice.create(wire.CreateRun(runbook="patching", stack="db"))
    run(
        "approvals.ipynb",
        tmp_path / "reject.ipynb",
        run_id=again.id,
        decision="reject",
        reason="not in the freeze",
    )
    rejected = alice.run(again.id)
    assert rejected.state is wire.RunState.REJECTED and "not in the freeze" in rejected.summary
