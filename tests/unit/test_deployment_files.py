"""The deployment's files agree with each other: settings, compose, env example, pins."""

import json
import re
from pathlib import Path

import yaml
from opsbook_hub.settings import SETTINGS

from opsbook.contract.stacks import NONPRODUCTION_SETTING, environment_names, is_production
from opsbook.service.settings import SETTINGS as RUNS_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ENV_EXAMPLE = {
    line.split("=", 1)[0]
    for line in (ROOT / ".env.example").read_text().splitlines()
    if re.match(r"^[A-Z_]+=", line)
}
# Set by scripts/compose.sh, not by users.
COMPUTED = {"OPSBOOK_ROOT", "OPSBOOK_SECRETS", "OPSBOOK_ANSIBLE_DIR", "DOCKER_GID"}


# What the hub's and the runs service's TLS clients verify with (the demo authority included).
TRUST = {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}


def test_the_hub_gets_exactly_the_settings_it_declares():
    assert set(COMPOSE["services"]["hub"]["environment"]) - TRUST == {s.name for s in SETTINGS}


def test_the_hub_and_the_runs_service_trust_the_demo_authority():
    for name in ("hub", "runs"):
        service = COMPOSE["services"][name]
        assert {service["environment"][v] for v in TRUST} == {"/etc/opsbook/trust/bundle.pem"}
        assert "${OPSBOOK_SECRETS}/tls/trust:/etc/opsbook/trust:ro" in service["volumes"]


def test_every_variable_compose_reads_is_documented_in_the_env_example():
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert used - COMPUTED - ENV_EXAMPLE == set()


def test_settings_users_set_are_in_the_env_example():
    fixed_by_compose = {
        name
        for name, value in COMPOSE["services"]["hub"]["environment"].items()
        if not str(value).startswith(f"${{{name}")
    }
    user_settings = {s.name for s in SETTINGS} - fixed_by_compose
    assert user_settings - ENV_EXAMPLE == set()


def test_only_the_hub_gets_the_docker_socket():
    for name, service in COMPOSE["services"].items():
        mounts = " ".join(str(v) for v in service.get("volumes", []))
        assert ("docker.sock" in mounts) == (name == "hub"), name


def test_only_the_proxy_and_the_demos_provider_and_prometheus_publish_ports():
    published = {name for name, service in COMPOSE["services"].items() if service.get("ports")}
    assert published == {"proxy", "idp", "prometheus"}
    for name in published - {"proxy"}:  # the demo's pages: this machine only
        assert all(p.startswith("127.0.0.1:") for p in COMPOSE["services"][name]["ports"]), name


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("-")]
    unpinned = [line for line in requirements if "==" not in line]
    assert unpinned == [], f"{path}: not pinned exactly: {unpinned}"
    return dict(line.split("==") for line in requirements)


def test_every_python_dependency_of_every_image_is_pinned_and_jupyterhub_is_one_version():
    hub = pins(ROOT / "hub" / "requirements.txt")
    singleuser = pins(ROOT / "images" / "singleuser" / "requirements.txt")
    runs = pins(ROOT / "images" / "runs" / "requirements.txt")
    tests = pins(ROOT / "tests" / "requirements.txt")
    versions = {
        hub["jupyterhub"],
        singleuser["jupyterhub"],
        runs["jupyterhub"],
        tests["jupyterhub"],
    }
    assert versions == {"5.5.4"}


def test_every_npm_dependency_is_exact_and_locked():
    for package_json in ROOT.glob("images/*/package.json"):
        declared = json.loads(package_json.read_text()).get("dependencies", {})
        assert all(re.match(r"^\d+\.\d+\.\d+$", v) for v in declared.values()), package_json
        lock = json.loads((package_json.parent / "package-lock.json").read_text())
        locked = lock["packages"]
        for name, version in declared.items():
            assert locked[f"node_modules/{name}"]["version"] == version


def test_every_dockerfile_starts_from_the_projects_base():
    for dockerfile in [*ROOT.glob("images/*/Dockerfile"), ROOT / "hub" / "Dockerfile"]:
        lines = dockerfile.read_text().splitlines()
        first = next(line for line in lines if line.startswith("FROM"))
        expected = (
            "opsbook/debian:bookworm"
            if dockerfile.parent.name == "base"
            else "opsbook/base:bookworm"
        )
        assert first == f"FROM {expected}", dockerfile


