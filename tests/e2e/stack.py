"""The test stack: the whole deployment under a compose project of its own.

`make test` never touches what `make up` runs: another project name (opsbook-test), other host
ports, its own env file under build/test-stack/ (fresh secrets each run), its own volumes, and its
own prefix for engineers' containers and home volumes. Everything it creates, it removes.

A `StackConfig` says where a stack lives; every function here takes one and defaults to `TEST`,
the test suite's. The benchmarks (tests/bench/) bring up another (opsbook-bench) the same way.

    python -m tests.e2e.stack up|down     (what the e2e fixtures do, by hand, for debugging)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
IMAGES = (
    "proxy",
    "hub",
    "singleuser",
    "idp",
    "pkgrepo",
    "fleet-web",
    "fleet-db",
    "prometheus",
    "alertmanager",
    "recorder",
)

# The images' tag: OPSBOOK_VERSION from the environment (scripts/build-images.sh reads it too), so a
# second checkout can build and test its own images beside this one's; 0.1.0 as in .env.example.
IMAGE_TAG = os.environ.get("OPSBOOK_VERSION") or "0.1.0"


def engineer_accounts(prefix: str, count: int) -> tuple[dict, ...]:
    """Demo-provider accounts `<prefix>-01` … in group ops, for a stack's extra_accounts."""
    return tuple(
        {
            "username": f"{prefix}-{n:02d}",
            "name": f"{prefix.title()} Engineer {n:02d}",
            "email": f"{prefix}-{n:02d}@opsbook.example",
            "groups": ["ops"],
        }
        for n in range(1, count + 1)
    )


@dataclass(frozen=True)
class StackConfig:
    """Where one stack lives: compose project (also the prefix of engineers' containers and
    volumes), folder (env file, secrets, accounts), host ports, what else differs from
    .env.example, and accounts added to the demo ones."""

    project: str
    stack_dir: Path
    hub_port: int
    idp_port: int
    prometheus_port: int
    extra_overrides: tuple[tuple[str, str], ...] = ()
    extra_accounts: tuple[dict, ...] = ()
    # HTTPS as make up serves it by default (TLS_MODE=self-signed: the demo authority, the hub
    # and the provider over https); False: plain http (TLS_MODE=off).
    tls: bool = True
    # The compose services to start; empty: every one (the demo profile's too).
    services: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def hub_http_port(self) -> int:
        """Where plain http is redirected to https (published, and unused, without TLS)."""
        return self.hub_port + 1

    @property
    def ca_file(self) -> Path:
        """The demo certificate authority init-secrets.sh makes for this stack."""
        return self.stack_dir / "secrets" / "tls" / "ca.crt"

    @property
    def env_file(self) -> Path:
        return self.stack_dir / "env"

    @property
    def accounts_dir(self) -> Path:
        return self.stack_dir / "accounts"

    @property
    def ansible_dir(self) -> Path:
        """The stack's own copy of ansible/: tests may change its inventory."""
        return self.stack_dir / "ansible"

    def overrides(self) -> dict[str, str]:
        """What differs from a user's deployment; the rest comes from .env.example like theirs."""
        scheme = self.scheme
        hub = f"{scheme}://127.0.0.1:{self.hub_port}"
        idp = f"{scheme}://127.0.0.1:{self.idp_port}"
        return {
            "COMPOSE_PROJECT_NAME": self.project,
            "OPSBOOK_VERSION": IMAGE_TAG,
            "HUB_PORT": str(self.hub_port),
            "HUB_HTTP_PORT": str(self.hub_http_port),
            "TLS_MODE": "self-signed" if self.tls else "off",
            "IDP_PORT": str(self.idp_port),
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "IDP_ISSUER": idp,
            "OAUTH_CALLBACK_URL": f"{hub}/hub/oauth_callback",
            "OAUTH_AUTHORIZE_URL": f"{idp}/auth",
            "OAUTH_TOKEN_URL": f"{scheme}://idp:9000/token",
            "OAUTH_USERDATA_URL": f"{scheme}://idp:9000/me",
            "OAUTH_LOGOUT_REDIRECT_URL": f"{idp}/session/end?client_id=opsbook-hub"
            f"&post_logout_redirect_uri={hub}/hub/login",
            "IDP_ACCOUNTS_DIR": str(self.accounts_dir),
            "ANSIBLE_DIR": str(self.ansible_dir),
            **dict(self.extra_overrides),
        }


