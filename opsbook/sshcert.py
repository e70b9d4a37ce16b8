"""The container's SSH credential: its own key pair and a short-lived certificate for it.

No fleet key exists. At server start the singleuser image's start script (opsbook-start) makes a
key pair in memory-backed storage, OPSBOOK_SSH_DIR (default /run/opsbook/ssh, a tmpfs only the
engineer's uid reads): `id_ed25519` (0600, no passphrase) and `id_ed25519.pub`. The runs service
signs the public half: `id_ed25519-cert.pub` (0644) beside it is what ssh and Ansible present
(/etc/ssh/ssh_config.d/opsbook.conf names both), and the hosts check its principals.

`ensure_certificate` is called before each play (every batch of a rolling patch, the pre- and
post-checks, the errata promotion): it asks for a new certificate only when there is none, when
the one there expires within `min_seconds` (or half its validity, if that is shorter), is not for
this key, or, given a production run's id, was not issued for that run (only such a certificate
carries the run's environment). Anything else keeps the one there: a call costs a file read.
A certificate the service refuses stops the play before it starts (CertificateError says why):
fail closed, no play runs on a credential the service did not grant just now.

`certificate_step` is what the toolkit's plays take as their `before_play`: ensure_certificate with
the runs client (from the environment unless given), or nothing when OPSBOOK_SSH_CERTIFICATES is
off (only for a fleet whose hosts take no certificate: the unit tests' fake fleet, connection
local; see opsbook.config).

`opsbook-cert` (main) renews by hand in a terminal and prints the principals and the expiry,
never the key. ssh runs it too, quietly, before a connection when the container holds no valid
certificate (images/singleuser/opsbook-ssh-ready, from the image's ssh config).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsbook import config
from opsbook.contract import wire
from opsbook.errors import OpsbookError
from opsbook.runsclient import LedgerUnavailable, RunsClient, RunsError

KEY_NAME = "id_ed25519"
CERT_SUFFIX = "-cert.pub"
# Renew when less than this is left (or half the certificate's validity, if that is less): a
# play started now has this long before its certificate expires; sessions ssh opened stay open.
MIN_SECONDS = 120.0

BeforePlay = Callable[[], object]

_lock = threading.Lock()  # one issue at a time per process (the lease keeper renews too)


class CertificateError(OpsbookError):
    """No usable SSH certificate: the message says why and what to do; no play was started."""


@dataclass(frozen=True)
class KeyFiles:
    """Where the key pair and its certificate are."""

    folder: Path

    @property
    def private(self) -> Path:
        return self.folder / KEY_NAME

    @property
    def public(self) -> Path:
        return self.folder / f"{KEY_NAME}.pub"

    @property
    def certificate(self) -> Path:
        return self.folder / f"{KEY_NAME}{CERT_SUFFIX}"


def ssh_dir(environ: Mapping[str, str] | None = None) -> Path:
    """OPSBOOK_SSH_DIR, default /run/opsbook/ssh."""
    env = os.environ if environ is None else environ
    value = env.get(config.SSH_DIR, "").strip()
    return Path(value).expanduser() if value else config.DEFAULT_SSH_DIR


def ensure_key(folder: Path) -> str:
    """The public key line of the pair in `folder`, made now (ssh-keygen) if there is none.

    The start script makes it; this covers a folder that was emptied. `folder` must be on
    memory-backed storage of the engineer's own (never the home volume): it is created 0700 if
    missing, and its parent must exist.
    """
    files = KeyFiles(folder)
    if files.private.is_file() and files.public.is_file():
        return _public_line(files.public.read_text())
    if not folder.parent.is_dir():
        raise CertificateError(
            f"no folder {folder.parent} for the SSH key pair: the container's start script "
            "(opsbook-start) makes it on the tmpfs the hub mounts at /run/opsbook; restart your "
            "server, or set OPSBOOK_SSH_DIR"
        )
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        for stale in (files.private, files.public):
            stale.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", _comment(), "-f", files.private],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        raise CertificateError(f"cannot make an SSH key pair in {folder}: {detail}") from None
    return _public_line(files.public.read_text())


def read_certificate(folder: Path, public_key: str | None = None) -> wire.Certificate | None:
    """The certificate beside the key, as the service issued it; None if there is none, it
    cannot be read, or it is not for `public_key` (the key was made anew)."""
    path = KeyFiles(folder).certificate
    try:
        line = path.read_text().strip()
    except OSError:
        return None
    try:
        return _parse(line, public_key)
    except ValueError:
        return None


def renewal_reason(
    held: wire.Certificate | None,
    run_id: int | None = None,
    *,
    min_seconds: float = MIN_SECONDS,
    now: datetime | None = None,
) -> str | None:
    """Why the certificate held must be renewed, or None to keep it."""
    if held is None:
        return "no certificate for this key"
    now = now or datetime.now(UTC)
    after = wire.parse_wire_time(held.valid_after)
    before = wire.parse_wire_time(held.valid_before)
    margin = min(timedelta(seconds=min_seconds), (before - after) / 2)
    if now < after:
        return f"not valid before {held.valid_after}"
    if before - now < margin:
        return f"expires at {held.valid_before}"
    if run_id is not None and not held.key_id.endswith(f":run-{run_id}"):
        return f"not issued for run {run_id} (its environment's principal)"
    return None


def ensure_certificate(
    client: RunsClient,
    run_id: int | None = None,
    min_seconds: float = MIN_SECONDS,
    *,
    force: bool = False,
    folder: Path | None = None,
    now: datetime | None = None,
) -> wire.Certificate:
    """The container's current certificate: the one there, or a new one from the runs service.

    run_id: a production run the caller owns and works on now: the certificate must carry that
    run's environment (the service grants it while the run is running and its lease holds).
    A non-production run needs none: its environment is in every certificate.
    force: a new one whatever the one there (opsbook-cert).
    Raises CertificateError (no certificate, and why) if the service refuses or cannot be
    reached; the certificate there is then left as it is (it expires on its own).
    """
    folder = folder or ssh_dir()
    with _lock:
        public_key = ensure_key(folder)
        held = read_certificate(folder, public_key)
        reason = (
            "renewed by hand"
            if force
            else renewal_reason(held, run_id, min_seconds=min_seconds, now=now)
        )
        if reason is None:
            assert held is not None
            return held
        for_run = f" for run {run_id}" if run_id is not None else ""
        try:
            issued = client.certificate(public_key, run_id)
        except RunsError as refused:
            raise CertificateError(
                f"the runs service refused an SSH certificate{for_run}: {refused}. "
                "No play was started: the hosts accept only a current certificate."
            ) from None
        except LedgerUnavailable as gone:
            raise CertificateError(
                f"no SSH certificate{for_run} ({reason}): {gone}. No play was started."
            ) from None
        try:
            _parse(issued.certificate, public_key)
        except ValueError as wrong:
            raise CertificateError(
                f"the runs service answered with a certificate that cannot be used: {wrong}"
            ) from None
        _write_atomically(KeyFiles(folder).certificate, issued.certificate + "\n", 0o644)
        return issued


def certificate_step(
    enabled: bool | None = None,
    client: RunsClient | None = None,
    run_id: int | None = None,
    *,
    folder: Path | None = None,
    min_seconds: float = MIN_SECONDS,
) -> BeforePlay:
    """What a play does first: ensure_certificate, or nothing when certificates are off.

    enabled: settings.ssh_certificates (None: OPSBOOK_SSH_CERTIFICATES from the environment);
    client: the runs client (None: RunsClient.from_env() at the first call); run_id: the
    production run the plays belong to, if any.
    """
    if enabled is None:
        enabled = config.ssh_certificates(os.environ)
    if not enabled:
        return _no_certificate
    made: list[RunsClient] = [client] if client is not None else []

    def before_play() -> wire.Certificate:
        if not made:
            try:
                made.append(RunsClient.from_env())
            except OpsbookError as error:
                raise CertificateError(
                    f"no SSH certificate: {error}. ({config.SSH_CERTIFICATES}=off only where "
                    "the hosts take no certificate.)"
                ) from None
        return ensure_certificate(made[0], run_id, min_seconds, folder=folder)

    return before_play


def _no_certificate() -> None:
    """OPSBOOK_SSH_CERTIFICATES=off: the hosts take no certificate."""
    return None


def describe(certificate: wire.Certificate, *, now: datetime | None = None) -> str:
    """For a person: KeyID, serial, principals and when it expires (never the key)."""
    now = now or datetime.now(UTC)
    before = wire.parse_wire_time(certificate.valid_before)
    left = max(0, int((before - now).total_seconds()))
    return "\n".join(
        [
            f"certificate {certificate.key_id}, serial {certificate.serial}",
            f"  principals: {' '.join(certificate.principals) or '-'}",
            f"  valid until {before:%Y-%m-%d %H:%M:%S} UTC ({left // 60} min {left % 60} s left)",
        ]
    )


# --- the certificate file --------------------------------------------------------------------


def _comment() -> str:
    user = os.environ.get("JUPYTERHUB_USER") or os.environ.get("USER") or "engineer"
    return f"opsbook:{user}"


def _public_line(text: str) -> str:
    """The key's type and base64, without its comment (what the service signs)."""
    words = text.split()
    if len(words) < 2:
        raise CertificateError("the SSH public key file is empty or damaged; remove the pair")
    return f"{words[0]} {words[1]}"


