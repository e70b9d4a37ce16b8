"""The playbooks pass ansible-lint's production profile (as a reviewer would run it)."""

import os
import subprocess
import sys
from pathlib import Path

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"


def test_ansible_lint_passes_with_the_production_profile():
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-lint"), "--profile", "production", "--offline", "playbooks/"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
