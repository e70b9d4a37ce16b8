"""Re-record package-facts-events.json: ansible.builtin.package_facts run for real on this machine.

Two inventory hosts (web-1, web-2) are this machine (connection local, the system's Python, which
has python3-apt); the packages kept are a few of Debian's, one with an epoch. Run from anywhere
with the project's venv: python tests/unit/opsbook/data/record_package_facts.py
"""

import json
import tempfile
from pathlib import Path

from opsbook.plays import run_play

HERE = Path(__file__).parent
KEPT_PACKAGES = ("dpkg", "libc6", "diffutils", "bsdutils")
PLAYBOOK = """
- name: package facts
  hosts: all
  gather_facts: false
  tasks:
    - name: read the installed packages
      ansible.builtin.package_facts:
"""
INVENTORY = """
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: /usr/bin/python3
  hosts:
    web-1:
    web-2:
"""


def trimmed(event: dict) -> dict:
    """The event as ansible-runner gave it, with only the kept packages in its facts."""
    data = event.get("event_data", {})
    kept = {key: event[key] for key in ("event", "counter", "stdout") if key in event}
    kept["event_data"] = {k: data[k] for k in ("host", "task", "task_action") if k in data}
    facts = (data.get("res") or {}).get("ansible_facts")
    if facts is not None:
        packages = facts["packages"]
        kept["event_data"]["res"] = {
            "changed": data["res"].get("changed"),
            "ansible_facts": {"packages": {p: packages[p] for p in KEPT_PACKAGES if p in packages}},
        }
    return kept


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "facts.yml").write_text(PLAYBOOK)
        (Path(folder) / "hosts.yml").write_text(INVENTORY)
        result = run_play(Path(folder) / "facts.yml", Path(folder) / "hosts.yml", runs_dir=folder)
    events = [trimmed(event) for event in result.events]
    (HERE / "package-facts-events.json").write_text(json.dumps(events, indent=1) + "\n")
    print(f"{len(events)} events, status {result.status}")
