"""`make up`'s guards: the settings check before any build, the CA bundle the images trust (and
what a build failing on TLS says), and a service that fails to start named with its last logs.

No Docker: a stand-in `docker` (and `curl`) on PATH answers as the engine would and logs each
call, so a test sees that nothing was built.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_init_env import init_env

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_env", ROOT / "scripts" / "check_env.py")
check_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_env)

# Answers `ps -a -q --filter ...` with the containers of FAKE_CONTAINERS (JSON), `inspect` with
# their "id service state restarts health" lines (the n-th inspect: restarts[n], or the last),
# `logs --tail N ID` with their log; logs every call.
FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
with open(os.environ["FAKE_DOCKER_LOG"]) as log:
    inspected = sum(line.startswith("inspect") for line in log) - 1
containers = json.loads(os.environ.get("FAKE_CONTAINERS", "[]"))
by_id = {{c["id"]: c for c in containers}}
if args[0] == "ps":
    print("\\n".join(by_id))
elif args[0] == "inspect":
    for name in args[3:]:
        c = by_id[name]
        restarts = c["restarts"][min(inspected, len(c["restarts"]) - 1)]
        print(c["id"], c["service"], c["state"], restarts, c.get("health", "-"))
elif args[0] == "logs":
    print(by_id[args[-1]]["log"])
else:
    sys.exit(f"fake docker: {{args}}")
"""
HUB_REFUSES = [
    "opsbook hub: MEM_LIMIT: expected a size such as 512M or 2G, got 'lots'",
    "opsbook hub: OAUTH_TOKEN_URL: expected an http(s) URL such as "
    "https://host.example.com/path, got 'idp/token'",
]


@pytest.fixture
def fake_engine(tmp_path):
    """PATH with the stand-in docker and a curl that never reaches the hub; its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "curl").write_text("#!/bin/sh\nexit 7\n")
    for tool in ("docker", "curl"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "docker.log"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DOCKER_LOG": str(log),
    }
    return env, log


@pytest.fixture
def env_file(tmp_path) -> Path:
    path = tmp_path / "deploy" / ".env"
    init_env(path)
    return path


def spoil(env_file: Path, **values: str) -> None:
    lines = env_file.read_text().splitlines()
    for name, value in values.items():
        lines = [f"{name}={value}" if line.startswith(f"{name}=") else line for line in lines]
    env_file.write_text("\n".join(lines) + "\n")


def check(env_file: Path, **shell: str) -> subprocess.CompletedProcess:
    """scripts/check-env.sh as make up runs it: the machine's python3, no venv, no packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("MEM_LIMIT", "OPSBOOK_VERSION")}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-env.sh"), str(env_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, **shell},
    )


def bad_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in done.stderr.splitlines() if line.startswith("  ")]


# --- the settings check ---


def test_make_up_stops_before_any_build_with_one_line_per_bad_setting(env_file, fake_engine):
    env, docker_log = fake_engine
    spoil(env_file, MEM_LIMIT="lots", OAUTH_TOKEN_URL="idp/token")
    done = subprocess.run(
        ["make", "-s", "up", f"ENV_FILE={env_file}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode != 0
    assert sorted(bad_lines(done)) == sorted(line.split(": ", 1)[1] for line in HUB_REFUSES)
    assert "nothing was built or started" in done.stderr
    assert docker_log.read_text() == ""  # no build, no compose: the engine was never called


def test_a_fresh_env_file_passes(env_file):
    done = check(env_file)
    assert done.returncode == 0, done.stderr
    assert "checked" in done.stdout


def stdlib_only(module: str) -> bool:
    """Whether `module` imports with the machine's python3 and no package, as check-env runs."""
    path = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'hub')!r}]; import {module}"
    return subprocess.run(["python3", "-I", "-S", "-B", "-c", path]).returncode == 0


@pytest.mark.parametrize("module", ["opsbook_hub.settings", "opsbook.service.settings"])
def test_the_settings_modules_need_no_package(module):
    """make up checks .env before anything is installed or built: the validators must import
    with the machine's own python3 alone."""
    assert stdlib_only(module), f"{module} imports a package: make up could not check it"


