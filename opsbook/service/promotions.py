"""Errata promotions performed on the package repository's host, with the least privilege it takes.

Why the service does it, not the engineer's container: a suite is what every host of an
environment installs next, so who may change it is a rule of the service (rules.check_promotion),
and a rule is only a rule where the work happens. The repository host (RUNS_PACKAGE_REPO_SSH)
admits no engineer: its sshd accepts only certificates of principal `errata-<environment>`, and
only the service can sign one (it holds the user CA key).

For each promotion the service makes a fresh ed25519 key in memory, signs itself a certificate
for it (ssh_ca.CertificateAuthority.sign_command): principal `errata-<environment>`, valid for a
minute, no pty and no forwarding, and the critical option force-command set to exactly
`sudo /usr/local/bin/opsbook-repo promote --suite <environment> PACKAGE VERSION ...`, so the
certificate can do that promotion and nothing else, even if it leaked. Then it runs `ssh` (batch
mode, no agent, no config file) to the host, which must show a host certificate of the host CA
(RUNS_SSH_HOST_CA, known_hosts @cert-authority). The key and certificate live in a private
temporary folder for the seconds the command takes.

The repository prints one line per version (`promoted P V to E`, `unchanged P V: already in E`);
anything else, or a non-zero exit, is a failure: 503 when the host cannot be reached (ssh's 255),
502 when the repository refused or failed, each naming the host and its reason. Nothing is
recorded as promoted then (the store records only what this returns).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from opsbook.contract.wire import ErrorCode
from opsbook.service.repohost import RepoHost
from opsbook.service.rules import Refused, bad_request
from opsbook.service.ssh_ca import CertificateAuthority

REPO_COMMAND = "/usr/local/bin/opsbook-repo"
PRINCIPAL_PREFIX = "errata-"
SSH_TIMEOUT = 30.0  # seconds for the whole promotion (connect, sign, publish)
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,127}$")  # Debian policy 5.6.1
VERSION = re.compile(r"^[0-9][A-Za-z0-9.+~:-]{0,127}$")  # Debian policy 5.6.12, bounded
ENVIRONMENT = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")  # opsbook-repo's suite names

Pair = tuple[str, str]


@dataclass(frozen=True)
class Outcome:
    """What the repository did: versions added to the suite, and versions it had already."""

    promoted: tuple[Pair, ...]
    unchanged: tuple[Pair, ...]


def check_pairs(environment: str, pairs: Sequence[Pair]) -> None:
    """400 unless every name is one the repository could have: the command is built from them."""
    if not ENVIRONMENT.match(environment):
        raise bad_request(
            f"environment: {environment!r} is not a suite name (lower-case letters, digits, . "
            "and -)"
        )
    if not pairs:
        raise bad_request("errata: expected at least one {package, version}")
    if len(pairs) > 200:
        raise bad_request("errata: at most 200 versions in one promotion")
    for index, (package, version) in enumerate(pairs):
        if not PACKAGE.match(package):
            raise bad_request(f"errata[{index}].package: {package!r} is not a Debian package name")
        if not VERSION.match(version):
            raise bad_request(f"errata[{index}].version: {version!r} is not a Debian version")


def promote_command(environment: str, pairs: Sequence[Pair]) -> str:
    """The forced command: exactly this promotion (names checked by check_pairs, quoted anyway)."""
    words = ["sudo", REPO_COMMAND, "promote", "--suite", environment]
    for package, version in pairs:
        words += [package, version]
    return " ".join(shlex.quote(word) for word in words)


def parse_output(stdout: str, environment: str, pairs: Sequence[Pair]) -> Outcome:
    """The repository's lines, checked against what was asked: every pair exactly once."""
    promoted: list[Pair] = []
    unchanged: list[Pair] = []
    for line in stdout.splitlines():
        if m := re.fullmatch(rf"promoted (\S+) (\S+) to {re.escape(environment)}", line):
            promoted.append((m[1], m[2]))
        elif m := re.fullmatch(
            rf"unchanged (\S+) (\S+): already in {re.escape(environment)}", line
        ):
            unchanged.append((m[1], m[2]))
    if sorted(promoted + unchanged) != sorted(dict.fromkeys(pairs)):
        raise ValueError(f"unexpected answer: {stdout.strip()[:500]!r}")
    return Outcome(promoted=tuple(promoted), unchanged=tuple(unchanged))


