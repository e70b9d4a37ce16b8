"""Settings -> JupyterHub config, checked on a bare traitlets Config without starting a hub."""

from types import SimpleNamespace

import pytest
from opsbook_hub import configure, settings
from tornado import web
from traitlets.config import Config

from .valid_env import HOST_CA, VALID_ENV


@pytest.fixture
def config() -> Config:
    c = Config()
    configure.apply(c, settings.load({**VALID_ENV, "GROUPS_VIEWER": "viewers managers"}))
    return c


def user_in(*groups: str) -> SimpleNamespace:
    return SimpleNamespace(name="someone", groups=[SimpleNamespace(name=g) for g in groups])


def test_servers_survive_a_hub_restart_and_the_proxy_is_external(config):
    assert config.JupyterHub.cleanup_servers is False
    assert config.ConfigurableHTTPProxy.should_start is False
    assert config.ConfigurableHTTPProxy.api_url == "http://proxy-api:8001"


def test_groups_come_from_the_provider_claim(config):
    auth = config.OpsbookAuthenticator
    assert config.JupyterHub.authenticator_class.endswith("OpsbookAuthenticator")
    assert auth.manage_groups is True
    assert auth.auth_state_groups_key == "oauth_user.groups"
    assert auth.allowed_groups == {"admins", "ops", "oncall", "viewers", "managers"}
    assert not auth.get("admin_groups")  # admins get a role of their own, not the admin flag
    assert auth.enable_auth_state is True
    assert auth.auth_refresh_age == 300
    assert "none of the Opsbook groups" in auth.custom_403_message


def test_default_user_role_has_no_server_and_engineers_get_theirs(config):
    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    user_scopes = roles["user"]["scopes"]
    assert "self" not in user_scopes
    assert not [s for s in user_scopes if s.split("!")[0] in ("servers", "tokens")]
    assert "custom:runs:read" in user_scopes
    assert roles["engineer"]["scopes"] == ["self", "custom:runs:write"]
    assert roles["engineer"]["groups"] == ["oncall", "ops"]
    assert roles["oncall"]["scopes"] == ["custom:runs:production", "custom:runs:takeover"]
    assert roles["oncall"]["groups"] == ["oncall"]


def test_the_runs_service_is_registered_with_its_scopes(config):
    assert set(config.JupyterHub.custom_scopes) == {
        "custom:runs:read",
        "custom:runs:write",
        "custom:runs:production",
        "custom:runs:takeover",
    }
    runs = next(s for s in config.JupyterHub.services if s["name"] == "runs")
    assert runs["url"] == "http://runs:8000"
    assert runs["api_token"] == "r" * 64
    assert runs["oauth_redirect_uri"] == "/services/runs/oauth_callback"
    assert set(runs["oauth_client_allowed_scopes"]) == set(config.JupyterHub.custom_scopes)
    role = next(r for r in config.JupyterHub.load_roles if r.get("services") == ["runs"])
    assert set(role["scopes"]) == {"list:users", "read:users:groups", "read:groups"}


def test_the_servers_token_may_call_the_runs_service(config):
    scopes = config.DockerSpawner.server_token_scopes
    assert "access:services!service=runs" in scopes
    assert {"custom:runs:write", "custom:runs:takeover"} <= set(scopes)
    assert "self" not in scopes and "inherit" not in scopes


def test_viewers_land_on_home_and_engineers_on_their_server(config):
    default_url = config.JupyterHub.default_url
    hub = SimpleNamespace(base_url="/hub/")
    viewer = SimpleNamespace(current_user=user_in("managers"), hub=hub)
    engineer = SimpleNamespace(current_user=user_in("ops"), hub=hub)
    assert default_url(viewer) == "/hub/home"
    assert default_url(engineer) is None
    has_server = config.JupyterHub.template_vars["opsbook_has_server"]
    assert has_server(user_in("oncall")) and not has_server(user_in("viewers"))


def test_spawn_is_refused_outside_the_server_groups(config):
    hook = config.DockerSpawner.pre_spawn_hook
    hook(SimpleNamespace(user=user_in("ops"), volumes={}))
    with pytest.raises(web.HTTPError) as refused:
        hook(SimpleNamespace(user=user_in("viewers", "admins")))
    assert refused.value.status_code == 403


