"""The runs service's settings and start-up: a bad value stops it with one line naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from opsbook.contract.stacks import NONPRODUCTION_SETTING, is_production
from opsbook.service.rules import ApprovalPolicy
from opsbook.service.settings import (
    DEFAULT_DATABASE_URL,
    SETTINGS,
    SettingsError,
    approval_policy,
    load,
    masked_database_url,
)

TOKEN = "0123456789abcdef0123456789abcdef"


def test_defaults():
    settings = load({"JUPYTERHUB_API_TOKEN": TOKEN})
    assert settings["RUNS_DATABASE_URL"] == DEFAULT_DATABASE_URL
    assert settings["RUNS_LEASE_SECONDS"] == 60
    assert settings["RUNS_ONCALL_GROUP"] == "oncall"
    assert settings["OPSBOOK_NONPRODUCTION_ENVIRONMENTS"] == frozenset()
    assert settings["RUNS_INVENTORY"] == "/etc/opsbook/ansible/inventories/demo"
    assert settings["RUNS_WEBHOOK_URL"] == ""
    assert settings["JUPYTERHUB_SERVICE_PREFIX"] == "/services/runs/"
    assert settings["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    assert settings["RUNS_AUTH_CACHE_SECONDS"] == 30
    assert settings["RUNS_SSH_CA_KEY"] == "/run/secrets/opsbook-user-ca"
    assert settings["RUNS_SSH_CERT_MINUTES"] == 15
    assert settings["RUNS_SSH_SOURCE_ADDRESSES"] == ()
    assert approval_policy(settings) == ApprovalPolicy(
        production=True, environments=frozenset(), approvers=1, ttl_seconds=1800
    )


@pytest.mark.parametrize(
    ("raw", "production", "names"),
    [
        ("production", True, set()),
        ("PRODUCTION", True, set()),
        ("none", False, set()),
        (" None ", False, set()),
        ("staging", True, {"staging"}),  # as well as production: never instead of it
        ("production, Staging qa", True, {"staging", "qa"}),
        ("nnoe", True, {"nnoe"}),  # a misspelt none is a name: production still needs approval
    ],
)
def test_approval_environments_fail_closed(raw, production, names):
    policy = approval_policy(
        load({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_APPROVAL_ENVIRONMENTS": raw})
    )
    assert (policy.production, policy.environments) == (production, frozenset(names))


def test_approval_settings_out_of_range_name_what_they_expect():
    with pytest.raises(SettingsError) as caught:
        load(
            {
                "JUPYTERHUB_API_TOKEN": TOKEN,
                "RUNS_APPROVAL_ENVIRONMENTS": "none staging",
                "RUNS_APPROVERS": "0",
                "RUNS_APPROVAL_TTL": "59",
            }
        )
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "RUNS_APPROVAL_ENVIRONMENTS",
        "RUNS_APPROVERS",
        "RUNS_APPROVAL_TTL",
    ]
    assert "none stands alone" in lines[0]
    assert lines[1] == "RUNS_APPROVERS: expected a whole number from 1 to 5, got '0'"
    assert lines[2] == "RUNS_APPROVAL_TTL: expected a whole number from 60 to 86400, got '59'"
    settings = load(
        {"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_APPROVERS": "5", "RUNS_APPROVAL_TTL": "86400"}
    )
    assert (settings["RUNS_APPROVERS"], settings["RUNS_APPROVAL_TTL"]) == (5, 86400)


def test_every_bad_setting_gets_one_line_and_secrets_are_not_echoed():
    with pytest.raises(SettingsError) as caught:
        load(
            {
                "JUPYTERHUB_API_TOKEN": "short",
                "RUNS_LEASE_SECONDS": "soon",
                "RUNS_DATABASE_URL": "mysql://runs:hunter2@db/runs",
                "RUNS_WEBHOOK_URL": "hooks.slack.com/x",
                "JUPYTERHUB_SERVICE_PREFIX": "/services/runs",
            }
        )
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_SERVICE_PREFIX",
        "RUNS_DATABASE_URL",
        "RUNS_LEASE_SECONDS",
        "RUNS_WEBHOOK_URL",
    ]
    text = str(caught.value)
    assert "short" not in text and "hunter2" not in text and "runs:***@db" in text
    assert "RUNS_LEASE_SECONDS: expected a whole number from 10 to 3600, got 'soon'" in lines


def test_a_missing_token():
    with pytest.raises(SettingsError) as caught:
        load({})
    assert str(caught.value) == (
        "JUPYTERHUB_API_TOKEN: required, not set (The service's token at the hub (api_token).)"
    )


def test_the_nonproduction_environments_are_the_contracts_setting_and_fail_closed():
    """One answer to "is it production?": the contract's setting name and parser; an environment
    not declared non-production is production, and with nothing declared, all of them are."""
    assert NONPRODUCTION_SETTING == "OPSBOOK_NONPRODUCTION_ENVIRONMENTS"
    declared = load({"JUPYTERHUB_API_TOKEN": TOKEN, NONPRODUCTION_SETTING: "Staging, qa  dev"})
    nonproduction = declared[NONPRODUCTION_SETTING]
    assert nonproduction == frozenset({"staging", "qa", "dev"})
    assert not is_production("staging", nonproduction)
    assert is_production("production", nonproduction)
    assert is_production("stagin", nonproduction)
    nothing = load({"JUPYTERHUB_API_TOKEN": TOKEN, NONPRODUCTION_SETTING: ""})
    assert is_production("staging", nothing[NONPRODUCTION_SETTING])
    assert "RUNS_PRODUCTION_ENVIRONMENTS" not in {s.name for s in SETTINGS}


def test_the_inventory_is_an_absolute_path_in_the_container():
    settings = load({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_INVENTORY": "/srv/inventory.yml"})
    assert settings["RUNS_INVENTORY"] == "/srv/inventory.yml"
    with pytest.raises(SettingsError) as caught:
        load({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_INVENTORY": "ansible/inventories/demo"})
    assert str(caught.value) == (
        "RUNS_INVENTORY: expected an absolute path, got 'ansible/inventories/demo'"
    )


def test_the_hub_and_the_service_share_one_registry():
    from opsbook_hub import settings as hub_settings

    from opsbook.contract import settings as contract

    assert SettingsError is contract.SettingsError is hub_settings.SettingsError
    assert all(isinstance(s, contract.Setting) for s in (*SETTINGS, *hub_settings.SETTINGS))


def test_postgresql_and_sqlite_urls():
    for url in ("postgresql+psycopg2://runs:pw@postgres:5432/runs", "sqlite:////data/r.sqlite"):
        assert (
            load({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_DATABASE_URL": url})["RUNS_DATABASE_URL"]
            == url
        )


def test_the_database_password_is_masked_for_logs():
    assert (
        masked_database_url("postgresql+psycopg2://runs:s3cret@db:5432/runs")
        == "postgresql+psycopg2://runs:***@db:5432/runs"
    )


def run_service(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opsbook.service"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_service_refuses_to_start_on_a_bad_setting():
    result = run_service({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_LEASE_SECONDS": "0"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "opsbook runs: RUNS_LEASE_SECONDS: expected a whole number from 10 to 3600, got '0'"
    )


def test_the_service_refuses_to_start_without_its_database(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/folder/runs.sqlite"
    ca_key = tmp_path / "user_ca"
    ca_key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()
        )
    )
    result = run_service(
        {"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_DATABASE_URL": url, "RUNS_SSH_CA_KEY": str(ca_key)}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # The start-up log may say what it read first (the inventory); the refusal is one line.
    (line,) = [
        line for line in result.stderr.strip().splitlines() if line.startswith("opsbook runs:")
    ]
    assert line.startswith("opsbook runs: RUNS_DATABASE_URL: cannot open the database")
