"""The fleet's SSH user certificate authority: short-lived certificates for engineers' own keys.

Why here: which principals a certificate may carry depends on what only this service knows, the
caller's scopes (from the hub), the runs, their owners, leases and whether they are production.
A separate CA would have to ask this service for each of those, so the CA key lives in the runs
container (RUNS_SSH_CA_KEY, mounted read-only into it alone) and never leaves it.

An engineer's container makes its own key pair at start (kept in memory-backed storage) and sends
the public half; the service answers with an OpenSSH user certificate:

- principals chosen here, never by the caller (`principals`): every non-production environment of
  the inventory for holders of custom:runs:write, and a production run's environment for that
  run's owner while the run is running and its lease holds; never the package repository's
  `errata-<environment>` principals, which only the service's own certificates carry;
- KeyID `opsbook:<user>` or `opsbook:<user>:run-<id>` (sshd logs it with every login), a random
  63-bit serial (the ledger records it), validity from a minute ago (clock skew) to
  RUNS_SSH_CERT_MINUTES from now;
- extensions: permit-pty only (no agent, port or X11 forwarding, no ~/.ssh/rc); critical options:
  none, or source-address when RUNS_SSH_SOURCE_ADDRESSES names the engineers' networks.

Keys accepted, from the caller and for the CA itself: ed25519, or RSA of at least 3072 bits.

The service also signs certificates for itself (`sign_command`): a one-off key, one principal, a
forced command (critical option force-command) and no extension at all (no pty, no forwarding),
valid for a minute; that is how it promotes errata on the package repository's host
(promotions.py) without any long-lived key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_private_key,
    load_ssh_public_key,
)

from opsbook.contract.wire import ErrorCode
from opsbook.service.fleet import Fleet
from opsbook.service.rules import Refused, bad_request

KEY_ID_PREFIX = "opsbook"
MIN_RSA_BITS = 3072
MAX_PUBLIC_KEY = 16_384  # characters of an OpenSSH public key line (an RSA-16384 key fits)
CLOCK_SKEW = timedelta(seconds=60)  # valid_after lies this far in the past
EXTENSIONS = (b"permit-pty",)
ALLOWED = "ed25519 (preferred; ssh-keygen -t ed25519) or RSA of at least 3072 bits"
# Key types OpenSSH knows that we refuse, so the answer names them instead of "not a key".
_REFUSED_TYPES = ("ssh-dss", "ecdsa-sha2-", "sk-ssh-ed25519@", "sk-ecdsa-sha2-")


class CaKeyError(Exception):
    """The CA's private key cannot be used; the message says why (not the key)."""


@dataclass(frozen=True)
class UserKey:
    """A caller's public key, checked: `line` is its OpenSSH form (without a comment)."""

    key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey
    kind: str  # ssh-ed25519 or ssh-rsa
    line: str
    fingerprint: str  # SHA256:... as ssh-keygen -l prints it


@dataclass(frozen=True)
class Issued:
    """A signed certificate and what it says."""

    certificate: str  # one OpenSSH line: <type>-cert-v01@openssh.com <base64> <key_id>
    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime


