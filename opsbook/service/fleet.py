"""What a run is, decided here: the inventory's stacks, their hosts, environments and batches.

The service reads the same Ansible inventory the engineers' containers get (mounted read-only), with
ansible-core's own parser (the `ansible-inventory --list` command), so it sees the hosts and groups
that ansible-runner will run on. A client names a stack and its options; everything else (which
hosts, which environment, whether that is production, the batches) is resolved here and recorded.
Nothing a client sends about a stack's hosts or environment is believed.

Inventory conventions (ansible/inventories/demo follows them): every child of the group `stacks`
is a stack; every child of `environments` is an environment; all the hosts of a stack are in one
environment. An environment is production unless declared otherwise (opsbook.contract.stacks).
A host's node exporter, whose `instance` label a batch's silence matches, is its variable
`opsbook_exporter`, else `<host>:9100`: the toolkit's rule (opsbook.inventory), which the health
gate asks Prometheus with.

The inventory is read again when one of its files changes (their sizes and modification times are
compared before each use), so a host that leaves a stack is seen by the next start, accept or
takeover without a restart. A broken inventory never stops the service: the status page keeps
working, and new runs, accepts and takeovers are refused (503) with the file and the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsbook.contract.stacks import is_production, stack_key, stack_name_problem
from opsbook.contract.wire import BatchOrder, ErrorCode, RunOptions, StackList, StackView
from opsbook.service.rules import Refused, bad_request

STACKS_GROUP = "stacks"
ENVIRONMENTS_GROUP = "environments"
META = "_meta"  # ansible-inventory --list's host variables: {"hostvars": {host: {var: value}}}
EXPORTER_VAR = "opsbook_exporter"
DEFAULT_EXPORTER_PORT = 9100
READ_TIMEOUT = 60.0  # seconds ansible-inventory may take


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders web-2 before web-10, as people number their hosts."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Stack:
    """A stack as resolved: its hosts (natural order), environment, and whether that is
    production. `problem` says why no run may start on it (hosts in two environments ...)."""

    name: str
    hosts: tuple[str, ...]
    environment: str = ""
    production: bool = True
    problem: str | None = None

    def view(self) -> StackView:
        return StackView(
            name=self.name,
            environment=self.environment,
            production=self.production,
            hosts=list(self.hosts),
        )


@dataclass(frozen=True)
class Fleet:
    """The inventory's stacks at one moment, and the environments declared non-production."""

    source: str
    stacks: Mapping[str, Stack]  # by name, as written in the inventory
    nonproduction: frozenset[str] = field(default_factory=frozenset)
    exporters: Mapping[str, str] = field(default_factory=dict)  # host -> its opsbook_exporter

    def instances(self, hosts: Sequence[str]) -> dict[str, str]:
        """Each host's node exporter instance (what a silence matches); Refused (409) naming a
        host that is in no stack any more: its silence would match nothing."""
        known = {host for stack in self.stacks.values() for host in stack.hosts}
        gone = [host for host in hosts if host not in known]
        if gone:
            raise Refused(
                409,
                ErrorCode.PLAN_CHANGED,
                f"{', '.join(gone)} is in no stack of the inventory {self.source} any more, so "
                "no silence can be set for it. Re-plan the run from the inventory (replan).",
            )
        return {host: self.exporters.get(host, f"{host}:{DEFAULT_EXPORTER_PORT}") for host in hosts}

    def resolve(self, name: str) -> Stack:
        """The stack called exactly `name`, ready for a run; Refused (400) naming what is wrong."""
        known = ", ".join(sorted(self.stacks)) or "none"
        if not name.strip():
            raise bad_request(f"stack: expected the name of a stack of the inventory ({known})")
        stack = self.stacks.get(name)
        if stack is None:
            alike = [s for s in self.stacks if stack_key(s) == stack_key(name)]
            if alike:
                raise bad_request(
                    f"stack {name!r} is a look-alike of the stack {alike[0]!r}: stack names are "
                    "compared after Unicode NFKC normalisation and case folding, and must be "
                    f"written exactly as in the inventory. Use {alike[0]!r}."
                )
            problem = stack_name_problem(name)
            if problem:
                raise bad_request(f"stack: {problem}; known stacks: {known}")
            raise bad_request(f"stack: unknown stack {name!r}; known stacks: {known}")
        if stack.problem:
            raise bad_request(f"stack {name!r} cannot be run: {stack.problem}")
        return stack

    def listing(self) -> StackList:
        usable = [s.view() for _, s in sorted(self.stacks.items()) if not s.problem]
        return StackList(stacks=usable, nonproduction=sorted(self.nonproduction))