def test_engineer_container_home_library_limits_and_no_privileges(config):
    spawner = config.DockerSpawner
    assert spawner.image == "opsbook/singleuser:0.1.0"
    assert spawner.remove is True
    assert spawner.volumes == {
        "{prefix}-home-{username}": "/home/jovyan",
        "/srv/opsbook/shared-notebooks": {"bind": "/home/jovyan/runbooks", "mode": "ro"},
        "/srv/opsbook/ansible": {"bind": "/home/jovyan/ansible", "mode": "ro"},
    }
    assert not any("docker.sock" in key for key in spawner.volumes)
    assert spawner.mem_limit == "2G"
    assert spawner.cpu_limit == 1.0
    assert spawner.extra_host_config == {
        "cpu_shares": 256,  # the services' weight is Docker's default, 1024
        "pids_limit": 512,
        "memswap_limit": "2G",  # memory plus swap: no swap at all
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {
            "/run/opsbook": "size=1m,mode=0700,uid=1000,gid=100",
            "/tmp": "size=256m,mode=1777",
        },
        "dns_opt": ["timeout:1", "attempts:1"],
    }
    # No shared network: each server's own (opsbook_hub.networks), internal by default.
    assert "network_name" not in spawner
    assert config.OpsbookDockerSpawner.network_internal is True
    assert config.OpsbookDockerSpawner.network_pool == "10.99.0.0/16"
    assert spawner.use_internal_ip is True


def test_limits_follow_the_settings():
    c = Config()
    env = {**VALID_ENV, "MEM_LIMIT": "512m", "CPU_LIMIT": "0.5", "PIDS_LIMIT": "64"}
    configure.configure_spawner(c, settings.load(env))
    assert (c.DockerSpawner.mem_limit, c.DockerSpawner.cpu_limit) == ("512M", 0.5)
    assert c.DockerSpawner.extra_host_config["pids_limit"] == 64
    assert c.DockerSpawner.extra_host_config["memswap_limit"] == "512M"


def test_idle_culler_runs_with_the_timeout_and_only_the_scopes_it_needs():
    s = settings.load({**VALID_ENV, "CULL_IDLE_TIMEOUT": "900", "CULL_EVERY": "60"})
    culler = next(
        service for service in configure.hub_services(s) if service["name"] == "idle-culler"
    )
    assert culler["command"][1:] == [
        "-m",
        "jupyterhub_idle_culler",
        "--timeout=900",
        "--cull-every=60",
    ]
    culler_role = next(r for r in configure.hub_roles(s) if r["name"] == "idle-culler")
    assert set(culler_role["scopes"]) == {
        "list:users",
        "read:users:activity",
        "read:servers",
        "delete:servers",
    }


def test_prometheus_reads_metrics_with_its_own_token_and_nothing_else(config):
    prometheus = next(s for s in config.JupyterHub.services if s["name"] == "prometheus")
    assert prometheus == {"name": "prometheus", "api_token": "m" * 64}
    role = next(r for r in config.JupyterHub.load_roles if r.get("services") == ["prometheus"])
    assert role["scopes"] == ["read:metrics"]
    assert config.JupyterHub.authenticate_prometheus is True


def test_containers_know_where_monitoring_and_playbooks_are(config):
    env = config.DockerSpawner.environment
    assert env["OPSBOOK_PROMETHEUS_URL"] == "http://prometheus:9090"
    # Not Alertmanager: the runs service silences batches; engineers never reach it.
    assert not [name for name in env if "ALERTMANAGER" in name]
    assert env["ANSIBLE_CONFIG"] == "/home/jovyan/ansible/ansible.cfg"
    assert env["OPSBOOK_RUNS_URL"] == "http://runs:8000/services/runs"
    # the links a runbook prints (approval requests) are the browser's, not the container's
    assert env["OPSBOOK_RUNS_PUBLIC_URL"] == "http://127.0.0.1:8000/services/runs/"


def test_no_fleet_key_is_mounted_and_viewers_still_get_no_server(config):
    hook = config.DockerSpawner.pre_spawn_hook
    engineer = SimpleNamespace(user=user_in("oncall"), volumes={"home": "/home/jovyan"})
    hook(engineer)
    assert engineer.volumes == {"home": "/home/jovyan"}
    assert not any("ssh" in str(key) for key in config.DockerSpawner.volumes)
    viewer = SimpleNamespace(user=user_in("viewers"), volumes={"home": "/home/jovyan"})
    with pytest.raises(web.HTTPError):
        hook(viewer)
    assert viewer.volumes == {"home": "/home/jovyan"}


