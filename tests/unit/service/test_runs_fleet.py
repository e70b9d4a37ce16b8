"""The service's idea of the fleet (opsbook.service.fleet): stacks resolved from the inventory's
groups, batches planned from a run's options, and real inventory files read with ansible-inventory
(written to a temporary folder, changed under the reader, broken, missing)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from fake_alertmanager import FakeAlertmanager

from opsbook.contract.scopes import SCOPE_READ, SCOPE_WRITE
from opsbook.contract.wire import BatchOrder, ErrorCode, RunOptions
from opsbook.service.fleet import (
    InventorySource,
    InventoryUnreadable,
    Stack,
    fleet_from_groups,
    plan_batches,
    read_groups,
)
from opsbook.service.rules import Caller, Refused
from opsbook.service.store import Store

ERIN = Caller("erin", frozenset({SCOPE_READ, SCOPE_WRITE}))


def refused(call, *args, **kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    return caught.value


# --- resolution on the inventory's groups ---------------------------------------------------------


def test_each_stack_resolves_to_its_hosts_and_environment(inventory):
    """conftest.py's inventory, as ansible-inventory --list gives it."""
    fleet = fleet_from_groups(inventory.groups, frozenset({"staging"}))
    web = fleet.resolve("web")
    assert web == Stack(
        name="web",
        hosts=("web-1", "web-2", "web-3", "web-4", "web-5"),
        environment="staging",
        production=False,
    )
    assert (fleet.resolve("db").environment, fleet.resolve("db").production) == (
        "production",
        True,
    )
    listing = fleet.listing()
    assert [s.name for s in listing.stacks] == ["db", "web"]  # mixed cannot be run
    assert listing.nonproduction == ["staging"]


def test_hosts_in_natural_order_and_subgroups_count(inventory):
    inventory.add_stack("api", ["api-10", "api-2", "api-1"], "staging")
    inventory.groups["api"]["children"] = ["api_canary"]
    inventory.groups["api_canary"] = {"hosts": ["api-3"]}
    inventory.add_host("api-3", "staging")
    assert inventory.current().resolve("api").hosts == ("api-1", "api-2", "api-3", "api-10")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("cache", "stack: unknown stack 'cache'; known stacks: db, mixed, web"),
        ("", "stack: expected the name of a stack of the inventory (db, mixed, web)"),
        (" \t", "stack: expected the name of a stack of the inventory"),
        ("DB", "'DB' is a look-alike of the stack 'db'"),
        ("\uff44\uff42", "is a look-alike of the stack 'db'"),
        ("db\u200b", "is not a stack name: expected 1 to 63 lower-case letters"),
        ("web/1", "is not a stack name"),
        (
            "mixed",
            "its hosts are not all in one environment (app-1 in staging; app-2 in production)",
        ),
    ],
)
def test_what_cannot_be_resolved_is_a_400_saying_why(inventory, name, words):
    error = refused(inventory.current().resolve, name)
    assert (error.status, error.code) == (400, ErrorCode.BAD_REQUEST)
    assert words in error.message, error.message


def test_a_host_in_no_environment_or_in_two_stops_its_stack(inventory):
    inventory.add_host("web-6", "web")  # in no environment
    assert "web-6 in no environment" in inventory.current().stacks["web"].problem
    inventory.add_host("web-6", "staging")
    inventory.add_host("web-6", "production")
    assert "web-6 in production, staging" in inventory.current().stacks["web"].problem
    assert refused(inventory.current().resolve, "web").status == 400


def test_two_stacks_whose_names_are_look_alikes_are_both_stopped(inventory):
    inventory.add_stack("DB", ["db-9"], "production")
    fleet = inventory.current()
    assert "look-alike of the stack 'db'" in fleet.stacks["DB"].problem
    assert "look-alike of the stack 'DB'" in fleet.stacks["db"].problem
    assert refused(fleet.resolve, "db").status == 400
    assert "db" not in [s.name for s in fleet.listing().stacks]


def test_an_empty_stack_cannot_be_run(inventory):
    inventory.groups["stacks"]["children"].append("empty")
    inventory.groups["empty"] = {}
    assert "no hosts" in refused(inventory.current().resolve, "empty").message


def test_an_undeclared_environment_is_production(inventory):
    inventory.add_stack("lab", ["lab-1"], "lab")
    lab = inventory.current().resolve("lab")
    assert (lab.environment, lab.production) == ("lab", True)


@pytest.mark.parametrize("declared", [{"staging"}, {"Staging"}, {"STAGING"}])
@pytest.mark.parametrize("group", ["staging", "Staging"])
def test_non_production_is_declared_case_blind(inventory, declared, group):
    inventory.move_hosts([f"web-{n}" for n in range(1, 6)], source="staging", target=group)
    inventory.nonproduction = frozenset(declared)
    assert not inventory.current().resolve("web").production


def test_nothing_declared_means_everything_is_production(inventory):
    inventory.nonproduction = frozenset()
    assert inventory.current().resolve("web").production


def test_an_inventory_without_the_conventions_says_what_it_expects():
    with pytest.raises(InventoryUnreadable) as caught:
        fleet_from_groups({"all": {"children": ["web"]}, "web": {"hosts": ["w"]}}, frozenset())
    assert "no group 'stacks'" in str(caught.value) and "environments" in str(caught.value)


# --- batches from the run's options ---------------------------------------------------------------

WEB = Stack(name="web", hosts=tuple(f"web-{n}" for n in range(1, 6)), environment="staging")


