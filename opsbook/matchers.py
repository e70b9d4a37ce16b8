"""Label matchers that select exactly a set of hosts, for Prometheus queries.

Prometheus speaks Go's RE2 regexes and anchors a label regex at both ends, so an alternation of
escaped values matches those values and nothing else: 'web-1:9100' never also matches
'web-1:91000', and a dot in a host name matches only a dot. (Alertmanager does the same: the runs
service's silences follow this rule, in opsbook.service.silences.)
"""

from __future__ import annotations

from collections.abc import Iterable

_RE2_METACHARACTERS = frozenset("\\.+*?()|[]{}^$")


def exact_regex(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly the given values (sorted, each once)."""
    return "|".join(
        "".join(f"\\{char}" if char in _RE2_METACHARACTERS else char for char in value)
        for value in sorted(set(values))
    )


def promql_string(text: str) -> str:
    """Text escaped to sit between the double quotes of a PromQL string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
