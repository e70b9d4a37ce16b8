"""Split a stack's hosts into the batches of a rolling run.

A rolling patch takes a few hosts out at a time so the stack keeps serving; the batches are planned
up front so the whole run (and a handoff half-way) can show which hosts come when.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from opsbook.errors import BatchError


def plan_batches(
    hosts: Sequence[str], *, size: int | None = None, percent: float | None = None
) -> list[list[str]]:
    """Cut hosts, in the order given, into batches of `size` hosts or `percent` of all hosts.

    A percentage rounds up and never gives an empty batch: 10% of 3 hosts is batches of one. The
    last batch holds what is left. Exactly one of size and percent must be given.
    """
    if isinstance(hosts, str):
        raise BatchError(f"hosts must be a list of host names, not the string {hosts!r}")
    if not hosts:
        raise BatchError("no hosts to batch; expected at least one host")
    duplicates = sorted(host for host, count in Counter(hosts).items() if count > 1)
    if duplicates:
        raise BatchError(
            f"hosts listed more than once: {', '.join(duplicates)}; expected each once"
        )
    batch_size = _batch_size(len(hosts), size=size, percent=percent)
    return [list(hosts[start : start + batch_size]) for start in range(0, len(hosts), batch_size)]


def _batch_size(host_count: int, *, size: int | None, percent: float | None) -> int:
    """Hosts per batch, validated; percentages are computed in decimal: 30% of 10 is 3, not 4."""
    if (size is None) == (percent is None):
        raise BatchError("give exactly one of size (hosts per batch) or percent (of all hosts)")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise BatchError(f"batch size {size!r} is invalid; expected a whole number >= 1")
        return size
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100:
        raise BatchError(f"batch percent {percent!r} is invalid; expected 0 < percent <= 100")
    return max(1, math.ceil(Decimal(str(percent)) * host_count / 100))