@pytest.mark.parametrize(
    ("options", "plan"),
    [
        (RunOptions(), [["web-1"], ["web-2"], ["web-3"], ["web-4"], ["web-5"]]),
        (RunOptions(batch_size=2), [["web-1", "web-2"], ["web-3", "web-4"], ["web-5"]]),
        (RunOptions(batch_size=9), [["web-1", "web-2", "web-3", "web-4", "web-5"]]),
        (
            RunOptions(batch_size=2, order=BatchOrder.REVERSE),
            [["web-5", "web-4"], ["web-3", "web-2"], ["web-1"]],
        ),
        (RunOptions(limit=["web-4", "web-1"]), [["web-1"], ["web-4"]]),
        (RunOptions(limit=["web-4", "web-1"], order=BatchOrder.REVERSE), [["web-4"], ["web-1"]]),
    ],
)
def test_batches_from_the_options(options, plan):
    assert plan_batches(WEB, options) == plan


def test_skipped_hosts_are_left_out_of_a_new_plan():
    assert plan_batches(WEB, RunOptions(batch_size=2), skip=["web-1", "web-3"]) == [
        ["web-2", "web-4"],
        ["web-5"],
    ]


def test_a_limit_outside_the_stack_is_a_400_naming_the_hosts():
    error = refused(plan_batches, WEB, RunOptions(limit=["web-1", "db-1"]))
    assert error.status == 400
    assert error.message.startswith("options.limit: db-1 not in stack web")
    assert "web-1, web-2, web-3, web-4, web-5" in error.message


# --- real inventory files -------------------------------------------------------------------------

HOSTS_YML = """\
all:
  children:
    stacks:
      children:
        web:
          hosts:
            web-1:
            web-2:
            web-3:
        db:
          hosts:
            db-1:
            db-2:
    environments:
      children:
        staging:
          hosts:
            web-1:
            web-2:
            web-3:
        production:
          hosts:
            db-1:
            db-2:
"""


def write(path: Path, text: str) -> None:
    """Write, and make sure the file's signature changes even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(textwrap.dedent(text))
    after = path.stat().st_mtime_ns
    if after <= before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


class CountingReader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path):
        self.calls += 1
        return read_groups(path)


@pytest.fixture
def inventory_dir(tmp_path) -> Path:
    folder = tmp_path / "inventory"
    folder.mkdir()
    write(folder / "hosts.yml", HOSTS_YML)
    return folder


def test_a_yaml_inventory_read_by_ansible_inventory(inventory_dir):
    source = InventorySource(inventory_dir, frozenset({"staging"}))
    fleet = source.current()
    assert fleet.source == str(inventory_dir.resolve())
    assert fleet.resolve("web").hosts == ("web-1", "web-2", "web-3")
    assert fleet.resolve("db").production and not fleet.resolve("web").production
    assert source.problem() is None


def test_the_inventory_is_read_again_only_when_a_file_changes(inventory_dir):
    reader = CountingReader()
    source = InventorySource(inventory_dir, frozenset({"staging"}), reader=reader)
    first = source.current()
    assert source.current() is first and reader.calls == 1  # unchanged: not read again
    write(inventory_dir / "hosts.yml", HOSTS_YML.replace("            web-3:\n", "", 1))
    assert source.current().resolve("web").hosts == ("web-1", "web-2")  # web-3 left the stack
    assert reader.calls == 2
    # a new file in the folder counts too: a group_vars file, say
    (inventory_dir / "group_vars").mkdir()
    write(inventory_dir / "group_vars" / "all.yml", "opsbook_note: x\n")
    source.current()
    assert reader.calls == 3


def test_a_missing_inventory_is_a_503_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "hosts.yml"
    source = InventorySource(missing, frozenset({"staging"}))
    error = refused(source.current)
    assert (error.status, error.code) == (503, ErrorCode.UNAVAILABLE)
    assert str(missing) in error.message and "no such file" in error.message
    assert "RUNS_INVENTORY" in error.message
    assert str(missing) in source.problem()


def test_a_broken_inventory_is_a_503_with_the_reason_until_it_is_fixed(inventory_dir):
    hosts = inventory_dir / "hosts.yml"
    write(hosts, "all:\n  children: [unclosed\n")
    source = InventorySource(inventory_dir, frozenset({"staging"}))
    error = refused(source.current)
    assert error.status == 503 and str(inventory_dir) in error.message
    write(hosts, "all:\n  hosts:\n    web-1:\n")  # parses, but has no stacks
    error = refused(source.current)
    assert error.status == 503 and "no group 'stacks'" in error.message
    write(hosts, HOSTS_YML)
    assert source.current().resolve("web").hosts == ("web-1", "web-2", "web-3")


def test_without_an_inventory_the_ledger_still_reads_and_new_runs_get_503(tmp_path, inventory):
    """The service starts without a readable inventory: its status page and the runs already in
    the ledger are read as usual; starting a run is refused naming the file; nothing recorded."""
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    good = Store(url, fleet=inventory.current, alertmanager=FakeAlertmanager())
    run = good.create_run(ERIN, runbook="patching", stack="web")
    good.close()

    missing = tmp_path / "inventory" / "hosts.yml"
    source = InventorySource(missing, frozenset({"staging"}))
    store = Store(url, fleet=source.current, alertmanager=FakeAlertmanager())
    try:
        assert [r.id for r in store.list_runs()] == [run.id]
        assert store.get_run(run.id).stack == "web"
        error = refused(store.create_run, ERIN, runbook="reboot", stack="web")
        assert error.status == 503 and str(missing) in error.message
        assert [r.id for r in store.list_runs()] == [run.id]
        store.pause(run.id, ERIN)  # the owner's run goes on meanwhile
    finally:
        store.close()
