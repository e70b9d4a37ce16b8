"""The test stack: the whole deployment under a compose project of its own.

`make test` never touches what `make up` runs: another project name (opsbook-test), other host
ports, its own env file under build/test-stack/ (fresh secrets each run), its own volumes, and its
own prefix for engineers' containers and home volumes. Everything it creates, it removes.

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
STACK_DIR = ROOT / "build" / "test-stack"
ENV_FILE = STACK_DIR / "env"
ACCOUNTS_DIR = STACK_DIR / "accounts"
PROJECT = "opsbook-test"
HUB_PORT = int(os.environ.get("OPSBOOK_TEST_HUB_PORT", "18000"))
IDP_PORT = int(os.environ.get("OPSBOOK_TEST_IDP_PORT", "19000"))
PROMETHEUS_PORT = int(os.environ.get("OPSBOOK_TEST_PROMETHEUS_PORT", "19090"))
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

# What differs from a user's deployment; the rest comes from .env.example like theirs.
OVERRIDES = {
    "COMPOSE_PROJECT_NAME": PROJECT,
    "HUB_PORT": str(HUB_PORT),
    "IDP_PORT": str(IDP_PORT),
    "PROMETHEUS_PORT": str(PROMETHEUS_PORT),
    "IDP_ISSUER": f"http://127.0.0.1:{IDP_PORT}",
    "OAUTH_CALLBACK_URL": f"http://127.0.0.1:{HUB_PORT}/hub/oauth_callback",
    "OAUTH_AUTHORIZE_URL": f"http://127.0.0.1:{IDP_PORT}/auth",
    "OAUTH_LOGOUT_REDIRECT_URL": f"http://127.0.0.1:{IDP_PORT}/session/end?client_id=opsbook-hub"
    f"&post_logout_redirect_uri=http://127.0.0.1:{HUB_PORT}/hub/login",
    # Re-read groups every few seconds, so that the revocation test does not wait minutes.
    "AUTH_REFRESH_AGE": "5",
    "IDP_ACCOUNTS_DIR": str(ACCOUNTS_DIR),
    # A dead kernel's run is orphaned after 10 s instead of a minute.
    "RUNS_LEASE_SECONDS": "10",
}


class StackError(RuntimeError):
    pass


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs if not name.startswith("#")}


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose.sh"), str(ENV_FILE), *args],
        capture_output=True,
        text=True,
        check=check,
        cwd=ROOT,
    )


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


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


@dataclass
class Stack:
    hub_url: str
    idp_url: str
    env: dict[str, str] = field(repr=False)

    @property
    def demo_password(self) -> str:
        return self.env["DEMO_PASSWORD"]

    def set_groups(self, username: str, groups: list[str]) -> None:
        """Change an account's groups at the provider (it re-reads the file when it changes)."""
        path = ACCOUNTS_DIR / "accounts.json"
        data = json.loads(path.read_text())
        for account in data["accounts"]:
            if account["username"] == username:
                account["groups"] = groups
        # Written in place: the provider sees the file through a bind mount of its folder.
        path.write_text(json.dumps(data, indent=2))

    def container_of(self, username: str) -> str:
        return f"{PROJECT}-{username}"

    def container_running(self, username: str) -> bool:
        found = docker("ps", "-q", "--filter", f"name=^{self.container_of(username)}$")
        return bool(found.stdout.strip())


def hub_answers(hub_url: str) -> bool:
    return requests.get(f"{hub_url}/hub/health", timeout=2).status_code == 200


def up() -> Stack:
    missing = [
        n
        for n in IMAGES
        if docker("image", "inspect", f"opsbook/{n}:0.1.0", check=False).returncode
    ]
    if missing:
        raise StackError(f"images not built: {missing}; run `make test-e2e`, which builds them")
    down()
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    ENV_FILE.unlink(missing_ok=True)
    overrides = [f"{name}={value}" for name, value in OVERRIDES.items()]
    subprocess.run(["bash", "scripts/init-env.sh", str(ENV_FILE), *overrides], check=True, cwd=ROOT)
    subprocess.run(["bash", "scripts/init-secrets.sh", str(ENV_FILE)], check=True, cwd=ROOT)
    shutil.rmtree(ACCOUNTS_DIR, ignore_errors=True)
    shutil.copytree(ROOT / "images" / "idp" / "accounts", ACCOUNTS_DIR)
    result = compose("up", "-d", check=False)
    if result.returncode:
        raise StackError(f"compose up failed:\n{result.stdout}\n{result.stderr}")
    stack = Stack(f"http://127.0.0.1:{HUB_PORT}", f"http://127.0.0.1:{IDP_PORT}", read_env())
    wait_for(lambda: hub_answers(stack.hub_url), 120, "hub health through the proxy")
    wait_for(all_healthy, 120, "every container's healthcheck passing")
    return stack


def all_healthy() -> bool:
    """Every container of the stack that has a healthcheck reports healthy."""
    ids = compose("ps", "-q").stdout.split()
    states = docker(
        "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", *ids
    ).stdout.split()
    return bool(ids) and all(state == "healthy" for state in states)


def down() -> None:
    """Remove the test stack, its engineers' containers and every volume it made."""
    if ENV_FILE.exists():
        compose("down", "-v", "--remove-orphans", "-t", "5", check=False)
    containers = _names_with_prefix(docker("ps", "-a", "--format", "{{.Names}}").stdout)
    if containers:
        docker("rm", "-f", *containers, check=False)
    volumes = _names_with_prefix(docker("volume", "ls", "--format", "{{.Name}}").stdout)
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)


def _names_with_prefix(listing: str) -> list[str]:
    """Only what this stack named: `opsbook-test-*` and compose's `opsbook-test_*`."""
    return [name for name in listing.split() if name.startswith((f"{PROJECT}-", f"{PROJECT}_"))]


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action == "up":
        print(up())
    elif action == "down":
        down()
    else:
        sys.exit("usage: python -m tests.e2e.stack up|down")