def test_the_demo_fleet_prometheus_and_the_inventory_agree():
    """Same hosts everywhere: compose services, scrape targets (with stack and environment)."""
    from opsbook.inventory import Inventory

    inventory = Inventory.load(ROOT / "ansible" / "inventories" / "demo")
    targets = json.loads((ROOT / "images" / "prometheus" / "targets" / "fleet.json").read_text())
    scraped = {
        instance: (group["labels"]["stack"], group["labels"]["environment"])
        for group in targets
        for instance in group["targets"]
    }
    expected = {
        inventory.exporter_instance(host): (stack, inventory.environment(stack))
        for stack in inventory.stacks()
        for host in inventory.hosts(stack)
    }
    assert scraped == expected
    fleet_services = {n for n, s in COMPOSE["services"].items() if "fleet-" in s["image"]}
    assert fleet_services == {h for stack in inventory.stacks() for h in inventory.hosts(stack)}


def test_the_hub_declares_exactly_the_scopes_of_the_contract():
    """The hub imports nothing of opsbook but the contract (DESIGN): its custom scopes are the
    contract's, the very names the runs service checks."""
    from opsbook_hub.configure import custom_scopes

    from opsbook.contract.scopes import SCOPE_DESCRIPTIONS, SCOPES

    assert set(custom_scopes()) == set(SCOPES) == set(SCOPE_DESCRIPTIONS)


def test_the_runs_service_gets_only_settings_it_declares_and_its_new_ones():
    runs_env = COMPOSE["services"]["runs"]["environment"]
    assert set(runs_env) - TRUST <= {s.name for s in RUNS_SETTINGS}
    assert {"RUNS_INVENTORY", NONPRODUCTION_SETTING} <= set(runs_env)
    assert "RUNS_PRODUCTION_ENVIRONMENTS" not in ENV_EXAMPLE
    approvals = {"RUNS_APPROVAL_ENVIRONMENTS", "RUNS_APPROVERS", "RUNS_APPROVAL_TTL"}
    assert approvals <= set(runs_env) and approvals <= ENV_EXAMPLE
    for name in approvals:  # empty in .env: the service's default (production, 1, 1800 s)
        assert runs_env[name] == f"${{{name}:-}}"


def without_messages(value: str) -> str:
    """A compose value with its ${NAME:?message} references as ${NAME}."""
    return re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", r"${\1}", value)


def test_the_runs_service_reads_the_engineers_inventory_read_only():
    """The service resolves stacks from the same inventory the engineers' containers get
    (ANSIBLE_HOST_PATH): the repository's ansible/, mounted read-only, and its default
    RUNS_INVENTORY is the demo inventory in that mount."""
    runs = COMPOSE["services"]["runs"]
    mounts = [str(v) for v in runs["volumes"]]
    engineers = without_messages(COMPOSE["services"]["hub"]["environment"]["ANSIBLE_HOST_PATH"])
    assert engineers in ("${OPSBOOK_ROOT}/ansible", "${OPSBOOK_ANSIBLE_DIR}")
    assert f"{engineers}:/etc/opsbook/ansible:ro" in mounts
    default = next(s.default for s in RUNS_SETTINGS if s.name == "RUNS_INVENTORY")
    inside = Path(default).relative_to("/etc/opsbook/ansible")
    assert (ROOT / "ansible" / inside).is_dir()
    assert runs["environment"]["RUNS_INVENTORY"] == "${RUNS_INVENTORY:-}"


def test_the_demo_declares_staging_non_production_and_production_stays_production():
    """.env.example's OPSBOOK_NONPRODUCTION_ENVIRONMENTS names environments of the demo
    inventory; whatever it does not name (production) counts as production."""
    from opsbook.inventory import Inventory

    raw = next(
        line.split("=", 1)[1]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith(f"{NONPRODUCTION_SETTING}=")
    )
    declared = environment_names(raw)
    assert declared == {"staging"}
    inventory = Inventory.load(ROOT / "ansible" / "inventories" / "demo")
    environments = {inventory.environment(stack) for stack in inventory.stacks()}
    assert declared <= environments
    assert {e for e in environments if is_production(e, declared)} == {"production"}
    runs_env = COMPOSE["services"]["runs"]["environment"]
    assert runs_env[NONPRODUCTION_SETTING] == f"${{{NONPRODUCTION_SETTING}:-}}"


# --- SSH certificates (issue 11): who mounts which half of which CA ---
USER_CA_MOUNT = "/run/secrets/opsbook-user-ca"
FLEET_SSHD = (ROOT / "images" / "fleet" / "common" / "sshd_config").read_text()


def sshd_setting(name: str) -> str:
    return next(
        line.split(None, 1)[1] for line in FLEET_SSHD.splitlines() if line.startswith(f"{name} ")
    )


