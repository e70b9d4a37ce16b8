"""Every setting is checked at start; a bad one stops the hub with a line that names it."""

import os
import subprocess
import sys

import pytest
from opsbook_hub import settings

from ..conftest import HUB_DIR
from .valid_env import HOST_CA, VALID_ENV


def test_valid_environment_loads_with_defaults():
    values = settings.load(VALID_ENV)
    assert values["OAUTH_SCOPES"] == ("openid", "profile", "email", "groups")
    assert values["GROUPS_SERVER"] == ("ops",)
    assert values["GROUPS_ONCALL"] == ("oncall",)
    assert values["HUB_COOKIE_SECRET"] == bytes.fromhex("ab" * 32)
    assert values["MEM_LIMIT"] == "2G"
    assert values["CULL_IDLE_TIMEOUT"] == 3600


def test_the_host_ca_is_one_public_key_line_or_nothing():
    assert settings.load(VALID_ENV)["SSH_HOST_CA_PUBLIC_KEY"] == ""
    loaded = settings.load({**VALID_ENV, "SSH_HOST_CA_PUBLIC_KEY": f"{HOST_CA} opsbook host CA"})
    assert loaded["SSH_HOST_CA_PUBLIC_KEY"] == HOST_CA


def test_the_team_key_setting_is_gone():
    assert "FLEET_SSH_KEY_DIR" not in {setting.name for setting in settings.SETTINGS}


def test_empty_value_means_default():
    values = settings.load({**VALID_ENV, "CPU_LIMIT": "", "AUTH_REFRESH_AGE": ""})
    assert values["CPU_LIMIT"] == 1.0
    assert values["AUTH_REFRESH_AGE"] == 300


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("OAUTH_TOKEN_URL", "idp:9000/token", "OAUTH_TOKEN_URL: expected an http(s) URL"),
        ("OAUTH_AUTHORIZE_URL", "ftp://x/auth", "OAUTH_AUTHORIZE_URL: expected an http(s) URL"),
        ("OAUTH_CLIENT_SECRET", "", "OAUTH_CLIENT_SECRET: expected a secret of at least 16"),
        ("OAUTH_CLIENT_ID", "  ", "OAUTH_CLIENT_ID: expected a non-empty value"),
        ("MEM_LIMIT", "lots", "MEM_LIMIT: expected a size such as 512M or 2G, got 'lots'"),
        ("CPU_LIMIT", "one", "CPU_LIMIT: expected a number above 0"),
        ("CPU_LIMIT", "-2", "CPU_LIMIT: expected a number above 0"),
        ("PIDS_LIMIT", "1.5", "PIDS_LIMIT: expected a whole number above 0"),
        ("CULL_IDLE_TIMEOUT", "0", "CULL_IDLE_TIMEOUT: expected a whole number above 0"),
        ("HUB_COOKIE_SECRET", "abc", "HUB_COOKIE_SECRET: expected 64 hex digits"),
        ("JUPYTERHUB_CRYPT_KEY", "zz" * 32, "JUPYTERHUB_CRYPT_KEY: expected 64 hex digits"),
        ("RUNBOOKS_HOST_PATH", "shared-notebooks", "RUNBOOKS_HOST_PATH: expected an absolute"),
        ("ENGINEER_NETWORK_EGRESS", "open", "ENGINEER_NETWORK_EGRESS: expected one of none"),
        ("ENGINEER_NETWORK_POOL", "10.99.0.0", "ENGINEER_NETWORK_POOL: expected a private IPv4"),
        ("ENGINEER_NETWORK_POOL", "10.99.0.1/16", "ENGINEER_NETWORK_POOL: expected a private"),
        ("ENGINEER_NETWORK_POOL", "8.8.0.0/16", "ENGINEER_NETWORK_POOL: expected a private IPv4"),
        ("ENGINEER_NETWORK_POOL", "10.99.0.0/27", "ENGINEER_NETWORK_POOL: expected a private"),
        ("ENGINEER_NETWORK_POOL", "fd00::/64", "ENGINEER_NETWORK_POOL: expected a private IPv4"),
        ("SINGLEUSER_IMAGE", "Opsbook/Singleuser", "SINGLEUSER_IMAGE: expected an image"),
        ("SSH_HOST_CA_PUBLIC_KEY", "AAAAC3Nza", "SSH_HOST_CA_PUBLIC_KEY: expected one OpenSSH"),
        ("SSH_HOST_CA_PUBLIC_KEY", "ssh-dss AAAA", "SSH_HOST_CA_PUBLIC_KEY: expected one OpenSSH"),
        ("SSH_HOST_CA_PUBLIC_KEY", HOST_CA[:40], "SSH_HOST_CA_PUBLIC_KEY: expected one OpenSSH"),
        (
            "SSH_HOST_CA_PUBLIC_KEY",
            HOST_CA.replace("ssh-ed25519", "ssh-rsa", 1),
            "SSH_HOST_CA_PUBLIC_KEY: expected one OpenSSH",
        ),
        (
            "SSH_HOST_CA_PUBLIC_KEY",
            f"@cert-authority * {HOST_CA}",
            "SSH_HOST_CA_PUBLIC_KEY: expected one OpenSSH",
        ),
        (
            "SSH_HOST_CA_PUBLIC_KEY",
            f"{HOST_CA}\n{HOST_CA}",
            "SSH_HOST_CA_PUBLIC_KEY: expected one OpenSSH",
        ),
    ],
)
def test_bad_value_is_named_with_what_was_expected(name, value, expected):
    with pytest.raises(settings.SettingsError) as raised:
        settings.load({**VALID_ENV, name: value})
    assert str(raised.value).startswith(expected)
    assert len(str(raised.value).splitlines()) == 1


