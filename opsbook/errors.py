"""Errors a user can cause, and fix, when driving Opsbook from a runbook.

They share one base class so a notebook cell or a widget can catch every user-fixable problem in one
place and show its message, while real bugs still surface as ordinary tracebacks. Each message names
what was wrong and what was expected.
"""


class OpsbookError(Exception):
    """A problem in what the user asked for or configured, explained in the message."""


class InventoryError(OpsbookError):
    """The Ansible inventory is missing, unparsable, or lacks the stack/host that was asked for."""


class BatchError(OpsbookError):
    """A rolling run's batches cannot be planned from the hosts and sizes given."""


class HealthError(OpsbookError):
    """A health check or gate is set up wrongly, or a Prometheus range query cannot be answered."""


class PlayError(OpsbookError):
    """A playbook run cannot be started as asked (missing playbook, unwritable runs folder ...)."""


class ConfigError(OpsbookError):
    """A runbook session's settings (environment variables) are missing or wrong.

    `problems` maps each bad variable to what is wrong with it; the message has one line each.
    """

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        lines = [f"  {name}: {problem}" for name, problem in sorted(self.problems.items())]
        super().__init__(
            "opsbook settings are wrong; fix the environment, then restart the kernel:\n"
            + "\n".join(lines)
        )


class VersionError(OpsbookError):
    """A Debian version string is malformed."""


class ErrataError(OpsbookError):
    """The package repository's indexes cannot be read, or errata cannot be listed or chosen."""
