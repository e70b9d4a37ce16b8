"""Stack names and environments: one rule each, used by the service, the hub and the toolkit.

Stack names. A stack is the unit a run locks ("one run per runbook and stack"), so two spellings of
one stack must never be two locks. A stack name is 1 to 63 characters of lower-case ASCII letters,
digits, '-', '_' and '.', starting with a letter or digit (STACK_NAME). Names are compared by
their `stack_key`: Unicode NFKC, then case folding; so 'DB' and the full-width 'db' (U+FF44
U+FF42) have the key of 'db', and the service refuses them as look-alikes of 'db' instead of
locking them apart. A name with any other character (a zero-width space, say) is refused outright.

Environments. Only the environments a team declares non-production (the setting
OPSBOOK_NONPRODUCTION_ENVIRONMENTS) are non-production; every other environment, a misspelt or a
new one included, counts as production and needs the on-call scope. Forgetting to declare an
environment therefore asks for too much permission, never too little (fail closed).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
STACK_NAME_RULE = (
    "1 to 63 lower-case letters, digits, '-', '_' or '.', starting with a letter or a digit"
)

# The setting that declares the non-production environments (space- or comma-separated names).
NONPRODUCTION_SETTING = "OPSBOOK_NONPRODUCTION_ENVIRONMENTS"


def stack_key(name: str) -> str:
    """The form two stack names are compared in: NFKC, case-folded, outer blanks removed."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def stack_name_problem(name: str) -> str | None:
    """Why `name` is not a valid stack name, or None if it is."""
    if STACK_NAME.match(name):
        return None
    return f"{name!r} is not a stack name: expected {STACK_NAME_RULE}"


def environment_names(raw: str) -> frozenset[str]:
    """The setting's value as a set of environment names (case-folded)."""
    return frozenset(item.casefold() for item in raw.replace(",", " ").split() if item)


def is_production(environment: str, nonproduction: Iterable[str]) -> bool:
    """Whether an environment needs the production scope: any not declared non-production does."""
    declared = {name.casefold() for name in nonproduction}
    return environment.strip().casefold() not in declared
