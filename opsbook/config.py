"""The settings of a runbook session, read from the environment and checked before anything runs.

The hub gives every engineer's container its settings as environment variables (see
hub/opsbook_hub/configure.py); a runbook's first cell reads them with `Settings.from_env()`. A
wrong or missing setting stops that cell with one line per bad variable, naming it, rather than
letting a play or a health gate fail later in a way that hides the cause.

| variable | meaning | default |
| --- | --- | --- |
| OPSBOOK_PROMETHEUS_URL | Prometheus, for health gates and graphs | required |
| OPSBOOK_PACKAGE_REPO_URL | the Debian repository hosts update from (errata) | required |
| OPSBOOK_ANSIBLE_DIR | playbooks/ and inventories/ | required |
| OPSBOOK_INVENTORY | the Ansible inventory (file or folder) | <ansible dir>/inventories/demo |
| OPSBOOK_RUNS_DIR | where each play's record (events, stdout) is kept | ~/.opsbook/runs |
| ANSIBLE_CONFIG | Ansible's own; if set, the file must exist | unset |
| JUPYTERHUB_USER | who is running | USER, else the login name |
| OPSBOOK_SSH_CERTIFICATES | get an SSH certificate before each play (on/off) | on |
| OPSBOOK_SSH_DIR | the container's key pair and certificate (opsbook.sshcert) | /run/opsbook/ssh |

No Alertmanager: the runs service silences each batch's hosts itself (engineers' containers do not
reach Alertmanager).

OPSBOOK_SSH_CERTIFICATES=off is only for fleets whose hosts take no certificate: the unit tests'
fake fleet (connection local). Everywhere else every play first makes sure the container holds a
current certificate from the runs service, and does not start without one (fail closed).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from opsbook.errors import ConfigError

PROMETHEUS_URL = "OPSBOOK_PROMETHEUS_URL"
PACKAGE_REPO_URL = "OPSBOOK_PACKAGE_REPO_URL"
ANSIBLE_DIR = "OPSBOOK_ANSIBLE_DIR"
INVENTORY = "OPSBOOK_INVENTORY"
RUNS_DIR = "OPSBOOK_RUNS_DIR"
ANSIBLE_CONFIG = "ANSIBLE_CONFIG"
SSH_CERTIFICATES = "OPSBOOK_SSH_CERTIFICATES"
SSH_DIR = "OPSBOOK_SSH_DIR"

DEFAULT_INVENTORY = Path("inventories") / "demo"
DEFAULT_RUNS_DIR = Path("~") / ".opsbook" / "runs"
DEFAULT_SSH_DIR = Path("/run/opsbook/ssh")
_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")
PLAYBOOKS = "playbooks"

_URL_EXAMPLES = {
    PROMETHEUS_URL: "http://prometheus:9090",
    PACKAGE_REPO_URL: "http://pkgrepo/debian",
}


@dataclass(frozen=True)
class Settings:
    """Where the services, the playbooks and the inventory are, and who is running."""

    prometheus_url: str
    package_repo_url: str
    ansible_dir: Path
    inventory: Path
    runs_dir: Path
    user: str
    ssh_certificates: bool = True
    ssh_dir: Path = DEFAULT_SSH_DIR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting (from os.environ unless given); ConfigError if any is bad.

        The error lists every bad variable at once, so one restart of the kernel fixes them all.
        """
        env = os.environ if environ is None else environ
        problems: dict[str, str] = {}
        urls = {name: _url(env, name, problems) for name in _URL_EXAMPLES}
        ansible_dir = _folder(env, ANSIBLE_DIR, problems)
        inventory = _inventory(env, ansible_dir, problems)
        runs_dir = _runs_dir(env, problems)
        _ansible_config(env, problems)
        ssh_certificates = _ssh_certificates(env, problems)
        ssh_dir = _absolute(env, SSH_DIR, problems) or DEFAULT_SSH_DIR
        if problems or ansible_dir is None or inventory is None:
            raise ConfigError(problems)
        return cls(
            prometheus_url=urls[PROMETHEUS_URL],
            package_repo_url=urls[PACKAGE_REPO_URL],
            ansible_dir=ansible_dir,
            inventory=inventory,
            runs_dir=runs_dir,
            user=_user(env),
            ssh_certificates=ssh_certificates,
            ssh_dir=ssh_dir,
        )

    @property
    def playbooks_dir(self) -> Path:
        """The folder of the playbooks runbooks run (patch.yml, check.yml ...)."""
        return self.ansible_dir / PLAYBOOKS

    def playbook(self, name: str) -> Path:
        """The path of a playbook by its file name; run_play says if it does not exist."""
        return self.playbooks_dir / name

    def describe(self) -> str:
        """A few lines for the top of a runbook: what this session talks to."""
        return "\n".join(
            [
                f"user:         {self.user}",
                f"inventory:    {self.inventory}",
                f"playbooks:    {self.playbooks_dir}",
                f"runs kept in: {self.runs_dir}",
                f"Prometheus:   {self.prometheus_url}",
                f"packages:     {self.package_repo_url}",
                "SSH:          "
                + (
                    f"a certificate from the runs service before each play ({self.ssh_dir})"
                    if self.ssh_certificates
                    else f"no certificates ({SSH_CERTIFICATES}=off)"
                ),
            ]
        )


