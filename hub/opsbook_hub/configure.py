"""Settings -> JupyterHub configuration, one small function per concern.

`jupyterhub_config.py` calls `apply(c, settings)`; the unit tests call the same functions on an
empty traitlets `Config` and check the result, without starting a hub.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado import web
from traitlets.config import Config

from opsbook.contract.scopes import SCOPE_DESCRIPTIONS

from .access import GroupPolicy

Settings = dict[str, Any]

HUB_DATA = Path("/srv/jupyterhub")
TEMPLATES = Path(__file__).parent / "templates"
HOME = "/home/jovyan"
RUNBOOKS_MOUNT = f"{HOME}/runbooks"
ANSIBLE_MOUNT = f"{HOME}/ansible"
# Memory-backed, the engineer's own: the container's SSH key pair and certificate
# (images/singleuser/opsbook-start), never on the home volume. uid 1000, gid 100: jovyan.
RUNTIME_DIR = "/run/opsbook"
RUNTIME_TMPFS = "size=1m,mode=0700,uid=1000,gid=100"
# The root filesystem is read-only: what may be written goes to the home volume or here, a /tmp
# in memory (charged to MEM_LIMIT, bounded by its size; Docker's noexec, nosuid, nodev).
TMP_DIR = "/tmp"
TMP_TMPFS = "size=256m,mode=1777"
# Engineers' containers' CPU weight against Docker's default of 1024 (the hub, the proxy, the runs
# service, Prometheus): on a busy machine the services everyone depends on come first, four to
# one, and engineers share what is left equally. It weighs only when the cores are contended:
# an engineer alone on an idle machine still gets their whole CPU_LIMIT.
ENGINEER_CPU_SHARES = 256


def group_policy(s: Settings) -> GroupPolicy:
    return GroupPolicy.from_names(
        s["GROUPS_ADMIN"], s["GROUPS_SERVER"], s["GROUPS_ONCALL"], s["GROUPS_VIEWER"]
    )


def configure_hub(c: Config, s: Settings) -> None:
    """Database, secrets, and where the hub listens; the proxy runs in its own container."""
    c.JupyterHub.db_url = f"sqlite:///{HUB_DATA / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret = s["HUB_COOKIE_SECRET"]
    c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
    c.JupyterHub.hub_connect_url = s["HUB_CONNECT_URL"]
    # Servers outlive a hub restart: the hub finds them again in its database.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.template_paths = [str(TEMPLATES)]


def configure_proxy(c: Config, s: Settings) -> None:
    """configurable-http-proxy is a separate container, so a hub restart cuts no session."""
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = s["PROXY_API_URL"]
    c.ConfigurableHTTPProxy.auth_token = s["CONFIGPROXY_AUTH_TOKEN"]


def configure_authenticator(c: Config, s: Settings) -> None:
    configure_oauth(c, s)
    c.CryptKeeper.keys = [s["JUPYTERHUB_CRYPT_KEY"]]


def configure_oauth(c: Config, s: Settings) -> None:
    """Sign-in, groups and refresh; the auth state's key (CryptKeeper) is set apart from this,
    here from JUPYTERHUB_CRYPT_KEY, on Kubernetes by the chart (helm/values.yaml)."""
    policy = group_policy(s)
    c.JupyterHub.authenticator_class = "opsbook_hub.authenticator.OpsbookAuthenticator"
    auth = c.OpsbookAuthenticator
    auth.client_id = s["OAUTH_CLIENT_ID"]
    auth.client_secret = s["OAUTH_CLIENT_SECRET"]
    # client_secret_basic: what OpenID Connect expects by default of a confidential client.
    auth.basic_auth = True
    auth.oauth_callback_url = s["OAUTH_CALLBACK_URL"]
    auth.authorize_url = s["OAUTH_AUTHORIZE_URL"]
    auth.token_url = s["OAUTH_TOKEN_URL"]
    auth.userdata_url = s["OAUTH_USERDATA_URL"]
    auth.scope = list(s["OAUTH_SCOPES"])
    auth.username_claim = s["OAUTH_USERNAME_CLAIM"]
    auth.login_service = s["OAUTH_LOGIN_SERVICE"]
    auth.logout_redirect_url = s["OAUTH_LOGOUT_REDIRECT_URL"]
    # Groups come from the provider, and nothing else.
    auth.manage_groups = True
    auth.auth_state_groups_key = f"oauth_user.{s['OAUTH_GROUPS_CLAIM']}"
    auth.allowed_groups = set(policy.allowed)
    # No admin_groups: the admin groups get the opsbook-admin role (access.ADMIN_SCOPES), never
    # JupyterHub's admin flag and its built-in role.
    auth.group_policy = policy
    auth.custom_403_message = policy.refusal()
    # Tokens from the provider are kept (encrypted with JUPYTERHUB_CRYPT_KEY) to re-read groups.
    auth.enable_auth_state = True
    auth.auth_refresh_age = s["AUTH_REFRESH_AGE"]
    auth.refresh_pre_spawn = True
    auth.auto_login = True


def configure_access(c: Config, s: Settings) -> None:
    """Where each kind of user lands, and what the pages know of them (roles: hub_roles)."""
    policy = group_policy(s)
    c.JupyterHub.template_vars = {"opsbook_has_server": _template_may_have_server(policy)}
    c.JupyterHub.default_url = _default_url(policy)
    # The deprecated admin access to servers: off (JupyterHub's default, said here).
    c.JupyterHub.admin_access = False


# HSTS for a year (no includeSubDomains: the hub does not speak for its parent domain's hosts).
HSTS = "max-age=31536000"


def public_is_https(s: Settings) -> bool:
    return public_hub_url(s).lower().startswith("https://")


def configure_https(c: Config, s: Settings) -> None:
    """With an https public URL: Secure cookies and HSTS, on the hub and on every server.

    Secure because a cookie sent once over plain http (a typed http:// link, before the
    redirect) can be read on the way; HSTS so that the browser never tries http again. The
    servers get the cookie options from the hub (JUPYTERHUB_COOKIE_OPTIONS) and the header
    through their arguments (server_settings). Nothing changes for a plain-http hub.
    """
    if not public_is_https(s):
        return
    tornado = dict(c.JupyterHub.tornado_settings) if "tornado_settings" in c.JupyterHub else {}
    tornado["cookie_options"] = {**tornado.get("cookie_options", {}), "secure": True}
    tornado["headers"] = {**tornado.get("headers", {}), "Strict-Transport-Security": HSTS}
    c.JupyterHub.tornado_settings = tornado


def configure_tokens(c: Config, s: Settings) -> None:
    """No token lives forever: API tokens (asked for without an expiry they get the longest
    allowed; longer is refused with 400) and the OAuth tokens of servers' and services' cookies.
    Servers' own tokens are revoked when the server stops."""
    c.JupyterHub.token_expires_in_max_seconds = s["API_TOKEN_MAX_SECONDS"]
    c.JupyterHub.oauth_token_expires_in = s["API_TOKEN_MAX_SECONDS"]


