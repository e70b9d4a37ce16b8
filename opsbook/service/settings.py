"""Every setting of the runs service, read from the environment and checked before anything starts.

A wrong value stops the service with one line per bad variable, naming it and what was expected
(the same convention as the hub's settings), instead of a traceback or a service that half works.
The JUPYTERHUB_* variables are the ones JupyterHub gives any service; docker compose passes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

DEFAULT_DATABASE_URL = "sqlite:////var/lib/opsbook-runs/runs.sqlite"


class SettingsError(ValueError):
    """One line per bad setting."""


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("a non-empty value")
    return raw.strip()


def _token(raw: str) -> str:
    if len(raw.strip()) < 16:
        raise ValueError("the service's JupyterHub API token (at least 16 characters)")
    return raw.strip()


def _url(raw: str) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("an http(s) URL such as http://hub:8081/hub/api")
    return raw.strip().rstrip("/")


def _optional_url(raw: str) -> str:
    return _url(raw) if raw.strip() else ""


def _prefix(raw: str) -> str:
    value = raw.strip()
    if not (value.startswith("/") and value.endswith("/")):
        raise ValueError("a URL path that starts and ends with '/', such as /services/runs/")
    return value


def _callback(raw: str) -> str:
    value = raw.strip()
    if value.startswith("/") or urlparse(value).scheme in ("http", "https"):
        return value
    raise ValueError("a path such as /services/runs/oauth_callback, or a full http(s) URL")


def _database_url(raw: str) -> str:
    value = raw.strip()
    if re.match(r"^sqlite:////\S+$", value):
        return value
    if re.match(r"^postgresql(\+psycopg2)?://\S+$", value):
        return value
    raise ValueError(
        "sqlite:////absolute/path.sqlite or postgresql+psycopg2://user:password@host:5432/db"
    )


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return value

    return parse


def _group(raw: str) -> str:
    if not re.match(r"^[\w.@-]+$", raw.strip()):
        raise ValueError("a JupyterHub group name such as oncall")
    return raw.strip()


def _names(raw: str) -> frozenset[str]:
    items = frozenset(item for item in raw.replace(",", " ").split() if item)
    if not items:
        raise ValueError("one or more environment names separated by spaces, such as production")
    return items


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    doc: str
    default: str | None = None  # None: required


SETTINGS: tuple[Setting, ...] = (
    Setting("JUPYTERHUB_API_TOKEN", _token, "The service's token at the hub (api_token)."),
    Setting("JUPYTERHUB_API_URL", _url, "The hub's API.", "http://hub:8081/hub/api"),
    Setting("JUPYTERHUB_SERVICE_PREFIX", _prefix, "Where the proxy sends us.", "/services/runs/"),
    Setting("JUPYTERHUB_CLIENT_ID", _text, "OAuth client id at the hub.", "service-runs"),
    Setting(
        "JUPYTERHUB_OAUTH_CALLBACK_URL",
        _callback,
        "OAuth redirect URI registered at the hub.",
        "/services/runs/oauth_callback",
    ),
    Setting(
        "RUNS_DATABASE_URL",
        _database_url,
        "The ledger: a SQLite file on the data volume, or PostgreSQL.",
        DEFAULT_DATABASE_URL,
    ),
    Setting(
        "RUNS_LEASE_SECONDS",
        _bounded_int(10, 3600),
        "How long a run stays its owner's without a renewal before it is orphaned.",
        "60",
    ),
    Setting(
        "RUNS_SWEEP_SECONDS",
        _bounded_int(1, 60),
        "How often expired leases are looked for.",
        "5",
    ),
    Setting(
        "RUNS_WEBHOOK_URL",
        _optional_url,
        "Slack-compatible incoming webhook for start, handoff, accept, takeover, finish, failure.",
        "",
    ),
    Setting(
        "RUNS_PUBLIC_URL",
        _optional_url,
        "The hub's public URL, for links in webhook messages (none when empty).",
        "",
    ),
    Setting("RUNS_ONCALL_GROUP", _group, "JupyterHub group of on-call engineers.", "oncall"),
    Setting(
        "RUNS_PRODUCTION_ENVIRONMENTS",
        _names,
        "Environments whose runs need the production scope.",
        "production",
    ),
    Setting(
        "RUNS_AUTH_CACHE_SECONDS",
        _bounded_int(0, 300),
        "How long a token's user and scopes are cached before asking the hub again.",
        "30",
    ),
    Setting("RUNS_PORT", _bounded_int(1, 65535), "Port the service listens on.", "8000"),
)


def load(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse every setting; raise SettingsError with one line per bad or missing one."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or (raw == "" and setting.default is not None):
            raw = setting.default
        if raw is None:
            problems.append(f"{setting.name}: not set; expected {_expected(setting)}")
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as error:
            shown = "(hidden)" if "TOKEN" in setting.name else repr(_mask(raw))
            problems.append(f"{setting.name}: expected {error}, got {shown}")
    if problems:
        raise SettingsError("\n".join(problems))
    return values


def _expected(setting: Setting) -> str:
    try:
        setting.parse("")
    except ValueError as error:
        return str(error)
    return "a value"


def _mask(raw: str) -> str:
    """Database URLs carry a password: never echo it."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", raw)


def masked_database_url(url: str) -> str:
    return _mask(url)
