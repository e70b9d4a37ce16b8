"""`make up`'s first step: .env from .env.example, with fresh secrets, private, and kept; and
its third: the SSH certificate authorities and the demo hosts' keys (scripts/init-secrets.sh)."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

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
    private = [
        ".env",
        "secrets/ssh/user_ca",
        "secrets/ssh/host_ca",
        "secrets/tls/ca.key",
        "secrets/tls/server.key",
        "secrets/tls/proxy/key.pem",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", *private], capture_output=True, text=True, cwd=ROOT
    )
    assert ignored.stdout.split() == private


# init-secrets.sh runs ssh-keygen in the singleuser image (`docker run --user 0 -v DIR:/out ...`).
# Here a stand-in `docker` runs the same command on this machine, with the mounted folder's
# container path replaced by its host path, and logs each call: no Docker, the same script.
FAKE_DOCKER = f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
assert args[0] == "run", args
mounts, entrypoint, i = {{}}, [], 1
while args[i].startswith("-"):
    if args[i] == "-v":
        host, inside = args[i + 1].split(":")[:2]
        mounts[inside] = host
    if args[i] == "--entrypoint":
        entrypoint = [args[i + 1]]
    i += 2 if args[i] in ("-v", "--user", "--network", "--entrypoint") else 1
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(" ".join(args[: i + 1]) + "\\n")  # the options and the image
command = entrypoint + [mounts.get(arg, arg) for arg in args[i + 1:]]
os.execvp(command[0], command)
"""
HOSTS = ("web-1", "web-2", "web-3", "db-1", "db-2", "db-3", "pkgrepo")
needs_keygen_as_root = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None or os.geteuid() != 0,
    reason="init-secrets.sh needs ssh-keygen and root here (it chowns, as in its container)",
)


@pytest.fixture
def init_secrets(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    env_file = tmp_path / "deploy" / ".env"
    init_env(env_file)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "init-secrets.sh"), str(env_file)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={
                **os.environ,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "FAKE_DOCKER_LOG": str(log),
            },
        )

    run.env_file = env_file
    run.ssh = env_file.parent / "secrets" / "ssh"
    run.docker_calls = lambda: log.read_text().splitlines() if log.exists() else []
    # The SSH step's containers (the TLS step runs one at every make up: tests below).
    run.ssh_calls = lambda: [c for c in run.docker_calls() if "/secrets/ssh:/out" in c]
    run.tls = env_file.parent / "secrets" / "tls"
    return run


def keygen(*args: str) -> str:
    return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, check=True).stdout


def fingerprint(public_key: Path) -> str:
    return keygen("-l", "-f", str(public_key)).split()[1]


def certificate(path: Path) -> dict[str, str]:
    """ssh-keygen -L's fields (Principals: the indented lines below it, joined)."""
    fields, last = {}, None
    for line in keygen("-L", "-f", str(path)).splitlines()[1:]:
        if ":" in line and not line.startswith(" " * 16):
            last, value = (part.strip() for part in line.split(":", 1))
            fields[last] = value
        elif last:
            fields[last] = (fields[last] + " " + line.strip()).strip()
    return fields


def mode_and_owner(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode), info.st_uid


