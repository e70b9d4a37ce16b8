"""Inventory: the demo fleet as a runbook sees it, and every way an inventory can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbook.errors import InventoryError
from opsbook.inventory import Inventory

DEMO = Path(__file__).parents[3] / "ansible" / "inventories" / "demo"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def demo() -> Inventory:
    return Inventory.load(DEMO)


def test_demo_inventory_has_the_web_and_db_stacks(demo: Inventory) -> None:
    assert demo.stacks() == ["db", "web"]
    assert demo.environments() == ["production", "staging"]
    assert demo.hosts("web") == ["web-1", "web-2", "web-3"]
    assert demo.hosts("db") == ["db-1", "db-2", "db-3"]


def test_demo_stacks_environments(demo: Inventory) -> None:
    assert demo.environment("web") == "staging"
    assert demo.environment("db") == "production"
    assert not hasattr(demo, "is_production")  # the runs service says what is production


def test_demo_hosts_carry_connection_and_reboot_settings(demo: Inventory) -> None:
    for host in demo.hosts("web") + demo.hosts("db"):
        variables = demo.host_vars(host)
        assert variables["ansible_user"] == "opsbook"
        assert variables["ansible_python_interpreter"] == "/usr/bin/python3"
        # No team key, no accept-new: the container's ssh_config.d names its own key, its
        # certificate and the host CA (images/singleuser/ssh_config.d/opsbook.conf).
        assert "ansible_ssh_private_key_file" not in variables
        assert "accept-new" not in variables.get("ansible_ssh_common_args", "")
        assert variables["opsbook_reboot_command"] == "kill 1"
        assert variables["opsbook_boot_time_command"] == "awk '{print $22}' /proc/1/stat"
        assert demo.exporter_instance(host) == f"{host}:9100"


def test_demo_file_and_folder_load_the_same(demo: Inventory) -> None:
    single_file = Inventory.load(DEMO / "hosts.yml")
    assert single_file.stacks() == demo.stacks()
    assert single_file.hosts("db") == demo.hosts("db")


def test_hosts_sort_naturally_and_include_subgroups(tmp_path: Path) -> None:
    inventory = write(
        tmp_path,
        "hosts.yml",
        """
all:
  children:
    stacks:
      children:
        web:
          hosts: {web-10: {}, web-2: {}}
          children:
            web_canary:
              hosts: {web-1: {}}
    environments:
      children:
        staging:
          hosts: {web-1: {}, web-2: {}, web-10: {}}
""",
    )
    loaded = Inventory.load(inventory)
    assert loaded.stacks() == ["web"]
    assert loaded.hosts("web") == ["web-1", "web-2", "web-10"]
    assert loaded.environment("web") == "staging"


def test_exporter_instance_from_group_vars_or_default(tmp_path: Path) -> None:
    write(
        tmp_path,
        "hosts.ini",
        "[web]\nweb-1\nweb-2 opsbook_exporter=10.0.0.2:9100\n"
        "[db]\ndb-1\n[stacks:children]\nweb\ndb\n[staging]\nweb-1\nweb-2\ndb-1\n"
        "[environments:children]\nstaging\n",
    )
    write(tmp_path, "group_vars/db.yml", "opsbook_exporter: db-1.internal:9200\n")
    loaded = Inventory.load(tmp_path)
    assert loaded.exporter_instances(["web-1", "web-2", "db-1"]) == {
        "web-1": "web-1:9100",
        "web-2": "10.0.0.2:9100",
        "db-1": "db-1.internal:9200",
    }


def test_unknown_stack_lists_the_known_ones(demo: Inventory) -> None:
    with pytest.raises(InventoryError, match=r"unknown stack 'wbe'; known stacks: db, web"):
        demo.hosts("wbe")
    with pytest.raises(InventoryError, match="unknown stack 'all'"):
        demo.environment("all")


def test_unknown_hosts_are_named(demo: Inventory) -> None:
    demo.check_hosts(["web-1", "db-3"])
    with pytest.raises(InventoryError, match=r"unknown hosts 'web-9', 'localhost'") as raised:
        demo.check_hosts(["web-1", "web-9", "localhost"])
    assert str(DEMO) in str(raised.value)
    with pytest.raises(InventoryError, match="unknown host 'web-9'"):
        demo.host_vars("web-9")


def test_missing_inventory(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"inventory '.*nowhere.yml' does not exist"):
        Inventory.load(tmp_path / "nowhere.yml")


def test_yaml_syntax_error_names_file_and_reason(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    broken = write(tmp_path, "hosts.yml", "all:\n  children:\n    web:\n      hosts: {web-1\n")
    with pytest.raises(InventoryError) as raised:
        Inventory.load(broken)
    message = str(raised.value)
    assert f"cannot parse inventory '{broken}'" in message
    assert "'yaml' plugin: YAML parsing failed" in message
    # ansible-core's own warnings are captured, not printed into the notebook
    assert "WARNING" not in capfd.readouterr().err


def test_structurally_wrong_yaml_names_ansibles_reason(tmp_path: Path) -> None:
    wrong = write(tmp_path, "hosts.yml", "all:\n  hosts:\n    - web-1\n    - web-2\n")
    with pytest.raises(InventoryError, match=r'Invalid "hosts" entry for "all" group'):
        Inventory.load(wrong)


def test_broken_ini_names_the_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yml", "all:\n  hosts:\n    web-1: {}\n")
    broken = write(tmp_path, "broken", "[web\nweb-1\n")
    with pytest.raises(InventoryError, match=rf"{broken}: .*'ini' plugin"):
        Inventory.load(tmp_path)


def test_inventory_without_stacks_group(tmp_path: Path) -> None:
    loaded = Inventory.load(write(tmp_path, "hosts.yml", "all:\n  hosts:\n    web-1: {}\n"))
    with pytest.raises(InventoryError, match="has no group 'stacks'"):
        loaded.stacks()


SPANNING = """
all:
  children:
    stacks:
      children:
        web:
          hosts: {web-1: {}, web-2: {}, web-3: {}}
    environments:
      children:
        staging:
          hosts: {web-1: {}, web-2: {}}
        production:
          hosts: {web-3: {}}
"""


def test_stack_spanning_two_environments_names_the_hosts(tmp_path: Path) -> None:
    loaded = Inventory.load(write(tmp_path, "hosts.yml", SPANNING))
    with pytest.raises(InventoryError) as raised:
        loaded.environment("web")
    message = str(raised.value)
    assert "stack 'web' is not in exactly one environment" in message
    assert "web-1 in staging; web-2 in staging; web-3 in production" in message


def test_host_in_no_environment_is_named(tmp_path: Path) -> None:
    text = SPANNING.replace("hosts: {web-3: {}}", "hosts: {}")
    loaded = Inventory.load(write(tmp_path, "hosts.yml", text))
    with pytest.raises(InventoryError, match="web-3 in no environment"):
        loaded.environment("web")