def _url(env: Mapping[str, str], name: str, problems: dict[str, str]) -> str:
    value = env.get(name, "").strip()
    expected = f"expected an http(s) URL such as {_URL_EXAMPLES[name]}"
    if not value:
        problems[name] = f"not set; {expected}"
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems[name] = f"{expected}, got {value!r}"
    elif parts.query or parts.fragment:
        problems[name] = f"{expected} without ?query or #fragment, got {value!r}"
    return value.rstrip("/")


def _absolute(env: Mapping[str, str], name: str, problems: dict[str, str]) -> Path | None:
    """The variable as an absolute path (~ expanded), or None after noting why not."""
    value = env.get(name, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        problems[name] = f"expected an absolute path, got {value!r}"
        return None
    return path


def _folder(env: Mapping[str, str], name: str, problems: dict[str, str]) -> Path | None:
    path = _absolute(env, name, problems)
    if path is None:
        if name not in problems:
            problems[name] = "not set; expected the folder holding playbooks/ and inventories/"
        return None
    if not path.is_dir():
        problems[name] = f"{str(path)!r} is not a folder; expected playbooks/ and inventories/"
        return None
    return path


def _inventory(
    env: Mapping[str, str], ansible_dir: Path | None, problems: dict[str, str]
) -> Path | None:
    path = _absolute(env, INVENTORY, problems)
    if INVENTORY in problems:
        return None
    if path is None:
        if ansible_dir is None:
            return None  # its default depends on OPSBOOK_ANSIBLE_DIR, already reported
        path = ansible_dir / DEFAULT_INVENTORY
        if not path.exists():
            problems[INVENTORY] = (
                f"not set, and the default {str(path)!r} does not exist; "
                "expected the path of an Ansible inventory file or folder"
            )
            return None
    elif not path.exists():
        problems[INVENTORY] = (
            f"{str(path)!r} does not exist; expected an Ansible inventory file or folder"
        )
        return None
    return path


def _runs_dir(env: Mapping[str, str], problems: dict[str, str]) -> Path:
    path = _absolute(env, RUNS_DIR, problems) or DEFAULT_RUNS_DIR.expanduser()
    if path.exists() and not path.is_dir():
        problems[RUNS_DIR] = f"{str(path)!r} exists and is not a folder; expected a folder"
    return path


def _ansible_config(env: Mapping[str, str], problems: dict[str, str]) -> None:
    """ansible-core silently ignores an ANSIBLE_CONFIG that does not exist; here it stops."""
    value = env.get(ANSIBLE_CONFIG, "").strip()
    if value and not Path(value).expanduser().is_file():
        problems[ANSIBLE_CONFIG] = (
            f"{value!r} is not a file; expected Ansible's configuration file, or unset"
        )


def ssh_certificates(env: Mapping[str, str]) -> bool:
    """OPSBOOK_SSH_CERTIFICATES as a bool (default on); ConfigError if it is neither."""
    problems: dict[str, str] = {}
    enabled = _ssh_certificates(env, problems)
    if problems:
        raise ConfigError(problems)
    return enabled


def _ssh_certificates(env: Mapping[str, str], problems: dict[str, str]) -> bool:
    value = env.get(SSH_CERTIFICATES, "").strip().lower()
    if not value or value in _ON:
        return True
    if value in _OFF:
        return False
    problems[SSH_CERTIFICATES] = (
        f"expected on or off (off only where hosts take no certificate), got {value!r}"
    )
    return True


def _user(env: Mapping[str, str]) -> str:
    for name in ("JUPYTERHUB_USER", "USER"):
        if env.get(name, "").strip():
            return env[name].strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"