def _groups_of(user: Any) -> list[str]:
    return [group.name for group in user.groups]


def _template_may_have_server(policy: GroupPolicy) -> Callable[[Any], bool]:
    def may_have_server(user: Any) -> bool:
        return user is not None and policy.may_have_server(_groups_of(user))

    return may_have_server


def _default_url(policy: GroupPolicy) -> Callable[[Any], str | None]:
    """Viewers land on the home page (which says they have no server); engineers on theirs."""

    def default_url(handler: Any) -> str | None:
        user = handler.current_user
        if user is not None and not policy.may_have_server(_groups_of(user)):
            return handler.hub.base_url + "home"
        return None

    return default_url


# The engineer's home volume (their network lives as long as it: opsbook_hub.networks).
HOME_VOLUME_TEMPLATE = "{prefix}-home-{username}"
# Seconds a server may take to start, and then to answer (start_timeout, http_timeout).
SPAWN_PATIENCE = 180


def configure_spawner(c: Config, s: Settings) -> None:
    c.JupyterHub.spawner_class = "opsbook_hub.spawner.OpsbookDockerSpawner"
    spawner = c.DockerSpawner
    spawner.image = s["SINGLEUSER_IMAGE"]
    spawner.pull_policy = "never"
    # A network of each engineer's own (opsbook_hub.networks), named after CONTAINER_PREFIX.
    c.OpsbookDockerSpawner.network_internal = s["ENGINEER_NETWORK_EGRESS"] == "none"
    c.OpsbookDockerSpawner.network_pool = str(s["ENGINEER_NETWORK_POOL"])
    spawner.use_internal_ip = True
    # Room in the Docker client's connection pool (10 by default) for the spawner's API threads
    # and the network connections made beside them.
    spawner.client_kwargs = {"max_pool_size": 32}
    spawner.remove = True
    spawner.prefix = s["CONTAINER_PREFIX"]
    spawner.name_template = "{prefix}-{username}"
    spawner.volumes = {
        HOME_VOLUME_TEMPLATE: HOME,
        s["RUNBOOKS_HOST_PATH"]: {"bind": RUNBOOKS_MOUNT, "mode": "ro"},
        s["ANSIBLE_HOST_PATH"]: {"bind": ANSIBLE_MOUNT, "mode": "ro"},
    }
    for name, value in server_settings(s).items():
        setattr(spawner, name, value)
    spawner.mem_limit = s["MEM_LIMIT"]
    spawner.cpu_limit = s["CPU_LIMIT"]
    # No privileges: no capabilities, no setuid escalation, a bounded process table, no swap
    # beyond the memory limit (a memory hog is stopped at MEM_LIMIT, not left to thrash the
    # machine's disk), a read-only root; a small tmpfs of the engineer's own for the SSH key pair
    # (no fleet key is mounted anywhere: each container makes its own key and asks the runs
    # service for a short-lived certificate).
    spawner.extra_host_config = {
        "cpu_shares": ENGINEER_CPU_SHARES,
        "pids_limit": s["PIDS_LIMIT"],
        "memswap_limit": s["MEM_LIMIT"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {RUNTIME_DIR: RUNTIME_TMPFS, TMP_DIR: TMP_TMPFS},
        # A name nothing on the engineer's network answers fails in 2 s, not glibc's 20: on an
        # internal network Docker's resolver has nobody to ask and never answers.
        "dns_opt": ["timeout:1", "attempts:1"],
    }
    spawner.pre_spawn_hook = _server_groups_only(group_policy(s))


def server_settings(s: Settings) -> dict[str, Any]:
    """Spawner settings every engineer's server gets, whatever the spawner (DockerSpawner here;
    KubeSpawner through helm/values.yaml's hub.extraConfig)."""
    return {
        # What the opsbook package in the container reads.
        "environment": {
            "OPSBOOK_PROMETHEUS_URL": s["PROMETHEUS_URL"],
            "OPSBOOK_PACKAGE_REPO_URL": s["PACKAGE_REPO_URL"],
            "OPSBOOK_RUNS_URL": f"{s['RUNS_SERVICE_URL']}/services/runs",
            # The same service as engineers' browsers reach it (links a runbook prints).
            "OPSBOOK_RUNS_PUBLIC_URL": public_hub_url(s) + "/services/runs/",
            "OPSBOOK_ANSIBLE_DIR": ANSIBLE_MOUNT,
            "ANSIBLE_CONFIG": f"{ANSIBLE_MOUNT}/ansible.cfg",
            # known_hosts' @cert-authority line (the host CA); empty: no host is trusted.
            "OPSBOOK_SSH_HOST_CA": s["SSH_HOST_CA_PUBLIC_KEY"],
        },
        "notebook_dir": HOME,
        "default_url": "/lab",
        # A login storm on a small machine: thirty servers starting together need ~1 CPU-second
        # each, so the last may listen after a minute; JupyterHub's defaults (60 s to start, 30 s
        # to answer) would turn that wait into failed spawns. A hung start still fails, later.
        "start_timeout": SPAWN_PATIENCE,
        "http_timeout": SPAWN_PATIENCE,
        # The server's own token (JUPYTERHUB_API_TOKEN, what runbooks call the runs service
        # with): the default server scopes, plus the runs service's, as far as the user holds them.
        "server_token_scopes": [
            "users:activity!user",
            "access:servers!server",
            "access:services!service=runs",
            *sorted(SCOPE_DESCRIPTIONS),
        ],
        "args": _server_args(s),
    }


def _server_args(s: Settings) -> list[str]:
    """jupyterhub-singleuser's arguments when the hub is https: HSTS on its answers, and its
    own `_xsrf` cookie Secure (the hub's cookie options reach only the hub's OAuth cookies)."""
    if not public_is_https(s):
        return []
    tornado = {
        "headers": {"Strict-Transport-Security": HSTS},
        "xsrf_cookie_kwargs": {"secure": True},
    }
    # A Python literal, as traitlets reads a dict on the command line (JSON's true is not one).
    return [f"--ServerApp.tornado_settings={tornado!r}"]


def public_hub_url(s: Settings) -> str:
    """The hub as browsers reach it: OAUTH_CALLBACK_URL is <that>/hub/oauth_callback."""
    return s["OAUTH_CALLBACK_URL"].removesuffix("/hub/oauth_callback").rstrip("/")


def refuse_outside_server_groups(policy: GroupPolicy, spawner: Any) -> None:
    """403 unless the spawner's user is in a server group (any spawner's pre_spawn_hook)."""
    if not policy.may_have_server(_groups_of(spawner.user)):
        raise web.HTTPError(403, "Only members of the server groups get a server.")


def _server_groups_only(policy: GroupPolicy) -> Callable[[Any], None]:
    """Refuse a server outside the server groups.

    Checked at each spawn, with the groups of the latest refresh (refresh_pre_spawn). No
    credential is handed out here: a server's SSH certificate comes from the runs service,
    which checks the caller's scopes and runs each time it signs one.
    """

    def pre_spawn_hook(spawner: Any) -> None:
        refuse_outside_server_groups(policy, spawner)

    return pre_spawn_hook


def hub_services(s: Settings, idle_culler: bool = True) -> list[dict]:
    """Services the hub knows: each with its own token or command, and a role of its own below.

    idle_culler=False leaves ours out (on Kubernetes the chart runs the culler: its `cull`
    values, helm/values.yaml)."""
    # Prometheus scrapes /hub/metrics with this token.
    prometheus = {"name": "prometheus", "api_token": s["HUB_METRICS_TOKEN"]}
    # The ledger of patch runs and its status page, at /services/runs/ (own container).
    runs = {
        "name": "runs",
        "url": s["RUNS_SERVICE_URL"],
        "api_token": s["RUNS_SERVICE_TOKEN"],
        "oauth_client_id": "service-runs",
        "oauth_redirect_uri": "/services/runs/oauth_callback",
        "oauth_client_allowed_scopes": sorted(SCOPE_DESCRIPTIONS),
        # Our own service: no "Authorize access" page between a user and the status page.
        "oauth_no_confirm": True,
        "display": True,
    }
    if not idle_culler:
        return [prometheus, runs]
    culler = {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={s['CULL_IDLE_TIMEOUT']}",
            f"--cull-every={s['CULL_EVERY']}",
        ],
    }
    return [culler, prometheus, runs]


