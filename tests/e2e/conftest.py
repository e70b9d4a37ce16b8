"""End-to-end tests run against the real stack (tests/e2e/stack.py), brought up once a session.

Without a Docker engine they skip, saying so; in CI (CI=true) they fail instead: there, a missing
engine is a broken machine, not a reason to pass.
"""

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


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        reason = "Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