def _parse(line: str, public_key: str | None) -> wire.Certificate:
    """An OpenSSH user certificate line as wire.Certificate; ValueError if it is not one (for
    `public_key`, when given)."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        SSHCertificate,
        SSHCertificateType,
        load_ssh_public_identity,
    )

    words = line.split()
    if len(words) < 2:
        raise ValueError("not an OpenSSH certificate line")
    try:
        cert = load_ssh_public_identity(f"{words[0]} {words[1]}".encode())
    except Exception as error:  # cryptography raises ValueError or UnsupportedAlgorithm
        raise ValueError(f"not an OpenSSH certificate ({error})") from None
    if not isinstance(cert, SSHCertificate) or cert.type is not SSHCertificateType.USER:
        raise ValueError("not an OpenSSH user certificate")
    if public_key is not None:
        signed = cert.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        if signed.split()[:2] != public_key.split()[:2]:
            raise ValueError("it certifies another key than this container's")
    return wire.Certificate(
        certificate=line,
        key_id=cert.key_id.decode(errors="replace"),
        serial=cert.serial,
        principals=[name.decode(errors="replace") for name in cert.valid_principals],
        valid_after=wire.wire_time(datetime.fromtimestamp(cert.valid_after, UTC)),
        valid_before=wire.wire_time(datetime.fromtimestamp(cert.valid_before, UTC)),
    )


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Write `path` whole or not at all (ssh never reads half a certificate)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- opsbook-cert ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """opsbook-cert: get a new certificate now, print its principals and expiry (not the key)."""
    parser = argparse.ArgumentParser(
        prog="opsbook-cert",
        description="Get a new SSH certificate for this container's key from the runs service "
        "(then `ssh web-1` works). Prints its principals and expiry, never the key.",
    )
    parser.add_argument(
        "--run",
        type=int,
        metavar="ID",
        help="a production run you own and work on now: the certificate carries its environment",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="give up after this long if the runs service does not answer (default 20)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only problems (ssh's way: opsbook-ssh-ready)"
    )
    options = parser.parse_args(argv)
    try:
        client = RunsClient.from_env(
            timeout=min(5.0, options.timeout), retry_for=max(0.0, options.timeout - 5.0)
        )
        certificate = ensure_certificate(client, options.run, force=True)
    except OpsbookError as error:
        print(f"opsbook-cert: {error}", file=sys.stderr)
        return 1
    if not options.quiet:
        print(describe(certificate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