@needs_keygen_as_root
def test_init_secrets_makes_both_cas_and_a_certified_key_per_host_and_prints_no_key(
    init_secrets,
):
    done = init_secrets()
    ssh = init_secrets.ssh
    assert mode_and_owner(ssh / "user_ca") == (0o400, 990)  # the runs service's user
    assert mode_and_owner(ssh / "host_ca") == (0o400, 0)
    for public in ("user_ca.pub", "host_ca.pub"):
        assert mode_and_owner(ssh / public)[0] == 0o444
    host_ca = fingerprint(ssh / "host_ca.pub")
    assert host_ca != fingerprint(ssh / "user_ca.pub")
    assert sorted(p.name for p in (ssh / "hosts").iterdir()) == sorted(HOSTS)
    for name in HOSTS:
        key = ssh / "hosts" / name / "ssh_host_ed25519_key"
        assert mode_and_owner(key) == (0o400, 0)
        cert = certificate(key.parent / "ssh_host_ed25519_key-cert.pub")
        assert cert["Type"].startswith("ssh-ed25519-cert-v01@openssh.com host certificate")
        # The repository's sshd listens on pkgrepo-admin alone (README, Networks).
        assert cert["Principals"] == ("pkgrepo pkgrepo-admin" if name == "pkgrepo" else name)
        assert cert["Signing CA"].split()[1] == host_ca
        valid_to = cert["Valid"].split(" to ")[1]
        assert int(valid_to[:4]) >= 2035, cert["Valid"]  # 520 weeks
        assert cert["Public key"].split()[1] == fingerprint(key.with_name(key.name + ".pub"))
    assert not (ssh.parent / "fleet-ssh").exists()
    # The env file gets the host CA's public line (what engineers' known_hosts trusts).
    assert values(init_secrets.env_file)["SSH_HOST_CA_PUBLIC_KEY"] == (
        (ssh / "host_ca.pub").read_text().strip()
    )
    assert stat.S_IMODE(os.stat(init_secrets.env_file).st_mode) == 0o600
    printed = done.stdout + done.stderr
    [call] = init_secrets.ssh_calls()
    assert call.startswith("run --rm --user 0 ") and call.endswith(" opsbook/singleuser:0.1.0")
    # Not through the image's start script, which warned of a missing host CA on every make up.
    assert " --entrypoint sh " in call
    for private in [ssh / "user_ca", ssh / "host_ca", *(ssh / "hosts").glob("*/*_key")]:
        body = "".join(private.read_text().splitlines()[1:-1])
        assert body[100:160] not in printed.replace("\n", "")


@needs_keygen_as_root
def test_init_secrets_later_makes_only_what_is_missing(init_secrets):
    init_secrets()
    ssh = init_secrets.ssh
    files = {p: p.read_bytes() for p in ssh.rglob("*") if p.is_file()}
    env_before = init_secrets.env_file.read_text()

    again = init_secrets()
    assert len(init_secrets.ssh_calls()) == 1, "nothing missing: no container at all"
    assert {p: p.read_bytes() for p in ssh.rglob("*") if p.is_file()} == files
    assert init_secrets.env_file.read_text() == env_before
    assert again.stdout == ""

    # A host CA made anew: every host certificate is signed again, no host key changes, and the
    # env file follows; the user CA stays.
    (ssh / "host_ca").unlink()
    (ssh / "host_ca.pub").unlink()
    (ssh / "hosts" / "db-2" / "ssh_host_ed25519_key-cert.pub").unlink()
    init_secrets()
    new_ca = fingerprint(ssh / "host_ca.pub")
    assert new_ca != fingerprint(ssh / "user_ca.pub")
    for name in HOSTS:
        key = ssh / "hosts" / name / "ssh_host_ed25519_key"
        assert key.read_bytes() == files[key]
        cert = certificate(key.parent / "ssh_host_ed25519_key-cert.pub")
        assert cert["Signing CA"].split()[1] == new_ca
    assert (ssh / "user_ca").read_bytes() == files[ssh / "user_ca"]
    line = (ssh / "host_ca.pub").read_text().strip()
    assert values(init_secrets.env_file)["SSH_HOST_CA_PUBLIC_KEY"] == line
    assert init_secrets.env_file.read_text().count("SSH_HOST_CA_PUBLIC_KEY=") == 1


def set_values(env_file: Path, **changes: str) -> None:
    lines = env_file.read_text().splitlines()
    for name, value in changes.items():
        lines = [f"{name}={value}" if line.startswith(f"{name}=") else line for line in lines]
    env_file.write_text("\n".join(lines) + "\n")


