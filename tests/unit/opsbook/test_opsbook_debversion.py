"""Debian versions: the order dpkg gives, not the order strings or tuples of numbers give."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest

from opsbook.debversion import DebianVersion, compare_versions, version_key
from opsbook.errors import VersionError

# Oldest first; each step checked with `dpkg --compare-versions a lt b` (dpkg 1.21, bookworm).
ORDERED = [
    "~~",
    "~~a",
    "~",
    "0~rc1",
    "0",
    "0.0.0",
    "0.1~",
    "0.1",
    "1.0~rc1",
    "1.0~rc1-1",
    "1.0",
    "1.0-0.1",
    "1.0-1",
    "1.0a",
    "1.0+b1",
    "1.0.1",
    "1.1",
    "1.9",
    "1.10",
    "1.10a",
    "2.3.0",
    "2.3.1",
    "2.4.0",
    "2.36-9+deb12u9",
    "2.36-9+deb12u14",
    "10",
    "1:0.1",
    "1:0.9-1",
    "2:0",
]
# Spelled differently, equal for dpkg.
EQUAL = [("1.0", "1.00"), ("1.0", "1.0-0"), ("0:1.0", "1.0"), ("1.0a", "1.0a0"), ("001", "1")]


def test_every_pair_compares_as_dpkg_orders_them() -> None:
    for (i, a), (j, b) in itertools.product(enumerate(ORDERED), repeat=2):
        expected = (i > j) - (i < j)
        assert compare_versions(a, b) == expected, (a, b)


def test_sorting_by_version_key_gives_dpkg_order() -> None:
    shuffled = ORDERED[::2] + ORDERED[1::2][::-1]
    assert sorted(shuffled, key=version_key) == ORDERED


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_equal_spellings_are_equal_and_hash_alike(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0
    assert DebianVersion.parse(a) == DebianVersion.parse(b)
    assert len({DebianVersion.parse(a), DebianVersion.parse(b)}) == 1


def test_the_cases_string_order_gets_wrong() -> None:
    assert "1.10" < "1.9" and compare_versions("1.10", "1.9") == 1
    assert "1.1~rc1" > "1.1" and compare_versions("1.1~rc1", "1.1") == -1
    assert compare_versions("1:0.1", "9.9") == 1  # the epoch wins


def test_parts_and_text() -> None:
    version = DebianVersion.parse("1:2.38.1-5+deb12u3")
    assert (version.epoch, version.upstream, version.revision) == (1, "2.38.1", "5+deb12u3")
    assert str(version) == "1:2.38.1-5+deb12u3"
    # the last hyphen starts the revision; colons after the first belong to upstream
    assert DebianVersion.parse("1.0-beta-2").upstream == "1.0-beta"
    assert DebianVersion.parse("2:1:3").upstream == "1:3"
    assert str(DebianVersion.parse("0:1.0")) == "1.0"


def test_a_very_long_number_compares_without_overflow() -> None:
    assert compare_versions("1." + "9" * 5000, "1." + "1" + "0" * 5000) == -1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "version is empty"),
        ("  ", "version is empty"),
        ("1.0 beta", "contains whitespace"),
        ("a:1.0", "epoch 'a' is not a number"),
        ("1.0-", "revision after '-' is empty"),
        ("1:", "upstream version is empty"),
        ("-1", "upstream version is empty"),
        ("1.0_1", "invalid characters '_'"),
        ("1:1.0-1:2", "invalid characters ':'"),
    ],
)
def test_malformed_versions_are_refused(text: str, message: str) -> None:
    with pytest.raises(VersionError, match=message):
        DebianVersion.parse(text)


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg to compare against")
def test_dpkg_agrees_on_each_step() -> None:
    for a, b in itertools.pairwise(ORDERED):
        run = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], capture_output=True)
        assert run.returncode == 0, f"dpkg says not {a} < {b}"
    for a, b in EQUAL:
        assert subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