# The test suite's stack.
TEST = StackConfig(
    # Another name lets a second checkout (a git worktree) run its own test stack beside this one.
    project=os.environ.get("OPSBOOK_TEST_PROJECT", "opsbook-test"),
    stack_dir=ROOT / "build" / "test-stack",
    hub_port=int(os.environ.get("OPSBOOK_TEST_HUB_PORT", "18000")),
    idp_port=int(os.environ.get("OPSBOOK_TEST_IDP_PORT", "19000")),
    prometheus_port=int(os.environ.get("OPSBOOK_TEST_PROMETHEUS_PORT", "19090")),
    extra_overrides=(
        # Re-read groups every few seconds, so that the revocation test does not wait minutes.
        ("AUTH_REFRESH_AGE", "5"),
        # A dead kernel's run is orphaned after 10 s instead of a minute.
        ("RUNS_LEASE_SECONDS", "10"),
        # Certificates for a minute: access that must end does so within the tests' patience.
        ("RUNS_SSH_CERT_MINUTES", "1"),
        # Approvals expire after a minute (the least allowed): the expiry test waits that long.
        ("RUNS_APPROVAL_TTL", "120"),
        # The longest token an hour: asking for more is refused (test_tokens_and_admins.py).
        ("API_TOKEN_MAX_SECONDS", "3600"),
    ),
    # The login storm's engineers (test_storm.py).
    extra_accounts=engineer_accounts("storm", 10),
)
STACK_DIR = TEST.stack_dir
ENV_FILE = TEST.env_file
ACCOUNTS_DIR = TEST.accounts_dir
PROJECT = TEST.project
HUB_PORT = TEST.hub_port
IDP_PORT = TEST.idp_port
PROMETHEUS_PORT = TEST.prometheus_port
OVERRIDES = TEST.overrides()


class StackError(RuntimeError):
    pass


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs if not name.startswith("#")}


