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


class SilenceError(OpsbookError):
    """An Alertmanager silence cannot be built, created or expired."""


class PlayError(OpsbookError):
    """A playbook run cannot be started as asked (missing playbook, unwritable runs folder ...)."""
