"""The runs service's settings and start-up: a bad value stops it with one line naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opsbook.service.settings import DEFAULT_DATABASE_URL, SettingsError, load

TOKEN = "0123456789abcdef0123456789abcdef"


def test_defaults():
    settings = load({"JUPYTERHUB_API_TOKEN": TOKEN})
    assert settings["RUNS_DATABASE_URL"] == DEFAULT_DATABASE_URL
    assert settings["RUNS_LEASE_SECONDS"] == 60
    assert settings["RUNS_ONCALL_GROUP"] == "oncall"
    assert settings["RUNS_PRODUCTION_ENVIRONMENTS"] == frozenset({"production"})
    assert settings["RUNS_WEBHOOK_URL"] == ""
    assert settings["JUPYTERHUB_SERVICE_PREFIX"] == "/services/runs/"
    assert settings["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    assert settings["RUNS_AUTH_CACHE_SECONDS"] == 30


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
    assert str(caught.value).startswith("JUPYTERHUB_API_TOKEN: not set; expected")


def test_postgresql_and_sqlite_urls():
    for url in ("postgresql+psycopg2://runs:pw@postgres:5432/runs", "sqlite:////data/r.sqlite"):
        assert (
            load({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_DATABASE_URL": url})["RUNS_DATABASE_URL"]
            == url
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
    result = run_service({"JUPYTERHUB_API_TOKEN": TOKEN, "RUNS_DATABASE_URL": url})
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("opsbook runs: RUNS_DATABASE_URL: cannot open the database")