class Promoter(Protocol):
    """What the web app needs of a promoter (SshPromoter; tests give a fake repository)."""

    def promote(self, environment: str, pairs: Sequence[Pair], *, by: str) -> Outcome: ...


class SshPromoter:
    """Promotes on the repository host over SSH with a one-minute certificate per promotion."""

    def __init__(
        self,
        ca: CertificateAuthority,
        target: RepoHost,
        host_ca: str,
        *,
        ssh: str = "ssh",
        timeout: float = SSH_TIMEOUT,
    ) -> None:
        self.ca = ca
        self.target = target
        self.host_ca = host_ca
        self.ssh = ssh
        self.timeout = timeout

    def promote(self, environment: str, pairs: Sequence[Pair], *, by: str) -> Outcome:
        """Add `pairs` to `environment`'s suite; Refused (502/503) saying why if it did not."""
        check_pairs(environment, pairs)
        command = promote_command(environment, pairs)
        key = ed25519.Ed25519PrivateKey.generate()
        issued = self.ca.sign_command(
            key.public_key(),
            key_id=f"opsbook:runs:errata:{environment}:{by}",
            principal=f"{PRINCIPAL_PREFIX}{environment}",
            command=command,
            now=datetime.now(UTC),
        )
        with tempfile.TemporaryDirectory(prefix="opsbook-errata-") as folder:
            identity = Path(folder) / "id_ed25519"
            _write_private(identity, key)
            Path(f"{identity}-cert.pub").write_text(issued.certificate + "\n")
            known_hosts = Path(folder) / "known_hosts"
            host_pattern = (
                self.target.host
                if self.target.port == 22
                else f"[{self.target.host}]:{self.target.port}"
            )
            known_hosts.write_text(f"@cert-authority {host_pattern} {self.host_ca}\n")
            result = self._run(identity, known_hosts)
        return self._outcome(result, environment, pairs)

    def _run(self, identity: Path, known_hosts: Path) -> subprocess.CompletedProcess[str]:
        argv = [
            self.ssh,
            "-F",
            "/dev/null",  # no user or system config may widen anything
            "-T",
            "-i",
            str(identity),
            "-o",
            f"CertificateFile={identity}-cert.pub",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ClearAllForwardings=yes",
            "-p",
            str(self.target.port),
            "-l",
            self.target.user,
            self.target.host,
            "promote",  # ignored by the forced command; shown in the host's log
        ]
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(identity.parent)},
            )
        except FileNotFoundError:
            raise Refused(
                503,
                ErrorCode.REPOSITORY_UNREACHABLE,
                f"cannot promote on {self.target}: this runs service has no ssh client "
                f"({self.ssh}); the opsbook/runs image installs openssh-client",
            ) from None
        except subprocess.TimeoutExpired:
            raise Refused(
                503,
                ErrorCode.REPOSITORY_UNREACHABLE,
                f"the package repository's host {self.target} did not finish the promotion in "
                f"{self.timeout:g} s; nothing is recorded as promoted. Check the host, then "
                "promote again (it is idempotent).",
            ) from None

    def _outcome(
        self, result: subprocess.CompletedProcess[str], environment: str, pairs: Sequence[Pair]
    ) -> Outcome:
        reason = _last_lines(result.stderr)
        if result.returncode == 255:
            raise Refused(
                503,
                ErrorCode.REPOSITORY_UNREACHABLE,
                f"cannot reach the package repository's host {self.target} over SSH "
                f"(RUNS_PACKAGE_REPO_SSH): {reason or 'ssh failed'}; nothing was promoted. "
                "Check that it runs and that its host certificate is signed by the host CA "
                "(RUNS_SSH_HOST_CA), then promote again.",
            )
        if result.returncode != 0:
            raise Refused(
                502,
                ErrorCode.REPOSITORY_FAILED,
                f"the package repository on {self.target} refused the promotion into "
                f"{environment} (exit {result.returncode}): {reason or 'no reason given'}; "
                "nothing was promoted.",
            )
        try:
            return parse_output(result.stdout, environment, pairs)
        except ValueError as error:
            raise Refused(
                502,
                ErrorCode.REPOSITORY_FAILED,
                f"the package repository on {self.target} gave an answer that does not match "
                f"the promotion into {environment} ({error}); nothing is recorded as promoted. "
                "Compare its suite with `opsbook-repo list` on the host.",
            ) from None


def _write_private(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    data = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:])[:800]
