"""Stop a running ansible-playbook so that nothing of it carries on.

ansible-runner cancels and times out with SIGKILL to ansible-playbook's process group. That misses
ansible-core's workers: each runs its task in a session of its own (os.setsid), so after a
"canceled" play they keep patching, or hang forever on a pipe to their dead parent.

A SIGTERM to ansible-playbook is what ansible expects (it passes it on to its workers, which kill
their own process groups), but ansible forks a worker per host and task: a worker forked just as
the signal arrives is not yet known to its parent and is left running. So ansible-playbook is
frozen (SIGSTOP) while its children are found and sent SIGTERM, then sent SIGTERM itself and let
go (SIGCONT): a frozen process forks nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

# How long ansible-playbook gets to end after SIGTERM before ansible-runner is told to kill it.
_GRACE_SECONDS = 10.0


class PlayStopper:
    """ansible-runner's cancel callback for one run: False while the play may go on.

    A stop is wanted when the caller's `cancel` event is set, `request()` is called (an
    interrupt, a failing event consumer) or `timeout` seconds have passed; `reason` then says
    'canceled' or 'timeout'. The pid of ansible-playbook comes from the run's events (`saw`);
    before the first event there is no worker, and ansible-runner's own kill is enough.
    """

    def __init__(self, cancel: threading.Event | None, timeout: float | None) -> None:
        self._cancel = cancel
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._requested = threading.Event()
        self._ansible_pid: int | None = None
        self._terminated_at: float | None = None
        self.reason: str | None = None

    def request(self) -> None:
        """Stop the play as cancelled; safe to call from any thread."""
        self._requested.set()

    def saw(self, event: dict[str, Any]) -> None:
        """Note ansible-playbook's pid, which every ansible-runner event carries."""
        if self._ansible_pid is None and isinstance(event.get("pid"), int):
            self._ansible_pid = event["pid"]

    def __call__(self) -> bool:
        """Whether ansible-runner should kill the play now (after a gentle stop had its chance)."""
        if self.reason is None:
            if self._requested.is_set() or (self._cancel is not None and self._cancel.is_set()):
                self.reason = "canceled"
            elif self._deadline is not None and time.monotonic() > self._deadline:
                self.reason = "timeout"
            else:
                return False
        if self._ansible_pid is None:
            return True
        if self._terminated_at is None:
            self._terminated_at = time.monotonic()
            if not terminate_ansible(self._ansible_pid):
                return True
        return time.monotonic() - self._terminated_at > _GRACE_SECONDS


def terminate_ansible(pid: int) -> bool:
    """SIGTERM ansible-playbook and every child it has, with it frozen meanwhile.

    Returns False if the process was already gone.
    """
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    try:
        for child in children_of(pid):
            _signal_if_alive(child, signal.SIGTERM)
        _signal_if_alive(pid, signal.SIGTERM)
    finally:
        _signal_if_alive(pid, signal.SIGCONT)
    return True


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid`, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # after "pid (command name)" come the state and the parent's pid
            state_and_parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(state_and_parent[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _signal_if_alive(pid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signum)
