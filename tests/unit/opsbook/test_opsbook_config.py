"""Settings: read from the environment the hub gives, and every wrong one named."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbook.config import Settings
from opsbook.errors import ConfigError, OpsbookError


@pytest.fixture
def ansible_dir(tmp_path: Path) -> Path:
    """A folder shaped like ~/ansible: playbooks/, the demo inventory, ansible.cfg."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "inventories" / "demo").mkdir(parents=True)
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    return tmp_path


@pytest.fixture
def env(ansible_dir: Path) -> dict[str, str]:
    """What the hub gives an engineer's container (hub/opsbook_hub/configure.py)."""
    return {
        "OPSBOOK_PROMETHEUS_URL": "http://prometheus:9090/",
        "OPSBOOK_PACKAGE_REPO_URL": "http://pkgrepo/debian",
        "OPSBOOK_ANSIBLE_DIR": str(ansible_dir),
        "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg"),
        "JUPYTERHUB_USER": "alice",
        "HOME": "/home/jovyan",
    }


def problems(environ: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    return raised.value.problems


def test_the_hubs_environment_gives_every_setting(env: dict[str, str], ansible_dir: Path) -> None:
    settings = Settings.from_env(env)
    assert settings.prometheus_url == "http://prometheus:9090"  # trailing slash dropped
    assert not hasattr(settings, "alertmanager_url")  # the runs service silences batches
    assert settings.package_repo_url == "http://pkgrepo/debian"
    assert settings.ansible_dir == ansible_dir
    assert settings.inventory == ansible_dir / "inventories" / "demo"
    assert settings.runs_dir == Path("~/.opsbook/runs").expanduser()
    assert settings.user == "alice"
    assert settings.playbook("patch.yml") == ansible_dir / "playbooks" / "patch.yml"
    assert "Prometheus:   http://prometheus:9090" in settings.describe()


def test_inventory_runs_dir_and_user_can_be_chosen(env: dict[str, str], tmp_path: Path) -> None:
    inventory = tmp_path / "prod.yml"
    inventory.write_text("all: {}\n")
    del env["JUPYTERHUB_USER"]
    settings = Settings.from_env(
        env
        | {
            "OPSBOOK_INVENTORY": str(inventory),
            "OPSBOOK_RUNS_DIR": str(tmp_path / "r"),
            "USER": "bob",
        }
    )
    assert settings.inventory == inventory
    assert settings.runs_dir == tmp_path / "r"
    assert settings.user == "bob"


def test_missing_settings_are_each_named(env: dict[str, str]) -> None:
    found = problems({"HOME": env["HOME"]})
    assert set(found) == {
        "OPSBOOK_PROMETHEUS_URL",
        "OPSBOOK_PACKAGE_REPO_URL",
        "OPSBOOK_ANSIBLE_DIR",
    }
    assert found["OPSBOOK_PROMETHEUS_URL"] == (
        "not set; expected an http(s) URL such as http://prometheus:9090"
    )
    assert found["OPSBOOK_ANSIBLE_DIR"].startswith("not set; expected the folder")


def test_one_line_per_bad_variable_in_the_message(env: dict[str, str]) -> None:
    with pytest.raises(OpsbookError) as raised:
        Settings.from_env(
            env | {"OPSBOOK_PROMETHEUS_URL": "prometheus:9090", "OPSBOOK_RUNS_DIR": "runs"}
        )
    assert str(raised.value).splitlines() == [
        "opsbook settings are wrong; fix the environment, then restart the kernel:",
        "  OPSBOOK_PROMETHEUS_URL: expected an http(s) URL such as http://prometheus:9090, "
        "got 'prometheus:9090'",
        "  OPSBOOK_RUNS_DIR: expected an absolute path, got 'runs'",
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OPSBOOK_PROMETHEUS_URL", "ftp://prometheus", "expected an http(s) URL such as"),
        ("OPSBOOK_PROMETHEUS_URL", "http://", "expected an http(s) URL such as"),
        ("OPSBOOK_PACKAGE_REPO_URL", "http://pkgrepo/debian?x=1", "without ?query or #fragment"),
        ("OPSBOOK_ANSIBLE_DIR", "ansible", "expected an absolute path, got 'ansible'"),
        ("OPSBOOK_ANSIBLE_DIR", "/nonexistent/ansible", "'/nonexistent/ansible' is not a folder"),
        ("OPSBOOK_INVENTORY", "/nonexistent/hosts.yml", "'/nonexistent/hosts.yml' does not exist"),
        ("ANSIBLE_CONFIG", "/nonexistent/ansible.cfg", "is not a file; expected Ansible's"),
    ],
)
def test_a_wrong_value_is_named(env: dict[str, str], name: str, value: str, message: str) -> None:
    found = problems(env | {name: value})
    assert list(found) == [name]
    assert message in found[name]


def test_default_inventory_must_exist(env: dict[str, str], ansible_dir: Path) -> None:
    (ansible_dir / "inventories" / "demo").rmdir()
    found = problems(env)
    assert list(found) == ["OPSBOOK_INVENTORY"]
    assert found["OPSBOOK_INVENTORY"].startswith("not set, and the default")


def test_runs_dir_must_not_be_a_file(env: dict[str, str], tmp_path: Path) -> None:
    a_file = tmp_path / "runs"
    a_file.write_text("")
    assert (
        "exists and is not a folder"
        in problems(env | {"OPSBOOK_RUNS_DIR": str(a_file)})["OPSBOOK_RUNS_DIR"]
    )


def test_reads_os_environ_by_default(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().prometheus_url == "http://prometheus:9090"