def test_missing_required_setting_is_named():
    env = {k: v for k, v in VALID_ENV.items() if k != "OAUTH_USERDATA_URL"}
    with pytest.raises(settings.SettingsError, match=r"^OAUTH_USERDATA_URL: required, not set"):
        settings.load(env)


def test_every_problem_is_reported_at_once():
    with pytest.raises(settings.SettingsError) as raised:
        settings.load({**VALID_ENV, "MEM_LIMIT": "x", "CPU_LIMIT": "y"})
    assert [line.split(":")[0] for line in str(raised.value).splitlines()] == [
        "MEM_LIMIT",
        "CPU_LIMIT",
    ]


def test_secrets_are_never_echoed():
    secret = "short-secret"
    with pytest.raises(settings.SettingsError) as raised:
        settings.load({**VALID_ENV, "OAUTH_CLIENT_SECRET": secret})
    assert secret not in str(raised.value)


def test_hub_stops_at_start_with_one_line_per_bad_setting():
    """The real config file, run as JupyterHub runs it: exit 1, the variable named, no traceback."""
    env = {**os.environ, **VALID_ENV, "OAUTH_TOKEN_URL": "not a url"}
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "--config", str(HUB_DIR / "jupyterhub_config.py")],
        env={**env, "PYTHONPATH": str(HUB_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HUB_DIR,
    )
    assert result.returncode == 1
    assert "opsbook hub: OAUTH_TOKEN_URL: expected an http(s) URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_only_loads_the_settings_named_and_refuses_a_name_not_declared():
    """helm/values.yaml's hub.extraConfig loads a subset; a typo there is not silently ignored."""
    values = settings.load(VALID_ENV, only=["OAUTH_CLIENT_ID", "GROUPS_ADMIN"])
    assert values == {"OAUTH_CLIENT_ID": VALID_ENV["OAUTH_CLIENT_ID"], "GROUPS_ADMIN": ("admins",)}
    with pytest.raises(ValueError, match="OAUTH_CLIENT_IDS"):
        settings.load(VALID_ENV, only=["OAUTH_CLIENT_IDS"])


def test_the_message_format_is_the_shared_registrys():
    """One registry for the hub and the runs service (opsbook.contract.settings)."""
    from opsbook.contract import settings as contract

    assert settings.SettingsError is contract.SettingsError
    assert settings.Setting is contract.Setting


def test_an_https_hub_refuses_plain_http_oauth_endpoints_naming_each():
    env = {
        **VALID_ENV,
        "OAUTH_CALLBACK_URL": "https://opsbook.example.com/hub/oauth_callback",
        "OAUTH_AUTHORIZE_URL": "https://sso.example.com/auth",
        "OAUTH_LOGOUT_REDIRECT_URL": "http://sso.example.com/logout",
    }
    with pytest.raises(settings.SettingsError) as refused:
        settings.load(env)
    lines = str(refused.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "OAUTH_TOKEN_URL",
        "OAUTH_USERDATA_URL",
        "OAUTH_LOGOUT_REDIRECT_URL",
    ]
    assert "as OAUTH_CALLBACK_URL is https" in lines[0]
    assert "'http://idp:9000/token'" in lines[0]


def test_an_https_hub_with_https_endpoints_and_a_plain_hub_with_any_load():
    https = {
        "OAUTH_CALLBACK_URL": "https://opsbook.example.com/hub/oauth_callback",
        "OAUTH_AUTHORIZE_URL": "https://sso.example.com/auth",
        "OAUTH_TOKEN_URL": "https://sso.example.com/token",
        "OAUTH_USERDATA_URL": "https://sso.example.com/me",
    }
    assert settings.load({**VALID_ENV, **https})["OAUTH_TOKEN_URL"].startswith("https://")
    mixed = {**VALID_ENV, "OAUTH_AUTHORIZE_URL": "https://sso.example.com/auth"}
    assert settings.load(mixed)["OAUTH_TOKEN_URL"] == "http://idp:9000/token"


def test_the_endpoint_check_applies_to_what_was_loaded():
    env = {**VALID_ENV, "OAUTH_CALLBACK_URL": "https://opsbook.example.com/hub/oauth_callback"}
    loaded = settings.load(env, only=("OAUTH_CALLBACK_URL", "OAUTH_CLIENT_ID"))
    assert set(loaded) == {"OAUTH_CALLBACK_URL", "OAUTH_CLIENT_ID"}
    with pytest.raises(settings.SettingsError, match=r"^OAUTH_TOKEN_URL: expected an https URL"):
        settings.load(env, only=("OAUTH_CALLBACK_URL", "OAUTH_TOKEN_URL"))


@pytest.mark.parametrize("value", ["0", "59", "forever", str(367 * 24 * 3600)])
def test_the_token_lifetime_is_bounded(value):
    with pytest.raises(settings.SettingsError, match=r"^API_TOKEN_MAX_SECONDS: expected a whole"):
        settings.load({**VALID_ENV, "API_TOKEN_MAX_SECONDS": value})
