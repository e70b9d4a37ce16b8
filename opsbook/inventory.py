"""The fleet as the Ansible inventory describes it: stacks, their hosts and their environment.

The inventory is read with ansible-core's own InventoryManager and VariableManager, so a runbook
sees exactly the hosts, groups and variables that ansible-runner will later run on; a parser of our
own could disagree with Ansible in the one case that matters.

Conventions (the demo inventory, ansible/inventories/demo, follows them):
- every child of the group ``stacks`` is a stack: the unit a runbook patches together;
- every child of the group ``environments`` is an environment, and each host of a stack is in the
  same one.

Whether an environment is production is not this module's to say: the runs service decides it, from
the one setting that declares the non-production environments (opsbook.contract.stacks), and the
toolkit asks the service (RunsClient.stacks, a run's `production`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# ansible-core 2.19's own way to capture warnings instead of printing them (its task executor uses
# it). It is private API: a newer ansible-core may move it, and the unit tests will say so.
from ansible._internal._display_utils import DeferredWarningContext, format_message
from ansible.inventory.group import Group
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.manager import VariableManager

from opsbook.errors import InventoryError

STACKS_GROUP = "stacks"
ENVIRONMENTS_GROUP = "environments"
EXPORTER_VAR = "opsbook_exporter"
DEFAULT_EXPORTER_PORT = 9100

# ansible-core only warns when a source cannot be parsed (and then carries on with an empty
# inventory); these are the texts ansible-core 2.19 gives those warnings.
_UNPARSED_SOURCE = re.compile(r"^Unable to parse (?P<source>.+) as an inventory source$")
_PLUGIN_FAILURE_PREFIX = "Failed to parse inventory with "
_ORIGIN_WITH_LINE = re.compile(r"^Origin: (?P<where>\S+:\d+(?::\d+)?)$", re.MULTILINE)


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders web-2 before web-10, as people number their hosts."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _plugin_failure_reason(warning: Any) -> str:
    """One line saying which inventory plugin failed and why, with the file position if known."""
    formatted = format_message(warning, False)
    reason = formatted.splitlines()[0].removeprefix(_PLUGIN_FAILURE_PREFIX)
    origin = _ORIGIN_WITH_LINE.search(formatted)
    return f"{reason} (at {origin['where']})" if origin else reason


def _unparsed_sources(warnings: Iterable[Any]) -> list[str]:
    """Describe each inventory source ansible-core gave up on, with every plugin's reason.

    ansible-core reports each plugin's failure first and then that the source could not be parsed,
    so the reasons seen since the previous unparsed source belong to the next one.
    """
    problems: list[str] = []
    reasons: list[str] = []
    for warning in warnings:
        message = warning.event.msg
        if message.startswith(_PLUGIN_FAILURE_PREFIX):
            reasons.append(_plugin_failure_reason(warning))
        elif unparsed := _UNPARSED_SOURCE.match(message):
            because = "; ".join(reasons) or "no inventory plugin accepts this kind of file"
            problems.append(f"{unparsed['source']}: {because}")
            reasons = []
    return problems


class Inventory:
    """A parsed Ansible inventory, asked about in Opsbook's terms (stacks, environments, hosts)."""

    def __init__(self, path: Path, manager: InventoryManager, variables: VariableManager) -> None:
        """Use Inventory.load; this only wraps what it has already parsed and checked."""
        self.path = path
        self._manager = manager
        self._variables = variables

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Inventory:
        """Parse an inventory file or directory, failing loudly where ansible-core only warns.

        An unparsable source makes ansible-core print a warning and continue with an empty
        inventory; a runbook would then offer no stacks, or silently lose some hosts. Warnings are
        captured instead of printed (they would clutter the notebook) and a failed source raises.
        """
        source = Path(path).expanduser().resolve()
        if not source.exists():
            raise InventoryError(
                f"inventory '{path}' does not exist; expected an Ansible inventory file or folder"
            )
        loader = DataLoader()
        with DeferredWarningContext(variables={}) as captured:
            manager = InventoryManager(loader=loader, sources=[str(source)])
        problems = _unparsed_sources(captured.get_warnings())
        if problems:
            raise InventoryError(
                f"cannot parse inventory '{source}'; expected YAML or INI Ansible inventory. "
                + " | ".join(problems)
            )
        return cls(source, manager, VariableManager(loader=loader, inventory=manager))

    def stacks(self) -> list[str]:
        """Names of the stacks: the children of the group 'stacks'."""
        return sorted(group.name for group in self._group(STACKS_GROUP).child_groups)

    def environments(self) -> list[str]:
        """Names of the environments: the children of the group 'environments'."""
        return sorted(group.name for group in self._group(ENVIRONMENTS_GROUP).child_groups)

    def hosts(self, stack: str) -> list[str]:
        """The stack's hosts (those of its subgroups included), in natural order."""
        return sorted((host.name for host in self._stack(stack).get_hosts()), key=natural_key)

    def environment(self, stack: str) -> str:
        """The one environment that every host of the stack is in.

        A stack is patched as one unit under one set of rules, so a stack that straddles
        environments (or has hosts in none) is an inventory mistake to fix, not to guess around.
        """
        hosts = self.hosts(stack)
        if not hosts:
            raise InventoryError(f"stack '{stack}' has no hosts; expected at least one")
        members = {
            env.name: {host.name for host in env.get_hosts()}
            for env in self._group(ENVIRONMENTS_GROUP).child_groups
        }
        placed = {host: sorted(env for env in members if host in members[env]) for host in hosts}
        sole_environments = {envs[0] for envs in placed.values() if len(envs) == 1}
        if any(len(envs) != 1 for envs in placed.values()) or len(sole_environments) != 1:
            detail = "; ".join(
                f"{host} in {', '.join(envs) or 'no environment'}" for host, envs in placed.items()
            )
            raise InventoryError(
                f"stack '{stack}' is not in exactly one environment ({detail}); expected all "
                f"its hosts in one of: {', '.join(sorted(members))}"
            )
        return sole_environments.pop()

    def host_vars(self, host: str) -> dict[str, Any]:
        """The variables Ansible gives the host from the inventory (group_vars/host_vars included).

        Ansible's magic variables (inventory_hostname, group_names ...) are among them. Values are
        as written, not templated: a "{{ ... }}" value comes back as that text.
        """
        self.check_hosts([host])
        return self._variables.get_vars(host=self._manager.hosts[host], include_hostvars=False)

    def exporter_instance(self, host: str) -> str:
        """The host's node exporter address as Prometheus labels it (its 'instance' label).

        Taken from the host variable 'opsbook_exporter', else '<host>:9100', the exporter's default
        port under the inventory name.
        """
        return str(self.host_vars(host).get(EXPORTER_VAR, f"{host}:{DEFAULT_EXPORTER_PORT}"))

    def exporter_instances(self, hosts: Iterable[str]) -> dict[str, str]:
        """Each host's exporter instance, keyed by host: what a health gate needs."""
        return {host: self.exporter_instance(host) for host in hosts}

    def check_hosts(self, hosts: Sequence[str]) -> None:
        """Raise InventoryError naming every host that is not in the inventory.

        The implicit 'localhost' that Ansible adds to any inventory does not count as a host.
        """
        unknown = [host for host in hosts if host not in self._manager.hosts]
        if unknown:
            raise InventoryError(
                f"unknown host{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"expected hosts of inventory '{self.path}' ({len(self._manager.hosts)} hosts)"
            )

    def _group(self, name: str) -> Group:
        """A group the Opsbook conventions need ('stacks', 'environments', a stack)."""
        if name not in self._manager.groups:
            raise InventoryError(
                f"inventory '{self.path}' has no group '{name}'; expected a group "
                f"'{STACKS_GROUP}' whose children are the stacks and a group "
                f"'{ENVIRONMENTS_GROUP}' whose children are the environments"
            )
        return self._manager.groups[name]

    def _stack(self, stack: str) -> Group:
        if stack not in self.stacks():
            raise InventoryError(
                f"unknown stack '{stack}'; known stacks: {', '.join(self.stacks())}"
            )
        return self._group(stack)
