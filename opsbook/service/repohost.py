"""Where the package repository's sshd is (RUNS_PACKAGE_REPO_SSH): parsed without the crypto
library the promotions need, so that `make up` can check the setting with the machine's own
python3 before anything is built (scripts/check_env.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

TARGET = re.compile(r"^(?P<user>[a-z_][a-z0-9_-]{0,31})@(?P<host>[A-Za-z0-9.-]+)(:(?P<port>\d+))?$")


@dataclass(frozen=True)
class RepoHost:
    """Where the repository's sshd is: user@host[:port] (RUNS_PACKAGE_REPO_SSH)."""

    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


def repo_host(raw: str) -> RepoHost | None:
    """RUNS_PACKAGE_REPO_SSH's parser: user@host[:port], or empty for no repository (then every
    promotion is refused with 503 naming the setting)."""
    value = raw.strip()
    if not value:
        return None
    match = TARGET.match(value)
    port = int(match["port"] or 22) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ValueError(
            "user@host or user@host:port of the package repository's sshd, such as "
            "opsbook@pkgrepo, or empty for none"
        )
    return RepoHost(user=match["user"], host=match["host"], port=port)
