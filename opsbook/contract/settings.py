"""One settings registry for the hub and the runs service: every setting declared once, checked.

A component declares its settings as a tuple of `Setting` (name, parser, what it is for, default)
and calls `load(SETTINGS, os.environ)` before anything starts. Every setting is parsed; if any is
missing or wrong, `SettingsError` carries one line per bad setting, in one format for every
component:

    NAME: required, not set (what it is for)
    NAME: expected <what the parser wants>, got <the value, or <hidden> for a secret>

A secret's value is never echoed, nor is the password of a URL (`scheme://user:password@host`):
it is shown as `***`. An empty value counts as "not set" for a setting with a default (compose
passes `${NAME:-}`); for a required one it goes to the parser, which names what it expected.

A parser takes the raw string and returns the value, or raises ValueError(<what it expected>).
The common ones are here; a component keeps its own beside its declarations. Standard library
only: the hub, the runs service and the toolkit share this package and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

HIDDEN = "<hidden>"


class SettingsError(ValueError):
    """One line per bad setting, each naming the variable and what it expected."""


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    doc: str
    default: str | None = None  # None: required


def load(
    settings: Iterable[Setting],
    environ: Mapping[str, str],
    *,
    only: Collection[str] | None = None,
    secret_names: Collection[str] = frozenset(),
) -> dict[str, Any]:
    """Parse `settings` from `environ`; raise SettingsError listing each bad one, in their order.

    `only`: parse just these (a name that is not declared is a programming error: ValueError);
    None: all of them. `secret_names`: settings whose values never appear in the message.
    """
    settings = tuple(settings)
    if only is not None and (unknown := set(only) - {s.name for s in settings}):
        raise ValueError(f"not declared settings: {sorted(unknown)}")
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in settings:
        if only is not None and setting.name not in only:
            continue
        raw = environ.get(setting.name)
        if raw is None or (raw == "" and setting.default is not None):
            raw = setting.default
        if raw is None:
            problems.append(f"{setting.name}: required, not set ({setting.doc})")
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as expected:
            shown = HIDDEN if setting.name in secret_names else repr(mask_password(raw))
            problems.append(f"{setting.name}: expected {expected}, got {shown}")
    if problems:
        raise SettingsError("\n".join(problems))
    return values


_URL_PASSWORD = re.compile(r"://([^:/@\s]*):[^/\s]*@")


def mask_password(raw: str) -> str:
    """`raw` with the password of any URL in it replaced by *** (user kept: it helps)."""
    return _URL_PASSWORD.sub(r"://\1:***@", raw)


# --- parsers: each takes the raw string and returns the value, or raises ValueError(expected) ---


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("a non-empty value")
    return raw.strip()


def url(raw: str) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("an http(s) URL such as https://host.example.com/path")
    return raw.strip()


def optional_url(raw: str) -> str:
    """An http(s) URL, or empty for none."""
    return url(raw) if raw.strip() else ""


def secret(min_length: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if len(raw.strip()) < min_length:
            raise ValueError(f"a secret of at least {min_length} characters")
        return raw.strip()

    return parse


def positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError("a whole number above 0")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return value

    return parse


def positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError("a number above 0, such as 1.5")
    return value


def names(raw: str) -> tuple[str, ...]:
    """One or more names separated by spaces or commas, in order, each once."""
    items = tuple(dict.fromkeys(raw.replace(",", " ").split()))
    if not items:
        raise ValueError("one or more names separated by spaces")
    return items


def absolute_path(raw: str) -> str:
    if not raw.strip().startswith("/"):
        raise ValueError("an absolute path")
    return raw.strip()


def optional_absolute_path(raw: str) -> str:
    """An absolute path, or empty for none."""
    return absolute_path(raw) if raw.strip() else ""


# Key types a host CA may have, and how many length-prefixed fields their key blob holds
# (RFC 4253 6.6, RFC 5656 3.1, RFC 8709 4: the type's name, then the key's own numbers).
SSH_KEY_FIELDS = {
    "ssh-ed25519": 2,
    "ssh-rsa": 3,
    "ecdsa-sha2-nistp256": 3,
    "ecdsa-sha2-nistp384": 3,
    "ecdsa-sha2-nistp521": 3,
}


def _ssh_fields(blob: bytes) -> list[bytes]:
    """A key blob's length-prefixed fields; ValueError unless it is exactly that."""
    found = []
    while blob:
        if len(blob) < 4:
            raise ValueError("truncated")
        (length,) = struct.unpack(">I", blob[:4])
        if len(blob) < 4 + length:
            raise ValueError("truncated")
        found.append(blob[4 : 4 + length])
        blob = blob[4 + length :]
    return found


def optional_ssh_public_key(raw: str) -> str:
    """One OpenSSH public key line (type, base64 key, optional comment), or empty: none.

    Checked as far as it can be without a crypto library: a known key type, base64 that decodes
    into that type's fields and nothing more (a truncated or pasted-together line fails here,
    not at the first ssh in an engineer's terminal). The comment is dropped.
    """
    line = raw.strip()
    if not line:
        return ""
    expected = "one OpenSSH public key line such as 'ssh-ed25519 AAAA... host-ca' (host_ca.pub)"
    words = line.split()
    if "\n" in line or len(words) < 2 or words[0] not in SSH_KEY_FIELDS:
        raise ValueError(expected)
    try:
        fields = _ssh_fields(base64.b64decode(words[1], validate=True))
    except (binascii.Error, ValueError):
        raise ValueError(expected) from None
    if len(fields) != SSH_KEY_FIELDS[words[0]] or fields[0] != words[0].encode():
        raise ValueError(expected)
    if words[0] == "ssh-ed25519" and len(fields[1]) != 32:
        raise ValueError(expected)
    return f"{words[0]} {words[1]}"