def test_the_runs_services_settings_are_checked_too(env_file):
    spoil(env_file, RUNS_APPROVERS="9", RUNS_DATABASE_URL="mysql://runs")
    done = check(env_file)
    assert done.returncode == 1
    [approvers, database] = sorted(bad_lines(done))
    assert approvers.startswith("RUNS_APPROVERS: expected a whole number from 1 to 5, got '9'")
    assert database.startswith("RUNS_DATABASE_URL: expected sqlite:////")


def test_values_compose_derives_are_checked_as_the_service_gets_them_naming_the_source(env_file):
    """OPSBOOK_VERSION becomes SINGLEUSER_IMAGE; COMPOSE_PROJECT_NAME a Docker name (the prefix of
    engineers' containers): the lines name both the setting and the variable in .env."""
    spoil(env_file, OPSBOOK_VERSION="1.0 beta", COMPOSE_PROJECT_NAME="ops book")
    lines = bad_lines(check(env_file))
    assert len(lines) == 2, lines
    [image] = [line for line in lines if "(from OPSBOOK_VERSION)" in line]
    assert image.startswith("SINGLEUSER_IMAGE (from OPSBOOK_VERSION): expected an image")
    assert "'opsbook/singleuser:1.0 beta'" in image
    [name] = [line for line in lines if "(from COMPOSE_PROJECT_NAME)" in line]
    assert "(from COMPOSE_PROJECT_NAME): expected a Docker object name" in name


def test_the_shell_environment_wins_over_the_env_file_as_in_compose(env_file):
    spoil(env_file, MEM_LIMIT="lots")
    assert check(env_file).returncode == 1
    assert check(env_file, MEM_LIMIT="1G").returncode == 0


def test_a_secret_is_never_shown_and_reported_once(env_file):
    """RUNS_SERVICE_TOKEN is the hub's and, as JUPYTERHUB_API_TOKEN, the runs service's."""
    spoil(env_file, RUNS_SERVICE_TOKEN="short-secret")
    done = check(env_file)
    assert bad_lines(done) == [
        "RUNS_SERVICE_TOKEN: expected a secret of at least 32 characters, got <hidden>"
    ]
    assert "short-secret" not in done.stdout + done.stderr


def test_a_missing_ansible_folder_is_named(env_file):
    spoil(env_file, ANSIBLE_DIR="/nonexistent/playbooks")
    [line] = bad_lines(check(env_file))
    assert line.startswith("ANSIBLE_DIR: expected a folder of playbooks and inventories")


@pytest.mark.parametrize("service", ["hub", "runs"])
def test_the_compose_reader_reads_what_yaml_reads(service):
    text = (ROOT / "docker-compose.yml").read_text()
    parsed = yaml.safe_load(text)["services"][service]["environment"]
    assert check_env.service_environment(text, service) == {k: str(v) for k, v in parsed.items()}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${A:-}", "a"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("x/${A}:${UNSET:-0.1.0}", "x/a:0.1.0"),
        ("${A:?run through make}/y", "a/y"),
    ],
)
def test_interpolation_follows_compose(template, expected):
    assert check_env.fill(template, {"A": "a", "EMPTY": ""}) == expected


# --- the CA bundle ---


def ca_bundle(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "EXTRA_CA_CERTS"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "ca-bundle.sh"), *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
    )


HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.skipif(not HOST_BUNDLE.exists(), reason="this machine keeps no Debian CA bundle")
def test_unset_the_images_trust_the_machines_own_bundle_and_say_so(env_file):
    chosen = ca_bundle("choose", str(env_file))
    assert chosen.stdout.strip() == str(HOST_BUNDLE)
    assert "EXTRA_CA_CERTS is not set" in chosen.stderr and str(HOST_BUNDLE) in chosen.stderr


