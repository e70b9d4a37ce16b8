"""Debian package versions, compared exactly as dpkg compares them.

A version is ``[epoch:]upstream[-revision]``. The epoch is compared as a number first; then the
upstream version, then the revision, each with dpkg's algorithm: alternating runs of non-digits
(compared character by character, where ``~`` sorts before everything, even the end of the
string, and letters sort before other characters) and runs of digits (compared as numbers). So
``1.0~rc1 < 1.0 < 1.0a < 1.0+b1`` and ``1:0.9 > 2.0``. The tests hold orderings that
``dpkg --compare-versions`` gives.

String comparison gets these wrong in ways that matter to patching: "2.10" is newer than "2.9",
and "1.1~rc1" is older than "1.1".
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

from opsbook.errors import VersionError

_DIGITS = frozenset(string.digits)
_LETTERS = frozenset(string.ascii_letters)
# What dpkg accepts (it only warns about other characters; a repository's index never has them).
_UPSTREAM_CHARS = frozenset(string.ascii_letters + string.digits + ".+~-:")
_REVISION_CHARS = frozenset(string.ascii_letters + string.digits + ".+~")


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class DebianVersion:
    """A parsed version; compares (and hashes) by dpkg's rules, so "1.0" == "0:1.0-0"."""

    epoch: int
    upstream: str
    revision: str

    @classmethod
    def parse(cls, text: str) -> DebianVersion:
        """Split ``[epoch:]upstream[-revision]``; VersionError says what is malformed."""
        if not isinstance(text, str):
            raise VersionError(f"version {text!r} is not a string")
        version = text.strip()
        if not version:
            raise VersionError("version is empty; expected e.g. 1.2-3")
        if any(char.isspace() for char in version):
            raise VersionError(f"version {text!r} contains whitespace")
        epoch = 0
        if ":" in version:
            epoch_text, version = version.split(":", 1)
            if not epoch_text.isascii() or not epoch_text.isdigit():
                raise VersionError(f"version {text!r}: epoch {epoch_text!r} is not a number")
            epoch = int(epoch_text)
        upstream, revision = version, ""
        if "-" in version:
            upstream, revision = version.rsplit("-", 1)
            if not revision:
                raise VersionError(f"version {text!r}: revision after '-' is empty")
        if not upstream:
            raise VersionError(f"version {text!r}: upstream version is empty")
        bad = sorted(set(upstream) - _UPSTREAM_CHARS) + sorted(set(revision) - _REVISION_CHARS)
        if bad:
            raise VersionError(f"version {text!r} contains invalid characters {''.join(bad)!r}")
        return cls(epoch, upstream, revision)

    def __str__(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        revision = f"-{self.revision}" if self.revision else ""
        return f"{epoch}{self.upstream}{revision}"

    def _compare(self, other: DebianVersion) -> int:
        if self.epoch != other.epoch:
            return -1 if self.epoch < other.epoch else 1
        return _verrevcmp(self.upstream, other.upstream) or _verrevcmp(
            self.revision, other.revision
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DebianVersion):
            return NotImplemented
        return self._compare(other) == 0

    def __lt__(self, other: DebianVersion) -> bool:
        if not isinstance(other, DebianVersion):
            return NotImplemented
        return self._compare(other) < 0

    def __hash__(self) -> int:
        return hash((self.epoch, _canonical(self.upstream), _canonical(self.revision)))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version a is older than, the same as, or newer than version b."""
    difference = DebianVersion.parse(a)._compare(DebianVersion.parse(b))
    return (difference > 0) - (difference < 0)


def version_key(text: str) -> DebianVersion:
    """Sort key: sorted(versions, key=version_key) orders them oldest first, as dpkg does."""
    return DebianVersion.parse(text)


def _order(char: str) -> int:
    """dpkg's weight of a character in a non-digit run ('' is the end of the string)."""
    if char == "~":
        return -1
    if not char or char in _DIGITS:
        return 0
    if char in _LETTERS:
        return ord(char)
    return ord(char) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's verrevcmp (lib/dpkg/version.c): negative, zero or positive."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            ac = _order(a[i] if i < len(a) else "")
            bc = _order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        start_i, start_j = i, j
        while i < len(a) and a[i] in _DIGITS:
            i += 1
        while j < len(b) and b[j] in _DIGITS:
            j += 1
        # as numbers, without int(): a run of digits may be longer than int() accepts
        number_a, number_b = a[start_i:i].lstrip("0"), b[start_j:j].lstrip("0")
        if len(number_a) != len(number_b):
            return len(number_a) - len(number_b)
        if number_a != number_b:
            return -1 if number_a < number_b else 1
    return 0


def _canonical(part: str) -> tuple[tuple[str, str], ...]:
    """(non-digits, digits without leading zeros) pairs, minus trailing ('', '')s.

    Two parts compare equal exactly when these are equal ("1.0" and "1.00", "" and "0"), so
    equal versions hash alike.
    """
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(part):
        start = i
        while i < len(part) and part[i] not in _DIGITS:
            i += 1
        text = part[start:i]
        start = i
        while i < len(part) and part[i] in _DIGITS:
            i += 1
        pairs.append((text, part[start:i].lstrip("0")))
    while pairs and pairs[-1] == ("", ""):
        pairs.pop()
    return tuple(pairs)
