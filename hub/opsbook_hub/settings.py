"""Every setting of the hub, declared once: name, what it expects, its default, what it is for.

The hub reads its whole configuration from the environment (docker compose passes `.env`; on
Kubernetes the chart passes the same variables). Each setting is parsed and checked here, before
anything starts, so that a wrong value stops the hub with one line naming the variable and what it
expected, instead of a traceback or a hub that half works. `.env.example` documents the same names
for users; a unit test keeps the two in step. The registry itself (loading, the message format,
the common parsers) is opsbook.contract.settings, shared with the runs service; here are the
hub's declarations and the parsers only the hub needs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from opsbook.contract.settings import (
    Setting,
    SettingsError,
    absolute_path,
    bounded_int,
    names,
    optional_ssh_public_key,
    optional_url,
    positive_float,
    positive_int,
    secret,
    text,
    url,
)
from opsbook.contract.settings import load as load_settings

__all__ = ["SECRET_NAMES", "SETTINGS", "Setting", "SettingsError", "load"]


# --- parsers of the hub's own (the common ones are opsbook.contract.settings') ---


def hex_key(n_bytes: int) -> Callable[[str], bytes]:
    """Keys JupyterHub uses as bytes (cookie secret, auth state key), given as hex."""

    def parse(raw: str) -> bytes:
        try:
            key = bytes.fromhex(raw.strip())
        except ValueError:
            key = b""
        if len(key) != n_bytes:
            raise ValueError(f"{n_bytes * 2} hex digits (openssl rand -hex {n_bytes})")
        return key

    return parse


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$", re.IGNORECASE)


def byte_size(raw: str) -> str:
    """Docker's size syntax (512M, 2G); kept as text because DockerSpawner takes it so."""
    match = _SIZE.match(raw.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError("a size such as 512M or 2G")
    return raw.strip().upper()


_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def docker_name(raw: str) -> str:
    if not _DOCKER_NAME.match(raw.strip()):
        raise ValueError("a Docker object name (letters, digits, '_', '.', '-')")
    return raw.strip()


def choice(*allowed: str) -> Callable[[str], str]:
    """One word of `allowed`."""

    def parse(raw: str) -> str:
        if raw.strip() not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return raw.strip()

    return parse


# Engineers' networks take a /26 each (opsbook_hub.networks.SUBNET_PREFIX).
NETWORK_PREFIX_LENGTH = 26


def private_ipv4_pool(raw: str) -> ipaddress.IPv4Network:
    """A private IPv4 range of /26 or larger, written as its network address (10.99.0.0/16)."""
    expected = f"a private IPv4 range of /{NETWORK_PREFIX_LENGTH} or larger, such as 10.99.0.0/16"
    try:
        pool = ipaddress.IPv4Network(raw.strip())
    except ValueError:
        raise ValueError(expected) from None
    if not pool.is_private or pool.prefixlen > NETWORK_PREFIX_LENGTH:
        raise ValueError(expected)
    return pool


def image_ref(raw: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9._/-]*(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?$", raw.strip()):
        raise ValueError("an image reference such as opsbook/singleuser:0.1.0")
    return raw.strip()


SETTINGS: tuple[Setting, ...] = (
    # --- single sign-on (OpenID Connect / OAuth2) ---
    Setting("OAUTH_CLIENT_ID", text, "Client id of the hub at the identity provider."),
    Setting("OAUTH_CLIENT_SECRET", secret(16), "Client secret of the hub at the provider."),
    Setting(
        "OAUTH_CALLBACK_URL",
        url,
        "Public URL of the hub's OAuth callback, registered at the provider: "
        "<hub URL>/hub/oauth_callback. Engineers must use the hub at this host name. When it "
        "is https, every OAUTH_* URL of the provider must be https too (checked at start).",
    ),
    Setting(
        "OAUTH_AUTHORIZE_URL", url, "Provider's authorization endpoint, as the browser reaches it."
    ),
    Setting("OAUTH_TOKEN_URL", url, "Provider's token endpoint, as the hub container reaches it."),
    Setting("OAUTH_USERDATA_URL", url, "Provider's userinfo endpoint, as the hub reaches it."),
    Setting("OAUTH_SCOPES", names, "Scopes the hub asks for.", "openid profile email groups"),
    Setting(
        "OAUTH_USERNAME_CLAIM", text, "Userinfo claim that is the username.", "preferred_username"
    ),
    Setting(
        "OAUTH_GROUPS_CLAIM",
        text,
        "Userinfo claim listing the user's groups (dotted path for nested claims; 'roles' for "
        "Entra ID app roles).",
        "groups",
    ),
    Setting("OAUTH_LOGIN_SERVICE", text, "Name on the sign-in button.", "Opsbook SSO"),
    Setting(
        "OAUTH_LOGOUT_REDIRECT_URL",
        optional_url,
        "Where logging out of the hub sends the browser (the provider's end-session URL ends "
        "the SSO session too); empty: the hub's own logout page.",
        "",
    ),
    Setting(
        "API_TOKEN_MAX_SECONDS",
        bounded_int(60, 366 * 24 * 3600),
        "Longest life, in seconds, of any token the hub issues through its API or its token page "
        "(a token asked for without an expiry gets this one, a longer one is refused) and of the "
        "OAuth tokens in the cookies of servers and services. Servers' own tokens end with the "
        "server; the services' tokens (RUNS_SERVICE_TOKEN, HUB_METRICS_TOKEN) are configured and "
        "change when you change them.",
        str(7 * 24 * 3600),
    ),
    Setting(
        "AUTH_REFRESH_AGE",
        positive_int,
        "Seconds between re-reads of a user's groups from the provider. Removal from every "
        "allowed group takes effect at the next re-read.",
        "300",
    ),
    # --- who may do what (group names as the provider sends them) ---
    Setting("GROUPS_ADMIN", names, "Groups whose members are hub admins.", "admins"),
    Setting(
        "GROUPS_SERVER",
        names,
        "Groups of engineers: a server of their own, runs on non-production stacks.",
        "ops",
    ),
    Setting(
        "GROUPS_ONCALL",
        names,
        "Groups of on-call engineers: a server, runs on production stacks, takeovers.",
        "oncall",
    ),
    Setting(
        "GROUPS_VIEWER",
        names,
        "Groups whose members may log in without a server (managers: the status page).",
        "viewers",
    ),
    # --- secrets of the hub itself ---
    Setting("HUB_COOKIE_SECRET", hex_key(32), "Signs the hub's cookies (generated by make up)."),
    Setting(
        "JUPYTERHUB_CRYPT_KEY",
        hex_key(32),
        "Encrypts users' tokens from the provider in the hub's database (generated).",
    ),
    Setting(
        "CONFIGPROXY_AUTH_TOKEN",
        secret(32),
        "Shared between hub and proxy for the proxy's routing API (generated).",
    ),
    Setting(
        "HUB_METRICS_TOKEN",
        secret(32),
        "Token of the `prometheus` service: reads the hub's /hub/metrics and nothing else.",
    ),
    Setting(
        "RUNS_SERVICE_TOKEN",
        secret(32),
        "Token of the runs service (the ledger of patch runs) at the hub (generated).",
    ),
    Setting(
        "RUNS_SERVICE_URL", url, "The runs service, as the hub reaches it.", "http://runs:8000"
    ),
    Setting(
        "PROXY_API_URL",
        url,
        "The proxy's routing API, as the hub reaches it (compose: proxy-api, the proxy's name "
        "on the backend network only, where alone its API listens).",
        "http://proxy-api:8001",
    ),
    Setting(
        "HUB_CONNECT_URL",
        url,
        "The hub's API as the proxy and the engineers' containers reach it.",
        "http://hub:8081",
    ),
    # --- engineers' containers ---
    Setting("SINGLEUSER_IMAGE", image_ref, "Image of every engineer's container."),
    Setting(
        "ENGINEER_NETWORK_EGRESS",
        choice("none", "routed"),
        "What an engineer's own Docker network (<prefix>-net-<user>) reaches besides the "
        "containers compose labels org.opsbook.engineer-networks: none (an internal network, "
        "the demo fleet is on Docker networks) or routed (through the Docker host, for real "
        "hosts: then the host's firewall must allow only the fleet's SSH; README, Networks).",
        "none",
    ),
    Setting(
        "ENGINEER_NETWORK_POOL",
        private_ipv4_pool,
        "The private IPv4 range engineers' networks take a /26 each from (a /16: 1,024 "
        "engineers). Docker's default address pools hold only about thirty networks. It must "
        "not overlap the networks the Docker host or its containers reach (README, Networks).",
        "10.99.0.0/16",
    ),
    Setting(
        "CONTAINER_PREFIX",
        docker_name,
        "Prefix of engineers' container and volume names (<prefix>-<user>, "
        "<prefix>-home-<user>); one per deployment on a Docker engine.",
    ),
    Setting(
        "RUNBOOKS_HOST_PATH",
        absolute_path,
        "Folder of the runbook library on the Docker host, mounted read-only as ~/runbooks.",
    ),
    Setting(
        "ANSIBLE_HOST_PATH",
        absolute_path,
        "Folder of the playbooks and inventories on the Docker host, mounted read-only on "
        "~/ansible.",
    ),
    Setting(
        "SSH_HOST_CA_PUBLIC_KEY",
        optional_ssh_public_key,
        "The host CA's public key (one line of secrets/ssh/host_ca.pub, written by make up): "
        "engineers' containers trust the host certificates it signed (known_hosts "
        "@cert-authority). Empty: they trust no host key, and ssh to the fleet fails closed.",
        "",
    ),
    Setting(
        "PROMETHEUS_URL",
        url,
        "Prometheus, as engineers' containers reach it.",
        "http://prometheus:9090",
    ),
    Setting(
        "PACKAGE_REPO_URL",
        url,
        "The local package repository (errata), as engineers' containers reach it.",
        "http://pkgrepo/debian",
    ),
    Setting("MEM_LIMIT", byte_size, "Memory limit of each engineer's container.", "2G"),
    Setting("CPU_LIMIT", positive_float, "CPU limit of each engineer's container (cores).", "1.0"),
    Setting("PIDS_LIMIT", positive_int, "Process limit of each engineer's container.", "512"),
    Setting(
        "CULL_IDLE_TIMEOUT",
        positive_int,
        "Seconds without activity after which an engineer's server is stopped (home kept).",
        "3600",
    ),
    Setting("CULL_EVERY", positive_int, "Seconds between two passes of the idle culler.", "300"),
)

# Settings whose values never appear in logs or error messages.
SECRET_NAMES = frozenset(
    {
        "OAUTH_CLIENT_SECRET",
        "HUB_COOKIE_SECRET",
        "JUPYTERHUB_CRYPT_KEY",
        "CONFIGPROXY_AUTH_TOKEN",
        "HUB_METRICS_TOKEN",
        "RUNS_SERVICE_TOKEN",
    }
)


# The provider's endpoints: with an https hub, none of them may be plain http.
OAUTH_ENDPOINTS = (
    "OAUTH_AUTHORIZE_URL",
    "OAUTH_TOKEN_URL",
    "OAUTH_USERDATA_URL",
    "OAUTH_LOGOUT_REDIRECT_URL",
)


def is_https(url_text: str) -> bool:
    return url_text.lower().startswith("https://")


def plain_http_endpoints(values: Mapping[str, Any]) -> list[str]:
    """One line per OAuth endpoint left on http while the hub's public URL is https.

    Why: an https hub whose sign-in sends the browser, or its own token exchange and userinfo
    call, over plain http leaks codes, tokens and groups to anyone on the path, while the padlock
    says all is well. Fail closed at start, naming each endpoint (an empty logout URL is none).
    """
    if not is_https(values.get("OAUTH_CALLBACK_URL", "")):
        return []
    return [
        f"{name}: expected an https URL, as OAUTH_CALLBACK_URL is https (codes, tokens and "
        f"groups must not cross the network in clear), got {values[name]!r}"
        for name in OAUTH_ENDPOINTS
        if values.get(name) and not is_https(values[name])
    ]


def load(
    environ: Mapping[str, str] = os.environ, only: Collection[str] | None = None
) -> dict[str, Any]:
    """Parse every setting from `environ`; raise SettingsError listing each bad one.

    `only`: parse just these settings (on Kubernetes, helm/values.yaml's hub.extraConfig reads
    the ones the chart does not own); None: all of them, as docker compose's hub does. Then the
    checks that span settings (plain_http_endpoints), on what was loaded.
    """
    values = load_settings(SETTINGS, environ, only=only, secret_names=SECRET_NAMES)
    problems = plain_http_endpoints(values)
    if problems:
        raise SettingsError("\n".join(problems))
    return values
