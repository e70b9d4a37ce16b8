"""`make up`'s settings check: an env file, with the validators the services run at start.

Why before anything is built or started: a wrong value used to cost a whole build and then the
hub's restart loop, which `make up` only reported as "the hub did not answer in time". Here the
same declarations and parsers the hub (hub/opsbook_hub/settings.py) and the runs service
(opsbook/service/settings.py) load at start check the values those services would be given, and
every bad one is printed on a line naming it.

Why the machine's own python3 (`python3 -I -S -B`, scripts/check-env.sh): a fresh machine has no
venv and no image yet. The settings modules and opsbook.contract are meant to import only the
standard library (the contract's rule), so they load here as they are; -S keeps that honest, the
same on every machine. A settings module that needs a package anyway is not checked here: the
check says so, and that service still refuses a bad value at start.

What a service "would see": its `environment:` block in docker-compose.yml with each `${...}`
filled as compose fills it (the shell's environment over the env file, then the default), and
the variables scripts/compose.sh computes (OPSBOOK_ROOT, OPSBOOK_ANSIBLE_DIR, ...). So a value
compose sets itself (RUNS_SERVICE_URL, the host paths) is checked as it will be, and a line about
a variable compose derives from the user's (SINGLEUSER_IMAGE from OPSBOOK_VERSION) names both.

    python3 -I -S -B scripts/check_env.py ENV_FILE     exit 1 and one line per bad setting
"""

from __future__ import annotations

import base64
import importlib
import os
import re
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "hub")]

# The services checked, and the module whose `load` each one calls at start.
SERVICES: dict[str, str] = {"hub": "opsbook_hub.settings", "runs": "opsbook.service.settings"}


def loader(service: str) -> Callable[[Mapping[str, str]], object]:
    """The service's own `load`; ModuleNotFoundError when its settings module needs a package."""
    return importlib.import_module(SERVICES[service]).load


_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class Problem(NamedTuple):
    line: str  # as the service would log it, with what it was set from
    sources: frozenset[str]  # the env file's variables behind it


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines (comments and blank lines skipped; surrounding quotes removed)."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match and not line.lstrip().startswith("#"):
            value = match.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[match.group(1)] = value
    return values


def service_environment(compose_text: str, service: str) -> dict[str, str]:
    """The `environment:` mapping of one service of docker-compose.yml, values unfilled.

    A reader for this file's own layout (two-space indents, `NAME: value` lines, `<<: *anchor`
    merging a top-level `x-name: &anchor` mapping), so that no YAML library is needed; a unit
    test holds it to what PyYAML reads.
    """
    lines = iter(compose_text.splitlines())
    for line in lines:
        if line.rstrip() == f"  {service}:":
            break
    else:
        raise LookupError(f"docker-compose.yml: no service {service}")
    found: dict[str, str] = {}
    in_environment = False
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= 2:
            break
        if indent == 4:
            in_environment = line.strip() == "environment:"
        elif in_environment and indent == 6:
            name, _, value = line.strip().partition(":")
            if name == "<<":
                found = {**anchored_mapping(compose_text, value.strip().lstrip("*")), **found}
            else:
                found[name] = _unquote(value.strip())
    if not found:
        raise LookupError(f"docker-compose.yml: service {service} has no environment block")
    return found