def mounts_of(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each volume, ${NAME:?message} read as ${NAME}."""
    return [
        tuple([*without_messages(str(v)).split(":"), "rw"][:3]) for v in service.get("volumes", [])
    ]


def test_only_the_runs_service_mounts_the_user_ca_key_read_only_where_its_setting_says():
    runs = COMPOSE["services"]["runs"]
    assert ("${OPSBOOK_SECRETS}/ssh/user_ca", USER_CA_MOUNT, "ro") in mounts_of(runs)
    default = next(s.default for s in RUNS_SETTINGS if s.name == "RUNS_SSH_CA_KEY")
    assert default == USER_CA_MOUNT
    # Fixed: the mount is compose's own, so a path from .env could only name a missing file.
    assert runs["environment"]["RUNS_SSH_CA_KEY"] == USER_CA_MOUNT
    assert runs["environment"]["RUNS_SSH_CERT_MINUTES"] == "${RUNS_SSH_CERT_MINUTES:-}"
    for name, service in COMPOSE["services"].items():
        sources = [source for source, _, _ in mounts_of(service)]
        # The user CA's private key: the runs service only. The host CA's: nobody.
        assert ("${OPSBOOK_SECRETS}/ssh/user_ca" in sources) == (name == "runs"), name
        assert not [s for s in sources if "host_ca" in s], name
        assert not [s for s in sources if "fleet-ssh" in s], name  # the old team key is gone
        assert "FLEET_SSH_KEY_DIR" not in service.get("environment", {}), name


def test_each_fleet_host_trusts_the_user_ca_for_its_environment_and_shows_its_own_host_key():
    """web-*: staging, db-*: production (their environments in the demo inventory), as the
    principal they accept and the repository suite they update from; pkgrepo: no principal of
    its own (it derives errata-<suite> from its suites, one per environment of the inventory);
    the user CA's public half where sshd_config's TrustedUserCAKeys reads it; each host its own
    folder of secrets/ssh/hosts/ (no host holds another's key)."""
    from opsbook.inventory import Inventory

    inventory = Inventory.load(ROOT / "ansible" / "inventories" / "demo")
    expected = {
        host: inventory.environment(stack)
        for stack in inventory.stacks()
        for host in inventory.hosts(stack)
    }
    repo = COMPOSE["services"]["pkgrepo"]["environment"]
    assert "OPSBOOK_SSH_PRINCIPALS" not in repo  # no `repo`: engineers' certificates open nothing
    assert sorted(repo["OPSBOOK_REPO_SUITES"].split()) == sorted(set(expected.values()))
    expected["pkgrepo"] = None
    ca_target = sshd_setting("TrustedUserCAKeys")
    assert ca_target == "/etc/ssh/opsbook/user_ca.pub"
    assert sshd_setting("AuthorizedPrincipalsFile") == "/etc/ssh/opsbook_principals/%u"
    assert sshd_setting("AuthorizedKeysFile") == "none"
    assert sshd_setting("LogLevel") == "VERBOSE"
    for host, principal in expected.items():
        service = COMPOSE["services"][host]
        assert service["environment"].get("OPSBOOK_SSH_PRINCIPALS") == principal, host
        assert service["environment"].get("OPSBOOK_ENVIRONMENT") == principal, host
        mounts = mounts_of(service)
        assert ("${OPSBOOK_SECRETS}/ssh/user_ca.pub", ca_target, "ro") in mounts, host
        keys = [m for m in mounts if "/ssh/hosts/" in m[0]]
        assert keys == [(f"${{OPSBOOK_SECRETS}}/ssh/hosts/{host}", "/etc/ssh/opsbook/host", "ro")]
    hosts_made = re.search(
        r"^hosts=\((.*)\)$", (ROOT / "scripts" / "init-secrets.sh").read_text(), re.M
    )
    assert set(hosts_made.group(1).split()) == set(expected)


def test_engineers_containers_trust_the_host_ca_that_make_up_writes():
    hub = COMPOSE["services"]["hub"]["environment"]
    assert hub["SSH_HOST_CA_PUBLIC_KEY"] == "${SSH_HOST_CA_PUBLIC_KEY:-}"
    assert "SSH_HOST_CA_PUBLIC_KEY" in ENV_EXAMPLE
    assert "SSH_HOST_CA_PUBLIC_KEY=" in (ROOT / "scripts" / "init-secrets.sh").read_text()
    assert {"RUNS_SSH_CERT_MINUTES"} <= ENV_EXAMPLE