def test_containers_get_the_host_ca_for_known_hosts():
    c = Config()
    configure.configure_spawner(
        c, settings.load({**VALID_ENV, "SSH_HOST_CA_PUBLIC_KEY": f"  {HOST_CA} host-ca\n"})
    )
    assert c.DockerSpawner.environment["OPSBOOK_SSH_HOST_CA"] == HOST_CA


def test_without_a_host_ca_the_containers_get_an_empty_one(config):
    """Empty: opsbook-start writes no @cert-authority line, so ssh trusts no host (fails closed)."""
    assert config.DockerSpawner.environment["OPSBOOK_SSH_HOST_CA"] == ""


def test_engineers_servers_come_from_our_docker_spawner(config):
    from traitlets.utils.importstring import import_item

    spawner_class = import_item(config.JupyterHub.spawner_class)
    assert spawner_class.__mro__[1].__name__ == "DockerSpawner"  # its settings: c.DockerSpawner
    assert spawner_class().listen_poll_interval == 0.02


def test_admins_manage_users_and_servers_but_nobody_holds_the_builtin_admin_role(config):
    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    admins = roles["opsbook-admin"]
    assert admins["groups"] == ["admins"]
    assert {"admin-ui", "list:users", "read:users", "servers"} <= set(admins["scopes"])
    # Membership of the built-in role pinned to nobody: JupyterHub then clears every .admin flag.
    assert roles["admin"] == {"name": "admin", "users": [], "services": []}
    assert config.JupyterHub.admin_access is False


def test_admins_cannot_mint_tokens_for_others_nor_act_in_their_servers(config):
    """The scopes the admin groups hold, expanded as JupyterHub expands them: none of what lets
    someone act in another's name."""
    from jupyterhub import scopes

    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    held: set[str] = set()
    for scope in roles["opsbook-admin"]["scopes"]:
        held |= scopes._expand_scope(scope)
    for forbidden in (
        "tokens",
        "read:tokens",
        "access:servers",
        "admin:auth_state",
        "admin:users",
        "admin:servers",
        "shares",
        "users:shares",
        "proxy",
        "shutdown",
    ):
        assert forbidden not in held, forbidden
    assert {"servers", "delete:servers", "admin-ui"} <= held


def test_no_token_lives_forever(config):
    week = 7 * 24 * 3600
    assert config.JupyterHub.token_expires_in_max_seconds == week
    assert config.JupyterHub.oauth_token_expires_in == week
    c = Config()
    configure.apply(c, settings.load({**VALID_ENV, "API_TOKEN_MAX_SECONDS": "3600"}))
    assert c.JupyterHub.token_expires_in_max_seconds == 3600


HTTPS_ENV = {
    **VALID_ENV,
    "OAUTH_CALLBACK_URL": "https://opsbook.example.com/hub/oauth_callback",
    "OAUTH_AUTHORIZE_URL": "https://sso.example.com/auth",
    "OAUTH_TOKEN_URL": "https://sso.example.com/token",
    "OAUTH_USERDATA_URL": "https://sso.example.com/me",
}


def test_an_https_hub_sets_secure_cookies_and_hsts_on_the_hub_and_the_servers():
    c = Config()
    configure.apply(c, settings.load(HTTPS_ENV))
    tornado = c.JupyterHub.tornado_settings
    assert tornado["cookie_options"] == {"secure": True}
    assert tornado["headers"]["Strict-Transport-Security"].startswith("max-age=")
    server_tornado = server_tornado_settings(c.DockerSpawner.args)
    assert server_tornado["headers"]["Strict-Transport-Security"] == configure.HSTS
    assert server_tornado["xsrf_cookie_kwargs"] == {"secure": True}


def server_tornado_settings(args: list[str]) -> dict:
    """The arguments as jupyter_server's command line reads them (traitlets, a Dict trait)."""
    from traitlets import Dict
    from traitlets.config import Application

    class ServerApp(Application):
        tornado_settings = Dict().tag(config=True)

    app = ServerApp()
    app.parse_command_line(args)
    return app.tornado_settings


def test_https_keeps_tornado_settings_set_before():
    c = Config()
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 30, "headers": {"X-Team": "ops"}}
    configure.configure_https(c, settings.load(HTTPS_ENV))
    tornado = c.JupyterHub.tornado_settings
    assert tornado["slow_spawn_timeout"] == 30
    assert tornado["headers"]["X-Team"] == "ops"
    assert "Strict-Transport-Security" in tornado["headers"]


def test_a_plain_http_hub_sets_neither(config):
    assert "tornado_settings" not in config.JupyterHub
    assert config.DockerSpawner.args == []