# What the idle culler may do, and nothing more (the chart gives its culler the same scopes).
IDLE_CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")


def hub_roles(s: Settings, idle_culler: bool = True) -> list[dict]:
    """The groups' roles, and for each service only the scopes it needs (idle_culler: as for
    hub_services)."""
    culler = {
        "name": "idle-culler",
        "scopes": list(IDLE_CULLER_SCOPES),
        "services": ["idle-culler"],
    }
    return [
        *group_policy(s).roles(),
        *([culler] if idle_culler else []),
        {"name": "metrics-reader", "scopes": ["read:metrics"], "services": ["prometheus"]},
        {
            # Who is on call (the handoff's choices), and users' groups.
            "name": "runs-service",
            "scopes": ["list:users", "read:users:groups", "read:groups"],
            "services": ["runs"],
        },
    ]


def custom_scopes() -> dict[str, dict]:
    """The runs service's scopes, declared to the hub."""
    return {name: {"description": doc} for name, doc in SCOPE_DESCRIPTIONS.items()}


def network_keeper_service(s: Settings) -> dict:
    """Keeps every member on every engineer's network (opsbook_hub.networks; Docker only: on
    Kubernetes, network policies do this). No API token use, no role: it talks to Docker."""
    return {
        "name": "network-keeper",
        "command": [
            sys.executable,
            "-m",
            "opsbook_hub.networks",
            f"--prefix={s['CONTAINER_PREFIX']}",
        ],
    }


def configure_services(c: Config, s: Settings) -> None:
    c.JupyterHub.custom_scopes = custom_scopes()
    c.JupyterHub.services = [*hub_services(s), network_keeper_service(s)]
    c.JupyterHub.load_roles = hub_roles(s)
    c.JupyterHub.authenticate_prometheus = True


def apply(c: Config, s: Settings) -> None:
    configure_hub(c, s)
    configure_proxy(c, s)
    configure_authenticator(c, s)
    configure_access(c, s)
    configure_https(c, s)
    configure_tokens(c, s)
    configure_spawner(c, s)
    configure_services(c, s)
