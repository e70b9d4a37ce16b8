"""The fleet the runs service's unit tests run on: an inventory the tests can change.

The service resolves every run from the inventory (opsbook.service.fleet), so the tests need one.
`INVENTORY` is shaped as `ansible-inventory --list` prints it (what fleet.read_groups returns):

- stack `web`: web-1 ... web-5, in `staging` (declared non-production);
- stack `db`: db-1 ... db-3, in `production`;
- stack `mixed`: app-1 (staging) and app-2 (production): its hosts span two environments, so no
  run may start on it.

`FakeInventory` is what a Store is given as its `fleet`; a test edits `groups` (a host leaves a
stack, a stack moves to another environment) or breaks it, and the next call sees that, as
InventorySource sees the files change. Tests on real inventory files (ansible-inventory) are in
test_runs_fleet.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fake_alertmanager import FakeAlertmanager

from opsbook.contract.wire import ErrorCode
from opsbook.service.fleet import Fleet, fleet_from_groups
from opsbook.service.rules import Refused

NONPRODUCTION = frozenset({"staging"})
WEB = [f"web-{n}" for n in range(1, 6)]
DB = [f"db-{n}" for n in range(1, 4)]

INVENTORY: dict[str, Any] = {
    "all": {"children": ["ungrouped", "stacks", "environments"]},
    "ungrouped": {},
    "stacks": {"children": ["web", "db", "mixed"]},
    "environments": {"children": ["staging", "production"]},
    "web": {"hosts": list(WEB)},
    "db": {"hosts": list(DB)},
    "mixed": {"hosts": ["app-1", "app-2"]},
    "staging": {"hosts": [*WEB, "app-1"]},
    "production": {"hosts": [*DB, "app-2"]},
}


class FakeInventory:
    """The inventory as the store sees it (`current` is the Store's `fleet`), changed by tests."""

    def __init__(
        self,
        groups: dict[str, Any] | None = None,
        nonproduction: frozenset[str] = NONPRODUCTION,
    ) -> None:
        self.groups = copy.deepcopy(INVENTORY if groups is None else groups)
        self.nonproduction = nonproduction
        self.broken: str | None = None  # set: the inventory cannot be read (503)
        self.reads = 0

    def current(self) -> Fleet:
        self.reads += 1
        if self.broken:
            raise Refused(
                503,
                ErrorCode.UNAVAILABLE,
                f"the runs service cannot read the inventory test-inventory: {self.broken}",
            )
        return fleet_from_groups(self.groups, self.nonproduction, "test-inventory")

    def add_stack(self, name: str, hosts: list[str], environment: str) -> None:
        """A new stack of `hosts`, all in `environment` (declared if new)."""
        self.groups["stacks"]["children"].append(name)
        self.groups[name] = {"hosts": list(hosts)}
        if environment not in self.groups["environments"]["children"]:
            self.groups["environments"]["children"].append(environment)
        for host in hosts:
            self.add_host(host, environment)

    def remove_host(self, host: str, group: str) -> None:
        """`host` leaves `group` (a stack or an environment)."""
        self.groups[group]["hosts"].remove(host)

    def add_host(self, host: str, group: str) -> None:
        self.groups.setdefault(group, {}).setdefault("hosts", []).append(host)

    def move_hosts(self, hosts: list[str], *, source: str, target: str) -> None:
        """Move hosts from one environment (or stack) to another, declaring it if new."""
        for host in hosts:
            self.remove_host(host, source)
            self.add_host(host, target)
        children = self.groups["environments"]["children"]
        if source in children and target not in children:
            children.append(target)


@pytest.fixture
def inventory() -> FakeInventory:
    """A fresh copy of INVENTORY for each test."""
    return FakeInventory()


@pytest.fixture
def alertmanager() -> FakeAlertmanager:
    """Where the store sets and expires batches' silences (in memory)."""
    return FakeAlertmanager()