def fingerprint(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> str:
    blob = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[1]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_public_key(text: str) -> UserKey:
    """The caller's OpenSSH public key line (`ssh-ed25519 AAAA... comment`), or Refused (400)
    saying what was wrong and which keys are accepted."""
    line = text.strip()
    if not line or len(line) > MAX_PUBLIC_KEY or "\n" in line or "\r" in line:
        raise bad_request(
            f"public_key: expected one OpenSSH public key line, such as the contents of "
            f"id_ed25519.pub (at most {MAX_PUBLIC_KEY} characters); accepted keys: {ALLOWED}"
        )
    kind = line.split()[0]
    if kind.endswith("-cert-v01@openssh.com"):
        raise bad_request(
            f"public_key: that is a certificate ({kind}), not a public key; send the key's "
            ".pub file (id_ed25519.pub), not id_ed25519-cert.pub"
        )
    if kind.startswith(_REFUSED_TYPES):
        raise bad_request(f"public_key: {kind} keys are not accepted; use {ALLOWED}")
    if kind not in ("ssh-ed25519", "ssh-rsa"):
        raise bad_request(
            f"public_key: not an OpenSSH public key (it starts with {kind[:40]!r}); expected "
            f"a line such as 'ssh-ed25519 AAAAC3Nza... user@host'; accepted keys: {ALLOWED}"
        )
    try:
        key = load_ssh_public_key(line.encode())
    except (ValueError, TypeError) as error:
        raise bad_request(
            f"public_key: not a valid OpenSSH {kind} public key ({error}); send the whole "
            "line of the .pub file"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise bad_request(
                f"public_key: an RSA key of {key.key_size} bits is too short; use {ALLOWED}"
            )
    elif not isinstance(key, ed25519.Ed25519PublicKey):  # the type word lied about the blob
        raise bad_request(f"public_key: not a {kind} key; accepted keys: {ALLOWED}")
    openssh = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return UserKey(key=key, kind=kind, line=openssh, fingerprint=fingerprint(key))


def nonproduction_environments(fleet: Fleet) -> list[str]:
    """The environments of the inventory's stacks that are not production, sorted."""
    return sorted(
        {stack.environment for stack in fleet.stacks.values() if stack.environment}
        - {stack.environment for stack in fleet.stacks.values() if stack.production}
    )


def principals(fleet: Fleet, run_environment: str | None = None) -> list[str]:
    """What a holder of custom:runs:write may log in as: the non-production environments; plus
    `run_environment`, the environment of the production run the caller owns (the caller of this
    function has checked that: rules.check_certificate_run). Nothing else: the package
    repository admits only the service's own certificates (sign_command)."""
    chosen = nonproduction_environments(fleet)
    if run_environment and run_environment not in chosen:
        chosen.append(run_environment)
    if not chosen:
        raise Refused(
            409,
            ErrorCode.WRONG_STATE,
            "no host would let this certificate in: the inventory has no non-production "
            "environment, and no production run was named; ask with the run_id of your running "
            "production run",
        )
    return chosen


def key_id(user: str, run_id: int | None = None) -> str:
    return f"{KEY_ID_PREFIX}:{user}" + (f":run-{run_id}" if run_id is not None else "")


class CertificateAuthority:
    """The CA's private key and how long its certificates last."""

    def __init__(
        self,
        private_key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey,
        *,
        minutes: int = 15,
        source_addresses: Sequence[str] = (),
    ) -> None:
        _check_ca_key(private_key)
        self._key = private_key
        self.validity = timedelta(minutes=minutes)
        self.source_addresses = tuple(source_addresses)
        self.public_line = (
            private_key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
        )
        self.fingerprint = fingerprint(private_key.public_key())

    @classmethod
    def load(
        cls, path: str | Path, *, minutes: int = 15, source_addresses: Sequence[str] = ()
    ) -> CertificateAuthority:
        """The CA from its OpenSSH private key file (no passphrase); CaKeyError saying why not."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise CaKeyError(
                f"no such file: {path} (scripts/init-secrets.sh makes the user CA as "
                "secrets/ssh/user_ca; the runs service's container mounts it there)"
            ) from None
        except PermissionError:
            raise CaKeyError(f"cannot read {path}: permission denied") from None
        except OSError as error:
            raise CaKeyError(f"cannot read {path}: {error.strerror or error}") from None
        try:
            with warnings.catch_warnings():  # DSA's deprecation: refused below anyway
                warnings.simplefilter("ignore")
                key = load_ssh_private_key(data, password=None)
        except TypeError:  # cryptography's way of saying it is encrypted
            raise CaKeyError(
                f"{path} is protected by a passphrase; the CA key needs none"
            ) from None
        except (ValueError, UnsupportedAlgorithm) as error:
            raise CaKeyError(
                f"{path} is not an OpenSSH private key ({error}); expected the user CA made "
                "by scripts/init-secrets.sh (ssh-keygen -t ed25519)"
            ) from None
        try:
            return cls(key, minutes=minutes, source_addresses=source_addresses)  # type: ignore[arg-type]
        except CaKeyError as error:
            raise CaKeyError(f"{path}: {error}") from None

    def sign(
        self,
        user_key: UserKey,
        *,
        key_id: str,
        principals: Iterable[str],
        now: datetime,
        serial: int | None = None,
    ) -> Issued:
        names = tuple(dict.fromkeys(principals))
        if not names:
            # OpenSSH reads a certificate without principals as valid for ANY principal.
            raise ValueError("a certificate needs at least one principal")
        serial = secrets.randbits(63) if serial is None else serial
        after = (now - CLOCK_SKEW).replace(microsecond=0)
        before = (now + self.validity).replace(microsecond=0)
        builder = (
            SSHCertificateBuilder()
            .public_key(user_key.key)
            .serial(serial)
            .type(SSHCertificateType.USER)
            .key_id(key_id.encode())
            .valid_principals([name.encode() for name in names])
            .valid_after(int(after.timestamp()))
            .valid_before(int(before.timestamp()))
        )
        for extension in EXTENSIONS:
            builder = builder.add_extension(extension, b"")
        if self.source_addresses:
            builder = builder.add_critical_option(
                b"source-address", ",".join(self.source_addresses).encode()
            )
        return self._issue(builder, key_id, serial, names, after, before)

    def sign_command(
        self,
        user_key: ed25519.Ed25519PublicKey,
        *,
        key_id: str,
        principal: str,
        command: str,
        now: datetime,
        validity: timedelta = timedelta(minutes=1),
    ) -> Issued:
        """A certificate for the service itself: one principal, `command` forced whatever the
        client asks (force-command), no extension (no pty, agent, port or X11 forwarding, no
        user rc), valid from a minute ago (skew) to `validity` from now."""
        serial = secrets.randbits(63)
        after = (now - CLOCK_SKEW).replace(microsecond=0)
        before = (now + validity).replace(microsecond=0)
        builder = (
            SSHCertificateBuilder()
            .public_key(user_key)
            .serial(serial)
            .type(SSHCertificateType.USER)
            .key_id(key_id.encode())
            .valid_principals([principal.encode()])
            .valid_after(int(after.timestamp()))
            .valid_before(int(before.timestamp()))
            .add_critical_option(b"force-command", command.encode())
        )
        return self._issue(builder, key_id, serial, (principal,), after, before)

    def _issue(
        self,
        builder: SSHCertificateBuilder,
        key_id: str,
        serial: int,
        names: tuple[str, ...],
        after: datetime,
        before: datetime,
    ) -> Issued:
        certificate = builder.sign(self._key)
        line = f"{certificate.public_bytes().decode()} {key_id}"
        return Issued(
            certificate=line,
            key_id=key_id,
            serial=serial,
            principals=names,
            valid_after=after,
            valid_before=before,
        )


def _check_ca_key(key: object) -> None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size >= MIN_RSA_BITS:
            return
        raise CaKeyError(
            f"an RSA key of {key.key_size} bits is too short for the CA; use ed25519 "
            f"(or RSA of at least {MIN_RSA_BITS} bits)"
        )
    kind = type(key).__name__.removesuffix("PrivateKey") or "unknown"
    raise CaKeyError(
        f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} key cannot be the CA; use ed25519 "
        f"(or RSA of at least {MIN_RSA_BITS} bits)"
    )