def compose(
    *args: str, check: bool = True, config: StackConfig = TEST
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose.sh"), str(config.env_file), *args],
        capture_output=True,
        text=True,
        check=check,
        cwd=ROOT,
    )


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def as_engineer(container: str, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command in an engineer's container, as the engineer (uid 1000), from their home."""
    return subprocess.run(
        ["docker", "exec", "-u", "1000", "-w", "/home/jovyan", container, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # conditions may fail until the thing is up
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last error: {last_error})")


def service_address(service: str, config: StackConfig = TEST) -> str:
    """A compose service's address on the stack's backend network (named after the project),
    which this machine reaches; services on several networks have one address on each."""
    container = compose("ps", "-q", service, config=config).stdout.strip()
    networks = json.loads(
        docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", container).stdout
    )
    backend = networks.get(config.project) or next(iter(networks.values()))
    return backend["IPAddress"]


@dataclass
class Stack:
    hub_url: str
    idp_url: str
    env: dict[str, str] = field(repr=False)
    config: StackConfig = field(default=TEST, repr=False)

    @property
    def demo_password(self) -> str:
        return self.env["DEMO_PASSWORD"]

    def set_groups(self, username: str, groups: list[str]) -> None:
        """Change an account's groups at the provider (it re-reads the file when it changes)."""
        path = self.config.accounts_dir / "accounts.json"
        data = json.loads(path.read_text())
        for account in data["accounts"]:
            if account["username"] == username:
                account["groups"] = groups
        # Written in place: the provider sees the file through a bind mount of its folder.
        path.write_text(json.dumps(data, indent=2))

    @property
    def inventory(self) -> Path:
        """The demo inventory's hosts file, as this stack's hub and runs service read it."""
        return self.config.ansible_dir / "inventories" / "demo" / "hosts.yml"

    def container_of(self, username: str) -> str:
        return f"{self.config.project}-{username}"

    def container_running(self, username: str) -> bool:
        found = docker("ps", "-q", "--filter", f"name=^{self.container_of(username)}$")
        return bool(found.stdout.strip())


def hub_answers(hub_url: str) -> bool:
    return requests.get(f"{hub_url}/hub/health", timeout=2).status_code == 200


def trust_demo_authority(config: StackConfig) -> None:
    """requests in this process verifies https with the stack's demo authority, as an engineer's
    machine does once it trusts ca.crt (what make up tells them to do)."""
    if config.tls:
        os.environ["REQUESTS_CA_BUNDLE"] = str(config.ca_file)


def up(config: StackConfig = TEST) -> Stack:
    missing = [
        n
        for n in IMAGES
        if docker("image", "inspect", f"opsbook/{n}:{IMAGE_TAG}", check=False).returncode
    ]
    if missing:
        raise StackError(f"images not built: {missing}; run `make test-e2e`, which builds them")
    down(config)
    env_file = config.env_file
    config.stack_dir.mkdir(parents=True, exist_ok=True)
    env_file.unlink(missing_ok=True)
    overrides = [f"{name}={value}" for name, value in config.overrides().items()]
    subprocess.run(["bash", "scripts/init-env.sh", str(env_file), *overrides], check=True, cwd=ROOT)
    subprocess.run(["bash", "scripts/init-secrets.sh", str(env_file)], check=True, cwd=ROOT)
    for source, copy in (
        (ROOT / "images" / "idp" / "accounts", config.accounts_dir),
        (ROOT / "ansible", config.ansible_dir),
    ):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
    if config.extra_accounts:
        path = config.accounts_dir / "accounts.json"
        data = json.loads(path.read_text())
        data["accounts"] += [dict(account) for account in config.extra_accounts]
        path.write_text(json.dumps(data, indent=2))
    trust_demo_authority(config)
    result = compose("up", "-d", *config.services, check=False, config=config)
    if result.returncode:
        raise StackError(f"compose up failed:\n{result.stdout}\n{result.stderr}")
    stack = Stack(
        f"{config.scheme}://127.0.0.1:{config.hub_port}",
        f"{config.scheme}://127.0.0.1:{config.idp_port}",
        read_env(env_file),
        config,
    )
    wait_for(lambda: hub_answers(stack.hub_url), 120, "hub health through the proxy")
    wait_for(lambda: all_healthy(config), 120, "every container's healthcheck passing")
    return stack


FLEET_HOSTS = ("web-1", "web-2", "web-3", "db-1", "db-2", "db-3")


def reset_fleet(config: StackConfig = TEST) -> None:
    """The demo fleet as `make up` first starts it: version 1 installed, nothing approved.

    The hosts and the package repository are recreated with fresh volumes (approvals and the
    signing key live in them), so that what one test module patched does not leak into the next;
    done when Prometheus has scraped every new host.
    """
    started = time.time()
    compose("rm", "--stop", "--force", "pkgrepo", *FLEET_HOSTS, config=config)
    volumes = [f"{config.project}_pkgrepo-data", f"{config.project}_fleet-keyring"]
    docker("volume", "rm", *volumes, check=False)
    compose("up", "-d", "pkgrepo", *FLEET_HOSTS, config=config)
    wait_for(lambda: all_healthy(config), 120, "the fleet recreated and healthy")
    wait_for(lambda: fleet_scraped_since(started, config), 60, "Prometheus scraping the new fleet")
    wait_for(
        lambda: fleet_on_engineers_networks(config),
        60,
        "the hub's network keeper connecting the new fleet to engineers' networks",
    )


def fleet_on_engineers_networks(config: StackConfig = TEST) -> bool:
    """Every recreated fleet host and pkgrepo on every engineer's network of the stack (the
    keeper connects them as they start: a server's plays must not race it)."""
    listing = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    networks = [n for n in listing if n.startswith(f"{config.project}-net-")]
    if not networks:
        return True
    found = docker(
        "network",
        "inspect",
        "--format",
        "{{range $id, $endpoint := .Containers}}{{$id}} {{end}}",
        *networks,
        check=False,
    )
    wanted = set(compose("ps", "-q", "pkgrepo", *FLEET_HOSTS, config=config).stdout.split())
    return found.returncode == 0 and all(
        wanted <= set(line.split()) for line in found.stdout.splitlines()
    )


def fleet_scraped_since(moment: float, config: StackConfig = TEST) -> bool:
    """Every fleet host up in a scrape taken after `moment` (a Unix time)."""
    answer = requests.get(
        f"http://127.0.0.1:{config.prometheus_port}/api/v1/query",
        params={"query": 'timestamp(up{job="fleet"} == 1)'},
        timeout=5,
    ).json()
    fresh = {
        r["metric"]["instance"] for r in answer["data"]["result"] if float(r["value"][1]) > moment
    }
    return fresh == {f"{host}:9100" for host in FLEET_HOSTS}


def all_healthy(config: StackConfig = TEST) -> bool:
    """Every container of the stack that has a healthcheck reports healthy."""
    ids = compose("ps", "-q", config=config).stdout.split()
    states = docker(
        "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", *ids
    ).stdout.split()
    return bool(ids) and all(state == "healthy" for state in states)


def down(config: StackConfig = TEST) -> None:
    """Remove the stack, its engineers' containers and every volume it made."""
    if config.env_file.exists():
        compose("down", "-v", "--remove-orphans", "-t", "5", check=False, config=config)
    listing = docker("ps", "-a", "--format", "{{.Names}}").stdout
    containers = _names_with_prefix(listing, config.project)
    if containers:
        docker("rm", "-f", *containers, check=False)
    listing = docker("volume", "ls", "--format", "{{.Name}}").stdout
    volumes = _names_with_prefix(listing, config.project)
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)
    # Engineers' networks (made by the hub, not by compose), and compose's if an engineer's
    # container kept one: removed last, once every container is gone.
    listing = docker("network", "ls", "--format", "{{.Name}}").stdout
    networks = [config.project, *_names_with_prefix(listing, config.project)]
    docker("network", "rm", *networks, check=False)
    _remove_leftover_networks(config.project)


def _remove_leftover_networks(project: str) -> None:
    """A network Docker would not remove: its endpoints disconnected by force, then removed; if
    Docker still refuses, said on stderr. Docker 20.10 can miscount a network's endpoints after
    many starts and removals ("has active endpoints" with none on it: moby/moby#42119), which
    left bench networks behind silently; dockerd corrects the count when it restarts."""
    listing = docker("network", "ls", "--format", "{{.Name}}").stdout
    left = [name for name in listing.split() if name == project]
    for network in left + _names_with_prefix(listing, project):
        inspected = docker(
            "network", "inspect", "--format", "{{json .Containers}}", network, check=False
        )
        for endpoint in (json.loads(inspected.stdout or "null") or {}).values():
            docker("network", "disconnect", "-f", network, endpoint["Name"], check=False)
        removed = docker("network", "rm", network, check=False)
        if removed.returncode:
            print(
                f"stack: network {network} is left: {removed.stderr.strip()}. If nothing is on "
                "it, Docker miscounted its endpoints (moby/moby#42119): restart dockerd, which "
                f"corrects the count, then `docker network rm {network}`.",
                file=sys.stderr,
            )


def _names_with_prefix(listing: str, project: str = PROJECT) -> list[str]:
    """Only what this stack named: e.g. `opsbook-test-*` and compose's `opsbook-test_*`."""
    return [name for name in listing.split() if name.startswith((f"{project}-", f"{project}_"))]


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action == "up":
        print(up())
    elif action == "down":
        down()
    else:
        sys.exit("usage: python -m tests.e2e.stack up|down")
