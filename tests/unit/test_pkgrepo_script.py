"""The package repository's script (images/fleet/repo/opsbook-repo): its suites per environment,
the migration of a volume from the time of the single `stable` suite, and its refusals. What needs
apt-ftparchive and gpg (publishing, signing) is proven on the real image by the e2e tests."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "images" / "fleet" / "repo" / "opsbook-repo"
INDEX = (
    "opsbook-demo-agent\t2.3.0\tweb,db\tno\tyes\topsbook-demo-agent_2.3.0_all.deb\n"
    "opsbook-demo-agent\t2.4.0\tweb,db\tno\tno\topsbook-demo-agent_2.4.0_all.deb\n"
    "opsbook-demo-base\t1.0\tweb,db\tyes\tyes\topsbook-demo-base_1.0_all.deb\n"
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, its state in tmp_path (no /srv/repo, no root)."""
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / "index.tsv").write_text(INDEX)
    environment = {
        "OPSBOOK_REPO_ROOT": str(tmp_path / "srv"),
        "OPSBOOK_REPO_DEBS": str(tmp_path / "debs"),
        "OPSBOOK_REPO_SUITES_FILE": str(tmp_path / "suites"),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPSBOOK_REPO_SUITES", raising=False)
    loader = importlib.machinery.SourceFileLoader("opsbook_repo", str(SCRIPT))
    spec = importlib.util.spec_from_loader("opsbook_repo", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_suites_come_from_the_setting_or_the_file_the_start_script_writes(
    repo: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert repo.environment_suites("staging production") == ("staging", "production")
    assert repo.environment_suites("staging, production staging") == ("staging", "production")
    for bad in ("", "incoming staging", "stable", "Staging", "qa/1"):
        with pytest.raises(repo.RepoError, match="OPSBOOK_REPO_SUITES: expected"):
            repo.environment_suites(bad)
    with pytest.raises(repo.RepoError, match="got ''"):  # unset, no file: fail closed
        repo.environment_suites()
    (tmp_path / "suites").write_text("staging production\n")  # an SSH session's view
    assert repo.environment_suites() == ("staging", "production")
    monkeypatch.setenv("OPSBOOK_REPO_SUITES", "qa")  # the container's own environment wins
    assert repo.environment_suites() == ("qa",)


def test_each_environment_starts_from_the_baseline(repo: ModuleType) -> None:
    repo.prepare_suites(("staging", "production"))
    for suite in ("staging", "production"):
        assert repo.read_suite(suite) == {
            ("opsbook-demo-agent", "2.3.0"),
            ("opsbook-demo-base", "1.0"),
        }


def test_a_volume_with_stable_migrates_each_environment_from_stable_s_list(
    repo: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.STATE.mkdir(parents=True)
    legacy = repo.STATE / "stable.list"
    legacy.write_text("# approved\nopsbook-demo-agent 2.4.0\nopsbook-demo-base 1.0\n")
    repo.write_suite("production", [("opsbook-demo-base", "1.0")])  # already has its own: kept
    repo.prepare_suites(("staging", "production"))
    assert repo.read_suite("staging") == {
        ("opsbook-demo-agent", "2.4.0"),
        ("opsbook-demo-base", "1.0"),
    }
    assert repo.read_suite("production") == {("opsbook-demo-base", "1.0")}
    assert not legacy.exists() and (repo.STATE / "stable.list.migrated").exists()
    log = capsys.readouterr().err
    assert "staging starts from stable's approved versions (migrated" in log
    assert "the suite stable is no longer published" in log
    repo.prepare_suites(("staging", "production"))  # the next start: nothing more to migrate
    assert "migrated" not in capsys.readouterr().err


def test_published_folders_are_told_apart_by_suite(repo: ModuleType) -> None:
    assert repo.published_suite("pre-prod") == "pre-prod"
    assert repo.published_suite(".pre-prod-1764417600000000000") == "pre-prod"
    assert repo.published_suite(".stable.link") == "stable"
    assert repo.published_suite(".stable-17") == "stable"


def run_script(*args: str, tmp_path: Path, suites: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "OPSBOOK_REPO_ROOT": str(tmp_path / "srv"),
        "OPSBOOK_REPO_DEBS": str(tmp_path / "debs"),
        "OPSBOOK_REPO_SUITES": suites,
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_promote_names_the_suite_and_refuses_others(repo: ModuleType, tmp_path: Path) -> None:
    repo.prepare_suites(("staging", "production"))
    into_incoming = run_script(
        "promote",
        "--suite",
        "incoming",
        "--dry-run",
        "a",
        "1",
        tmp_path=tmp_path,
        suites="staging production",
    )
    assert into_incoming.returncode == 2
    assert "no suite 'incoming' here; the suites are staging, production" in into_incoming.stderr
    assert "incoming takes no promotion" in into_incoming.stderr
    without = run_script("promote", "a", "1", tmp_path=tmp_path, suites="staging production")
    assert without.returncode == 2 and "--suite" in without.stderr
    unset = run_script("list", tmp_path=tmp_path, suites="")
    assert unset.returncode == 2 and "OPSBOOK_REPO_SUITES: expected" in unset.stderr