def anchored_mapping(compose_text: str, anchor: str) -> dict[str, str]:
    """The `NAME: value` lines of a top-level mapping declared `x-name: &anchor`."""
    lines = iter(compose_text.splitlines())
    for line in lines:
        if re.match(rf"^x-[\w-]+: &{re.escape(anchor)}$", line.rstrip()):
            break
    else:
        raise LookupError(f"docker-compose.yml: no top-level mapping &{anchor}")
    found: dict[str, str] = {}
    for line in lines:
        if not line.startswith("  ") or line.startswith("  -"):
            break
        name, _, value = line.strip().partition(":")
        found[name] = _unquote(value.strip())
    return found


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def fill(template: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?why}."""

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        value = variables.get(name)
        if operator in (":-", ":?"):
            return value or (default if operator == ":-" else "")
        if operator in ("-", "?"):
            return value if value is not None else (default if operator == "-" else "")
        return value or ""

    return _REFERENCE.sub(one, template)


def referenced(template: str) -> frozenset[str]:
    return frozenset(match.group(1) for match in _REFERENCE.finditer(template))


def computed_variables(env_file: Path, variables: Mapping[str, str]) -> dict[str, str]:
    """What scripts/compose.sh exports besides the env file; ANSIBLE_DIR is checked apart.

    SSH_HOST_CA_PUBLIC_KEY is written by make up itself after the build (init-secrets.sh): until
    it is there, a well-formed stand-in, so that a first `make up` is checked on what the user
    set, not failed on what make up has not made yet.
    """
    ansible_dir = ROOT / (variables.get("ANSIBLE_DIR") or "ansible")
    return {
        "OPSBOOK_ROOT": str(ROOT),
        "OPSBOOK_SECRETS": str(env_file.resolve().parent / "secrets"),
        "OPSBOOK_ANSIBLE_DIR": str(ansible_dir.resolve()),
        "DOCKER_GID": "0",
        "SSH_HOST_CA_PUBLIC_KEY": variables.get("SSH_HOST_CA_PUBLIC_KEY") or stand_in_ssh_key(),
    }


def stand_in_ssh_key() -> str:
    """An ed25519 public key line of 32 zero bytes: well-formed, and nobody's."""
    blob = b"".join(struct.pack(">I", len(field)) + field for field in (b"ssh-ed25519", bytes(32)))
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def service_problems(
    service: str, templates: Mapping[str, str], variables: Mapping[str, str], computed: set[str]
) -> list[Problem]:
    """Each bad setting of `service`, as its own loader words it, with the variables behind it."""
    environ = {name: fill(template, variables) for name, template in templates.items()}
    load = loader(service)
    try:
        load(environ)
    except ValueError as error:  # SettingsError: one "NAME: ..." line per bad setting
        problems = []
        for line in str(error).splitlines():
            name, _, rest = line.partition(":")
            sources = referenced(templates.get(name, "")) - computed
            shown = name if sources == {name} or not sources else f"{name} (from {_and(sources)})"
            problems.append(Problem(f"{shown}:{rest}", sources or frozenset({name})))
        return problems
    return []


def _and(names: frozenset[str]) -> str:
    return " and ".join(sorted(names))


def check(
    env_file: Path,
    shell: Mapping[str, str],
    compose_text: str,
    skipped: dict[str, str] | None = None,
) -> list[str]:
    """Every bad line, once: a variable already reported through one service is not repeated.

    A service whose settings module needs a package the machine lacks (the settings modules
    should need none) is left to check its settings at start, and named in `skipped`.
    """
    variables = {**read_env_file(env_file), **shell}  # compose's order: the shell wins
    lines: list[str] = []
    ansible = variables.get("ANSIBLE_DIR") or "ansible"
    if not (ROOT / ansible).is_dir():
        lines.append(
            f"ANSIBLE_DIR: expected a folder of playbooks and inventories (absolute, or relative "
            f"to {ROOT}), got {ansible!r}"
        )
    computed = computed_variables(env_file, variables)
    variables.update(computed)
    reported: set[str] = {"ANSIBLE_DIR"} if lines else set()
    for service in SERVICES:
        templates = service_environment(compose_text, service)
        try:
            problems = service_problems(service, templates, variables, set(computed))
        except ModuleNotFoundError as missing:
            if skipped is not None:
                skipped[service] = f"{SERVICES[service]} needs {missing.name}"
            continue
        for problem in problems:
            if not problem.sources <= reported:
                lines.append(problem.line)
                reported |= problem.sources
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_env.py ENV_FILE", file=sys.stderr)
        return 2
    env_file = Path(argv[1])
    compose_text = (ROOT / "docker-compose.yml").read_text()
    skipped: dict[str, str] = {}
    lines = check(env_file, os.environ, compose_text, skipped)
    for service, why in skipped.items():
        print(f"settings: the {service} service checks its own at start ({why}), not here")
    if not lines:
        checked = " and ".join(s for s in SERVICES if s not in skipped)
        print(f"settings: {env_file} checked with the validators of the {checked} service")
        return 0
    where = f"settings: {len(lines)} bad in {env_file}; nothing was built or started:"
    print(where, file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    print(
        f"Each is documented in .env.example; fix {env_file} and run make up again.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
