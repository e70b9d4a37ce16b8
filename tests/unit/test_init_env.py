"""`make up`'s first step: .env from .env.example, with fresh secrets, private, and kept."""

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (
    "HUB_COOKIE_SECRET",
    "JUPYTERHUB_CRYPT_KEY",
    "CONFIGPROXY_AUTH_TOKEN",
    "HUB_METRICS_TOKEN",
    "RUNS_SERVICE_TOKEN",
    "OAUTH_CLIENT_SECRET",
    "IDP_COOKIE_SECRET",
    "DEMO_PASSWORD",
)


def init_env(env_file: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "init-env.sh"), str(env_file), *overrides],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )


def values(env_file: Path) -> dict[str, str]:
    lines = env_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_first_run_generates_every_secret_privately_and_prints_none(tmp_path):
    env_file = tmp_path / ".env"
    done = init_env(env_file, "HUB_PORT=18000")
    created = values(env_file)
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    assert created["HUB_PORT"] == "18000"
    for name in SECRETS:
        assert len(created[name]) >= 16, name
        assert created[name] not in done.stdout + done.stderr
    assert len(set(created[name] for name in SECRETS)) == len(SECRETS)  # all different
    assert bytes.fromhex(created["JUPYTERHUB_CRYPT_KEY"])  # hex, as the hub expects


def test_later_runs_keep_the_file_and_only_fill_a_missing_secret(tmp_path):
    env_file = tmp_path / ".env"
    init_env(env_file)
    first = values(env_file)
    env_file.write_text(
        env_file.read_text().replace(
            f"RUNS_SERVICE_TOKEN={first['RUNS_SERVICE_TOKEN']}", "RUNS_SERVICE_TOKEN="
        )
    )
    init_env(env_file, "HUB_PORT=1")  # overrides apply only to a new file
    second = values(env_file)
    assert second["HUB_PORT"] == first["HUB_PORT"]
    assert (
        second["RUNS_SERVICE_TOKEN"] and second["RUNS_SERVICE_TOKEN"] != first["RUNS_SERVICE_TOKEN"]
    )
    assert {n: second[n] for n in SECRETS if n != "RUNS_SERVICE_TOKEN"} == {
        n: first[n] for n in SECRETS if n != "RUNS_SERVICE_TOKEN"
    }


def test_env_files_are_ignored_by_git():
    ignored = subprocess.run(
        ["git", "check-ignore", ".env", "secrets/fleet-ssh/id_ed25519"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ignored.stdout.split() == [".env", "secrets/fleet-ssh/id_ed25519"]
