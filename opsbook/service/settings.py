"""Every setting of the runs service, read from the environment and checked before anything starts.

A wrong value stops the service with one line per bad variable, naming it and what was expected,
instead of a traceback or a service that half works. The registry (loading, the message format,
the common parsers) is opsbook.contract.settings, the hub's too; here are the service's
declarations and the parsers only it needs. The JUPYTERHUB_* variables are the ones JupyterHub
gives any service; docker compose passes them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from opsbook.contract.settings import (
    Setting,
    SettingsError,
    absolute_path,
    bounded_int,
    mask_password,
    optional_ssh_public_key,
    optional_url,
    secret,
    text,
    url,
)
from opsbook.contract.settings import load as load_settings
from opsbook.contract.stacks import NONPRODUCTION_SETTING, environment_names
from opsbook.service.repohost import repo_host
from opsbook.service.rules import ApprovalPolicy

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_SSH_CA_KEY",
    "SETTINGS",
    "SettingsError",
    "approval_environments",
    "approval_policy",
    "load",
    "masked_database_url",
]

DEFAULT_DATABASE_URL = "sqlite:////var/lib/opsbook-runs/runs.sqlite"
DEFAULT_INVENTORY = "/etc/opsbook/ansible/inventories/demo"
DEFAULT_SSH_CA_KEY = "/run/secrets/opsbook-user-ca"


# --- parsers of the service's own (the common ones are opsbook.contract.settings') ---


def _api_url(raw: str) -> str:
    """An http(s) URL without its trailing '/' (paths are joined to it)."""
    return url(raw).rstrip("/")


def _optional_api_url(raw: str) -> str:
    return optional_url(raw).rstrip("/")


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


def _group(raw: str) -> str:
    if not re.match(r"^[\w.@-]+$", raw.strip()):
        raise ValueError("a JupyterHub group name such as oncall")
    return raw.strip()


def source_addresses(raw: str) -> tuple[str, ...]:
    """CIDR blocks separated by spaces or commas (each once, normalised); empty for none."""
    found = []
    for item in raw.replace(",", " ").split():
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(
                "CIDR blocks separated by spaces or commas, such as 172.30.0.0/16 10.8.0.0/24, "
                "or empty for no source-address restriction"
            ) from None
    return tuple(dict.fromkeys(found))


def approval_environments(raw: str) -> ApprovalPolicy:
    """RUNS_APPROVAL_ENVIRONMENTS: "production" (every production environment), "none", or
    environment names (spaces or commas; "production" may be among them). Fail closed: names only
    add environments to the production ones; nothing but the word "none", alone, switches
    approvals off."""
    words = [word.lower() for word in dict.fromkeys(raw.replace(",", " ").split())]
    expected = (
        '"production" (every production environment), "none", or environment names separated '
        "by spaces or commas (they need approval as well as every production environment)"
    )
    if not words:
        raise ValueError(expected)
    if "none" in words:
        if len(words) > 1:
            raise ValueError(f"{expected}; none stands alone")
        return ApprovalPolicy(production=False)
    names = frozenset(word for word in words if word != "production")
    if any(not re.match(r"^[\w.-]+$", name) for name in names):
        raise ValueError(expected)
    return ApprovalPolicy(production=True, environments=names)


def approval_policy(settings: Mapping[str, Any]) -> ApprovalPolicy:
    """The three approval settings as one policy (rules.ApprovalPolicy)."""
    environments: ApprovalPolicy = settings["RUNS_APPROVAL_ENVIRONMENTS"]
    return ApprovalPolicy(
        production=environments.production,
        environments=environments.environments,
        approvers=settings["RUNS_APPROVERS"],
        ttl_seconds=settings["RUNS_APPROVAL_TTL"],
    )


SETTINGS: tuple[Setting, ...] = (
    Setting("JUPYTERHUB_API_TOKEN", secret(16), "The service's token at the hub (api_token)."),
    Setting("JUPYTERHUB_API_URL", _api_url, "The hub's API.", "http://hub:8081/hub/api"),
    Setting("JUPYTERHUB_SERVICE_PREFIX", _prefix, "Where the proxy sends us.", "/services/runs/"),
    Setting("JUPYTERHUB_CLIENT_ID", text, "OAuth client id at the hub.", "service-runs"),
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
        "RUNS_INVENTORY",
        absolute_path,
        "The Ansible inventory (file or folder) the service resolves stacks from, as the runs "
        "container sees it: the engineers' inventory, mounted read-only.",
        DEFAULT_INVENTORY,
    ),
    Setting(
        NONPRODUCTION_SETTING,
        environment_names,
        "Environments whose runs need no production scope (names separated by spaces or "
        "commas). Every other environment counts as production, an undeclared one included "
        "(fail closed); empty: every environment is production.",
        "",
    ),
    Setting(
        "RUNS_LEASE_SECONDS",
        bounded_int(10, 3600),
        "How long a run stays its owner's without a renewal before it is orphaned.",
        "60",
    ),
    Setting(
        "RUNS_SWEEP_SECONDS",
        bounded_int(1, 60),
        "How often expired leases are looked for.",
        "5",
    ),
    Setting(
        "RUNS_APPROVAL_ENVIRONMENTS",
        approval_environments,
        "Which runs wait for approval by an on-call engineer other than the requester: "
        '"production" (every production environment), "none", or environment names (they need '
        "approval as well as every production environment; only none switches it off).",
        "production",
    ),
    Setting(
        "RUNS_APPROVERS",
        bounded_int(1, 5),
        "How many distinct on-call engineers (never the requester) approve a run that needs it.",
        "1",
    ),
    Setting(
        "RUNS_APPROVAL_TTL",
        bounded_int(60, 86400),
        "Seconds an approval request stands undecided, and an approval stays valid while the run "
        "has not started a batch; then the run is aborted (approval expired).",
        "1800",
    ),
    Setting(
        "RUNS_ALERTMANAGER_URL",
        _api_url,
        "Alertmanager, as the runs service reaches it: each batch's hosts are silenced there "
        "while the batch runs (engineers do not reach it). No answer: the batch does not start.",
        "http://alertmanager:9093",
    ),
    Setting(
        "RUNS_WEBHOOK_URL",
        _optional_api_url,
        "Slack-compatible incoming webhook for start, approval requested, approved, rejected, "
        "approval expired, handoff, accept, takeover, finish, failure.",
        "",
    ),
    Setting(
        "RUNS_PUBLIC_URL",
        _optional_api_url,
        "The hub's public URL, for links in webhook messages (none when empty).",
        "",
    ),
    Setting("RUNS_ONCALL_GROUP", _group, "JupyterHub group of on-call engineers.", "oncall"),
    Setting(
        "RUNS_AUTH_CACHE_SECONDS",
        bounded_int(0, 300),
        "How long a token's user and scopes are cached before asking the hub again.",
        "30",
    ),
    Setting(
        "RUNS_SSH_CA_KEY",
        absolute_path,
        "The fleet's SSH user CA private key (OpenSSH format, ed25519 or RSA >= 3072 bits, no "
        "passphrase), mounted read-only into this container only; checked at start.",
        DEFAULT_SSH_CA_KEY,
    ),
    Setting(
        "RUNS_SSH_CERT_MINUTES",
        bounded_int(1, 1440),
        "How long an engineer's SSH certificate is valid (the toolkit renews it before plays).",
        "15",
    ),
    Setting(
        "RUNS_SSH_SOURCE_ADDRESSES",
        source_addresses,
        "CIDR blocks certificates may be used from (the engineers' network; critical option "
        "source-address), separated by spaces or commas; empty: no restriction.",
        "",
    ),
    Setting(
        "RUNS_PACKAGE_REPO_SSH",
        repo_host,
        "Where the service promotes errata: the package repository's sshd as user@host[:port] "
        "(the demo: opsbook@pkgrepo-admin). The service signs itself a one-minute certificate per "
        "promotion (principal errata-<environment>, forced command opsbook-repo promote). "
        "Empty: no promotions (503 naming this setting).",
        "",
    ),
    Setting(
        "RUNS_SSH_HOST_CA",
        optional_ssh_public_key,
        "The host CA's public key (compose passes SSH_HOST_CA_PUBLIC_KEY): the repository host "
        "must show a host certificate it signed. Required with RUNS_PACKAGE_REPO_SSH.",
        "",
    ),
    Setting("RUNS_PORT", bounded_int(1, 65535), "Port the service listens on.", "8000"),
)

# Settings whose values never appear in error messages (a database URL's password is masked).
SECRET_NAMES = frozenset({"JUPYTERHUB_API_TOKEN"})


def load(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse every setting; raise SettingsError with one line per bad or missing one."""
    settings = load_settings(SETTINGS, environ, secret_names=SECRET_NAMES)
    if settings["RUNS_PACKAGE_REPO_SSH"] is not None and not settings["RUNS_SSH_HOST_CA"]:
        # Fail closed: without the host CA the service could not tell the repository host from
        # an impostor, and would hand it the packages to promote.
        raise SettingsError(
            "RUNS_SSH_HOST_CA: required, not set (RUNS_PACKAGE_REPO_SSH is set: the host CA's "
            "public key, secrets/ssh/host_ca.pub, checks the repository host's certificate)"
        )
    return settings


def masked_database_url(url: str) -> str:
    """The database URL without its password, for logs."""
    return mask_password(url)
