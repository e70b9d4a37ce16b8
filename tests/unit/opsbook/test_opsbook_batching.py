"""Batching: how a rolling run cuts a stack into batches."""

from __future__ import annotations

import pytest

from opsbook.batching import plan_batches
from opsbook.errors import BatchError

HOSTS = [f"web-{n}" for n in range(1, 11)]


@pytest.mark.parametrize(
    ("size", "expected_sizes"),
    [(1, [1] * 10), (3, [3, 3, 3, 1]), (5, [5, 5]), (10, [10]), (25, [10])],
)
def test_fixed_size_batches(size: int, expected_sizes: list[int]) -> None:
    batches = plan_batches(HOSTS, size=size)
    assert [len(batch) for batch in batches] == expected_sizes
    assert [host for batch in batches for host in batch] == HOSTS


@pytest.mark.parametrize(
    ("percent", "expected_sizes"),
    [
        (10, [1] * 10),
        (30, [3, 3, 3, 1]),  # exactly 3: decimal arithmetic, not 3.0000000000000004 -> 4
        (25, [3, 3, 3, 1]),  # 2.5 rounds up
        (33.3, [4, 4, 2]),
        (100, [10]),
        (0.5, [1] * 10),  # never an empty batch
    ],
)
def test_percent_batches_round_up(percent: float, expected_sizes: list[int]) -> None:
    assert [len(batch) for batch in plan_batches(HOSTS, percent=percent)] == expected_sizes


def test_order_is_kept() -> None:
    hosts = ["db-3", "db-1", "db-2"]
    assert plan_batches(hosts, size=2) == [["db-3", "db-1"], ["db-2"]]


def test_one_host_one_batch() -> None:
    assert plan_batches(["db-1"], percent=50) == [["db-1"]]


@pytest.mark.parametrize(
    ("hosts", "options", "message"),
    [
        (HOSTS, {}, "exactly one of size"),
        (HOSTS, {"size": 2, "percent": 20}, "exactly one of size"),
        (HOSTS, {"size": 0}, r"batch size 0 is invalid; expected a whole number >= 1"),
        (HOSTS, {"size": 2.5}, "batch size 2.5 is invalid"),
        (HOSTS, {"size": True}, "batch size True is invalid"),
        (HOSTS, {"percent": 0}, r"batch percent 0 is invalid; expected 0 < percent <= 100"),
        (HOSTS, {"percent": 101}, "batch percent 101 is invalid"),
        (HOSTS, {"percent": float("nan")}, "batch percent nan is invalid"),
        ([], {"size": 1}, "no hosts to batch"),
        (["web-1", "web-2", "web-1"], {"size": 1}, "hosts listed more than once: web-1"),
        ("web-1", {"size": 1}, "not the string 'web-1'"),
    ],
)
def test_invalid_plans_are_refused(hosts: list[str], options: dict, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        plan_batches(hosts, **options)