def x509_certificate(path: Path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def names_in(path: Path) -> set[str]:
    from cryptography import x509

    san = x509_certificate(path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return {str(n) for n in san.value.get_values_for_type(x509.DNSName)} | {
        str(n) for n in san.value.get_values_for_type(x509.IPAddress)
    }


needs_openssl_as_root = pytest.mark.skipif(
    shutil.which("openssl") is None or os.geteuid() != 0,
    reason="init-secrets.sh needs openssl and root here (it chowns, as in its container)",
)


@needs_openssl_as_root
def test_init_secrets_makes_a_demo_authority_and_a_certificate_for_the_public_host(init_secrets):
    set_values(
        init_secrets.env_file,
        OAUTH_CALLBACK_URL="https://opsbook.example.test:8443/hub/oauth_callback",
        IDP_ISSUER="https://sso.example.test:9443",
    )
    done = init_secrets()
    tls = init_secrets.tls
    assert mode_and_owner(tls / "ca.key") == (0o400, 0)
    assert mode_and_owner(tls / "proxy" / "key.pem") == (0o400, 65534)  # the proxy's nobody
    assert mode_and_owner(tls / "idp" / "key.pem") == (0o400, 10001)  # the provider's user
    assert names_in(tls / "server.crt") == {
        "opsbook.example.test",
        "sso.example.test",
        "idp",
        "localhost",
        "127.0.0.1",
    }
    ca = x509_certificate(tls / "ca.crt")
    server = x509_certificate(tls / "server.crt")
    assert server.issuer == ca.subject
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, ec_signature(server))
    for served in ("proxy", "idp"):
        assert (tls / served / "cert.pem").read_bytes() == (tls / "server.crt").read_bytes()
    bundle = (tls / "trust" / "bundle.pem").read_text()
    assert bundle.endswith((tls / "ca.crt").read_text())
    assert bundle.count("BEGIN CERTIFICATE") > 1  # the system's store too
    printed = done.stdout + done.stderr
    for key in (tls / "ca.key", tls / "server.key"):
        body = "".join(key.read_text().splitlines()[1:-1])
        assert body[20:60] not in printed.replace("\n", "")


def ec_signature(certificate):
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(certificate.signature_hash_algorithm)


@needs_openssl_as_root
def test_the_certificate_is_made_again_for_a_new_host_and_the_authority_kept(init_secrets):
    init_secrets()
    tls = init_secrets.tls
    ca, server = (tls / "ca.crt").read_bytes(), (tls / "server.crt").read_bytes()
    again = init_secrets()
    assert again.stdout == ""
    assert (tls / "server.crt").read_bytes() == server
    set_values(
        init_secrets.env_file, OAUTH_CALLBACK_URL="https://ops.example.test/hub/oauth_callback"
    )
    init_secrets()
    assert (tls / "ca.crt").read_bytes() == ca
    assert "ops.example.test" in names_in(tls / "server.crt")


@needs_openssl_as_root
def test_tls_off_serves_no_certificate_and_trusts_only_the_system_store(init_secrets):
    set_values(init_secrets.env_file, TLS_MODE="off")
    init_secrets()
    tls = init_secrets.tls
    assert not (tls / "proxy" / "cert.pem").exists()
    assert not (tls / "ca.crt").exists()
    assert (tls / "trust" / "bundle.pem").read_bytes() == Path(
        "/etc/ssl/certs/ca-certificates.crt"
    ).read_bytes()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"TLS_MODE": "on"}, "TLS_MODE: expected one of self-signed, files, off, got 'on'"),
        (
            {"TLS_MODE": "files", "TLS_CERT_FILE": "/nowhere/cert.pem"},
            "TLS_CERT_FILE: expected an existing file (TLS_MODE is files), got '/nowhere/cert.pem'",
        ),
        (
            {"TLS_MODE": "files", "TLS_CERT_FILE": "cert.pem"},
            "TLS_CERT_FILE: expected the absolute path of a PEM file",
        ),
    ],
)
def test_bad_tls_settings_stop_make_up_naming_them(init_secrets, changes, expected):
    set_values(init_secrets.env_file, **changes)
    with pytest.raises(subprocess.CalledProcessError) as stopped:
        init_secrets()
    assert expected in stopped.value.stderr
