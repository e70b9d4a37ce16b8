"""images/singleuser/opsbook-ssh-ready: what ssh runs before every connection in an engineer's
container. It asks for a certificate (opsbook-cert) when, and only when, the one there is missing,
damaged or about to end; concurrent connections ask once; a refusal reaches ssh's stderr.

Real ssh-keygen certificates from a throwaway CA; opsbook-cert is a stand-in that signs one with
that CA (the runs service's side is tested in tests/unit/service and tests/e2e).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "singleuser" / "opsbook-ssh-ready"
# A zone far from UTC and one without tzdata: ssh-keygen and bash print local time alike.
ZONES = ("UTC0", "XYZ-14")


@pytest.fixture(scope="module")
def keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ssh-keygen is missing: .ci/run installs openssh-client")
        pytest.skip("needs ssh-keygen: apt-get install openssh-client")
    return found


@pytest.fixture
def container(tmp_path: Path, keygen: str) -> Path:
    """A CA, the container's SSH folder with its key pair, and an opsbook-cert on PATH that
    records each call and signs the key for ten minutes ($FAKE_CERT_FAILS: refuse instead)."""
    run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")])
    ssh = tmp_path / "ssh"
    ssh.mkdir(mode=0o700)
    run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "opsbook-cert"
    fake.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> "{tmp_path}/calls"\n'
        'if [ -n "${FAKE_CERT_FAILS:-}" ]; then\n'
        '    echo "opsbook-cert: the runs service refused: you are not in ops" >&2; exit 1\n'
        "fi\n"
        "sleep 0.3  # the runs service's round trip, so concurrent callers overlap\n"
        f'{keygen} -q -s "{tmp_path}/ca" -I opsbook:erin -n web -V -1m:+10m '
        f'"{ssh}/id_ed25519.pub"\n'
    )
    fake.chmod(0o755)
    return tmp_path


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def sign(where: Path, validity: str) -> None:
    """A certificate for the container's key, valid for `validity` (ssh-keygen -V)."""
    run(
        [
            shutil.which("ssh-keygen") or "ssh-keygen",
            "-q",
            "-s",
            str(where / "ca"),
            "-I",
            "opsbook:erin:run-12",
            "-n",
            "web,db",
            "-V",
            validity,
            str(where / "ssh" / "id_ed25519.pub"),
        ]
    )


def ready(where: Path, zone: str = "UTC0", **env: str) -> subprocess.CompletedProcess[str]:
    """opsbook-ssh-ready as ssh runs it: stdin and stdout /dev/null, stderr kept."""
    return subprocess.run(
        [str(SCRIPT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        env={
            "PATH": f"{where / 'bin'}:{os.environ['PATH']}",
            "OPSBOOK_SSH_DIR": str(where / "ssh"),
            "TZ": zone,
            **env,
        },
    )


def calls(where: Path) -> int:
    path = where / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def certificate(where: Path) -> str:
    return (where / "ssh" / "id_ed25519-cert.pub").read_text()


@pytest.mark.parametrize("zone", ZONES)
def test_no_certificate_asks_for_one_quietly(container: Path, zone: str) -> None:
    done = ready(container, zone)
    assert calls(container) == 1
    assert (container / "calls").read_text().split() == ["--quiet", "--timeout", "8"]
    assert certificate(container).startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert done.stderr == ""
    ready(container, zone)
    assert calls(container) == 1, "the new certificate is valid: no second request"


@pytest.mark.parametrize("zone", ZONES)
def test_a_valid_certificate_is_kept_as_it_is(container: Path, zone: str) -> None:
    """Even one for a production run, which only a play or the run's lease may renew."""
    sign(container, "-1m:+10m")
    before = certificate(container)
    ready(container, zone)
    assert calls(container) == 0
    assert certificate(container) == before


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(
    "validity", ["-10m:-5m", "-1m:+10s", "+5m:+15m"], ids=["expired", "ends-soon", "not-yet"]
)
def test_a_certificate_that_will_not_do_is_replaced(
    container: Path, zone: str, validity: str
) -> None:
    sign(container, validity)
    ready(container, zone)
    assert calls(container) == 1


def test_a_damaged_certificate_is_replaced(container: Path) -> None:
    damaged = "ssh-ed25519-cert-v01@openssh.com AAAA\n"
    (container / "ssh" / "id_ed25519-cert.pub").write_text(damaged)
    ready(container)
    assert calls(container) == 1


def test_connections_at_once_ask_once(container: Path) -> None:
    """Ansible's forks start together: the first asks, the others wait for its certificate."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: ready(container), range(6)))
    assert [result.stderr for result in results] == [""] * 6
    assert calls(container) == 1


def test_a_refusal_reaches_ssh_and_leaves_no_certificate(container: Path) -> None:
    refused = ready(container, FAKE_CERT_FAILS="1")
    assert refused.returncode != 0
    assert "opsbook-cert: the runs service refused: you are not in ops" in refused.stderr
    assert not (container / "ssh" / "id_ed25519-cert.pub").exists()
