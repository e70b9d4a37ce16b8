"""End-to-end tests run against the real stack (tests/e2e/stack.py), brought up once a session.

Without a Docker engine they skip, saying so; in CI (CI=true) they fail instead: there, a missing
engine is a broken machine, not a reason to pass.
"""

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from . import stack as test_stack


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def stack():
    if not docker_answers():
        reason = "no Docker engine answers (`docker info` fails): the e2e tests need one"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    running = test_stack.up()
    yield running
    if os.environ.get("OPSBOOK_KEEP_STACK") != "1":
        test_stack.down()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for headless Chromium as root on a machine with a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def trusted_certificate_args(config: test_stack.StackConfig) -> list[str]:
    """Chromium trusts the stack's own certificate, and no other unknown one.

    Chromium on Linux reads trust anchors from an NSS database (certutil, which this machine
    need not have), so instead it is told the certificate's public key: errors are ignored only
    for a server presenting exactly that key (the demo certificate of the hub and the provider).
    """
    if not config.tls:
        return []
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    pem = (config.ca_file.parent / "server.crt").read_bytes()
    spki = (
        x509.load_pem_x509_certificate(pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return [f"--ignore-certificate-errors-spki-list={base64.b64encode(digest.finalize()).decode()}"]


@pytest.fixture(scope="module")
def browser(stack):
    if not Path(CHROMIUM).exists():
        reason = "Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, *trusted_certificate_args(stack.config)],
        )
        yield chromium
        chromium.close()