def fleet_from_groups(
    groups: Mapping[str, Any], nonproduction: frozenset[str], source: str = "inventory"
) -> Fleet:
    """A Fleet from `ansible-inventory --list`'s groups ({group: {hosts: [], children: []}}),
    and the hosts' exporters from its `_meta.hostvars`."""
    for needed in (STACKS_GROUP, ENVIRONMENTS_GROUP):
        if needed not in groups:
            raise InventoryUnreadable(
                f"{source} has no group {needed!r}; expected a group {STACKS_GROUP!r} whose "
                f"children are the stacks and a group {ENVIRONMENTS_GROUP!r} whose children are "
                "the environments"
            )
    environments = {env: _members(groups, env) for env in _children(groups, ENVIRONMENTS_GROUP)}
    names = _children(groups, STACKS_GROUP)
    keys: dict[str, list[str]] = {}
    for name in names:
        keys.setdefault(stack_key(name), []).append(name)
    stacks = {}
    for name in names:
        hosts = tuple(sorted(_members(groups, name), key=natural_key))
        problem = stack_name_problem(name)
        twins = [other for other in keys[stack_key(name)] if other != name]
        if twins:
            problem = f"its name is a look-alike of the stack {twins[0]!r}; rename one of them"
        elif not hosts:
            problem = "it has no hosts"
        if problem:
            stacks[name] = Stack(name=name, hosts=hosts, problem=problem)
            continue
        placed = {host: sorted(e for e, m in environments.items() if host in m) for host in hosts}
        found = {envs[0] for envs in placed.values() if len(envs) == 1}
        if any(len(envs) != 1 for envs in placed.values()) or len(found) != 1:
            detail = "; ".join(
                f"{host} in {', '.join(envs) or 'no environment'}" for host, envs in placed.items()
            )
            problem = f"its hosts are not all in one environment ({detail})"
            stacks[name] = Stack(name=name, hosts=hosts, problem=problem)
            continue
        environment = found.pop()
        stacks[name] = Stack(
            name=name,
            hosts=hosts,
            environment=environment,
            production=is_production(environment, nonproduction),
        )
    hostvars = (groups.get(META) or {}).get("hostvars") or {}
    exporters = {
        host: str(variables[EXPORTER_VAR])
        for host, variables in hostvars.items()
        if isinstance(variables, Mapping) and variables.get(EXPORTER_VAR)
    }
    return Fleet(source=source, stacks=stacks, nonproduction=nonproduction, exporters=exporters)


def _children(groups: Mapping[str, Any], group: str) -> list[str]:
    return list((groups.get(group) or {}).get("children", []))


def _members(groups: Mapping[str, Any], group: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Every host of a group, its subgroups' included."""
    if group in seen:
        return set()
    found = set((groups.get(group) or {}).get("hosts", []))
    for child in _children(groups, group):
        found |= _members(groups, child, seen | {group})
    return found


def plan_batches(stack: Stack, options: RunOptions, *, skip: Sequence[str] = ()) -> list[list[str]]:
    """The batches of a run on `stack`: its hosts (or `options.limit` of them) in the chosen
    order, `options.batch_size` at a time, leaving out `skip` (hosts already done)."""
    unknown = [host for host in options.limit if host not in stack.hosts]
    if unknown:
        raise bad_request(
            f"options.limit: {', '.join(unknown)} not in stack {stack.name} "
            f"(its hosts: {', '.join(stack.hosts)})"
        )
    hosts = [h for h in stack.hosts if not options.limit or h in options.limit]
    if options.order is BatchOrder.REVERSE:
        hosts.reverse()
    hosts = [host for host in hosts if host not in skip]
    size = options.batch_size
    return [hosts[start : start + size] for start in range(0, len(hosts), size)]


class InventoryUnreadable(Exception):
    """The inventory cannot be read or does not follow the conventions; the message says why."""


class InventorySource:
    """The inventory on disk, read when it changed; `current()` is what the store asks."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        nonproduction: frozenset[str],
        *,
        reader: Callable[[Path], Mapping[str, Any]] | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        self.nonproduction = nonproduction
        self._reader = reader or read_groups
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._fleet: Fleet | None = None
        self._error: str | None = None

    def current(self) -> Fleet:
        """The fleet as the inventory says now; Refused (503) naming the file if unreadable."""
        with self._lock:
            signature = _signature(self.path)
            if signature != self._seen:
                self._seen = signature
                try:
                    groups = self._reader(self.path)
                    self._fleet = fleet_from_groups(groups, self.nonproduction, str(self.path))
                    self._error = None
                except InventoryUnreadable as error:
                    self._fleet, self._error = None, str(error)
            if self._fleet is None:
                raise Refused(
                    503,
                    ErrorCode.UNAVAILABLE,
                    f"the runs service cannot read the inventory {self.path}: {self._error}. "
                    "No run can start, be accepted or taken over until it is fixed "
                    "(setting RUNS_INVENTORY); the status page still works.",
                )
            return self._fleet

    def problem(self) -> str | None:
        """Why the inventory cannot be used now (None: it can); for the start-up log."""
        try:
            self.current()
        except Refused as refused:
            return refused.message
        return None


def _signature(path: Path) -> tuple:
    """Sizes and modification times of every file of the inventory: changes when it does."""
    if not path.exists():
        return ("missing",)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def read_groups(path: Path) -> Mapping[str, Any]:
    """The inventory's groups, as ansible-core parses them (`ansible-inventory --list`), and
    under `_meta` the hosts' variables."""
    if not path.exists():
        raise InventoryUnreadable("no such file or folder")
    beside = Path(sys.executable).with_name("ansible-inventory")  # the same venv as ours
    command = str(beside) if beside.exists() else shutil.which("ansible-inventory")
    if command is None:
        raise InventoryUnreadable("the ansible-inventory command is not installed")
    with tempfile.TemporaryDirectory(prefix="opsbook-inventory-") as scratch:
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "ANSIBLE_LOCAL_TEMP": scratch,
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true",
            "ANSIBLE_NOCOLOR": "true",
        }
        try:
            done = subprocess.run(
                [command, "--list", "--inventory", str(path)],
                capture_output=True,
                text=True,
                env=environment,
                cwd=scratch,
                timeout=READ_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InventoryUnreadable(f"ansible-inventory took over {READ_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise InventoryUnreadable(_first_error(done.stderr))
    try:
        listing = json.loads(done.stdout)
    except ValueError as error:
        raise InventoryUnreadable(f"ansible-inventory gave no JSON ({error})") from None
    return listing  # with _meta: the hosts' variables (their exporters)


def _first_error(stderr: str) -> str:
    """The lines of ansible-inventory's complaint that say what is wrong, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if line.startswith(("[ERROR]", "[WARNING]: Failed", "Origin:", "YAML parsing failed"))
    ]
    return " | ".join(useful[:4] or lines[-3:]) or "ansible-inventory failed"