def test_a_bundle_that_is_set_is_used_and_none_means_debians_only(env_file, tmp_path):
    bundle = tmp_path / "corp.pem"
    spoil(env_file, EXTRA_CA_CERTS=str(bundle))
    assert ca_bundle("choose", str(env_file)).stdout.strip() == str(bundle)
    # The environment wins over the env file (.ci/run sets it so).
    from_env = ca_bundle("choose", str(env_file), EXTRA_CA_CERTS="/etc/other.pem")
    assert from_env.stdout.strip() == "/etc/other.pem"
    spoil(env_file, EXTRA_CA_CERTS="none")
    none = ca_bundle("choose", str(env_file))
    assert none.stdout.strip() == "" and "Debian's CAs only" in none.stderr


@pytest.mark.parametrize(
    "failure",
    [
        "npm ERR! code SELF_SIGNED_CERT_IN_CHAIN",
        "npm error code UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
        "verify failed: self-signed certificate in certificate chain (_ssl.c:992)'))",
        "curl: (60) SSL certificate problem: unable to get local issuer certificate",
        "E: Failed to fetch https://deb.example.com/  Certificate verification failed: The "
        "certificate is NOT trusted.",
    ],
)
def test_a_build_failing_on_tls_names_the_setting(tmp_path, failure):
    log = tmp_path / "build.log"
    log.write_text(f"Step 4/9 : RUN npm ci\n{failure}\nThe command returned a non-zero code\n")
    hint = ca_bundle("hint", str(log), "opsbook/proxy", "")
    assert hint.returncode == 0
    assert "opsbook/proxy failed on a TLS handshake" in hint.stderr
    assert "Set EXTRA_CA_CERTS" in hint.stderr and "Debian's CAs only" in hint.stderr


def test_another_build_failure_gets_no_tls_hint(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("ERROR: No matching distribution found for jupyterhub==9.9\n")
    assert ca_bundle("hint", str(log), "opsbook/hub", "").returncode == 1


# --- a service that fails to start ---


def wait_ready(env_file: Path, env: dict, containers: list[dict], deadline: int = 600):
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "wait-ready.sh"), str(env_file), str(deadline)],
        capture_output=True,
        text=True,
        env={**env, "FAKE_CONTAINERS": json.dumps(containers)},
        timeout=120,  # a guard: the crash ends the wait long before its 600 s deadline
    )


def test_a_hub_that_keeps_restarting_is_named_with_its_last_log_lines(env_file, fake_engine):
    env, _ = fake_engine
    containers = [
        {"id": "p1", "service": "proxy", "state": "running", "restarts": [0], "log": "proxy ok"},
        # Seen running each time, restarted twice more since the wait began: a crash loop.
        {"id": "h1", "service": "hub", "state": "running", "restarts": [1, 1, 2, 3]},
    ]
    containers[1]["log"] = "\n".join(HUB_REFUSES)
    done = wait_ready(env_file, env, containers)
    assert done.returncode == 1
    assert "The deployment did not start: hub failed." in done.stderr
    assert "service hub (running, restarted 3 times" in done.stderr
    for line in HUB_REFUSES:
        assert f"  | {line}" in done.stderr
    assert "proxy ok" not in done.stderr


def test_at_the_deadline_the_services_not_healthy_are_shown(env_file, fake_engine):
    env, _ = fake_engine
    containers = [
        {"id": "h1", "service": "hub", "state": "running", "restarts": [0], "log": "hub ok"},
        {"id": "r1", "service": "runs", "state": "running", "restarts": [1], "health": "unhealthy"},
    ]
    containers[1]["log"] = "runs: RUNS_SSH_CA_KEY: cannot read /run/secrets/opsbook-user-ca"
    done = wait_ready(env_file, env, containers, deadline=1)
    assert done.returncode == 1
    assert "did not answer" in done.stderr
    assert "service runs (running, restarted 1 times, health unhealthy)" in done.stderr
    assert "cannot read /run/secrets/opsbook-user-ca" in done.stderr
    assert "hub ok" not in done.stderr
