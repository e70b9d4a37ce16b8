"""Errata: package versions published to the team's repository that a stack has not installed yet.

The package repository (OPSBOOK_PACKAGE_REPO_URL) is a Debian repository with a suite per
environment besides ``incoming``:
- ``incoming``: every version published, i.e. the errata waiting for review;
- ``<environment>`` (``staging``, ``production`` ...): the versions approved for that
  environment; its hosts update from this suite only.
Approving an erratum for a stack is promoting its version from incoming into the suite of the
stack's environment. That is an action of the runs service, inside the run (RunSession.promote):
it checks who may change which suite (production: only inside an approved production run) and
performs the promotion on the repository host itself; no engineer's container can.

An erratum concerns a stack when a version in incoming is newer than what one of the stack's
hosts has installed. What each host has installed comes from the package_facts task of
check.yml (`installed_versions`). Packages a stack does not have installed do not concern it.

The indexes are read over plain HTTP without checking the repository's signature: this module only
lists and compares versions for people to review; hosts' apt verifies what it installs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from opsbook.debversion import DebianVersion, version_key
from opsbook.errors import ErrataError, VersionError
from opsbook.inventory import natural_key
from opsbook.plays import PlayResult

INCOMING = "incoming"

_FIELD = re.compile(r"^(?P<name>[^\s:][^:]*):[ \t]*(?P<value>.*)$")


@dataclass(frozen=True)
class Erratum:
    """One package version waiting for some of a stack's hosts.

    hosts_affected: each host of the stack with an older version installed, and that version.
    approved: the version is in the suite of the stack's environment, so the next rolling patch
      installs it.
    description: the index's one-line Description. severity, advisory, needs_reboot: from the
      index's Opsbook-Severity, Opsbook-Advisory and Opsbook-Reboot fields, where the
      repository has them (the demo's does); blank or False otherwise.
    """

    package: str
    new_version: str
    hosts_affected: dict[str, str]
    approved: bool
    description: str = field(default="", compare=False)
    severity: str = field(default="", compare=False)
    advisory: str = field(default="", compare=False)
    needs_reboot: bool = field(default=False, compare=False)

    @property
    def spec(self) -> str:
        """'package=version', as the runbook's `approve` parameter names errata."""
        return f"{self.package}={self.new_version}"


def index_url(repo_url: str, suite: str, *, component: str = "main", arch: str = "amd64") -> str:
    """Where a suite's index is: {repo}/dists/{suite}/{component}/binary-{arch}/Packages."""
    return f"{repo_url.rstrip('/')}/dists/{suite}/{component}/binary-{arch}/Packages"


def parse_packages(text: str, *, source: str = "Packages") -> list[dict[str, str]]:
    """The stanzas of a Debian Packages index (RFC822-style), each as field -> value.

    Continuation lines (starting with a space or tab) are joined to their field with newlines.
    Every stanza must have a Package and a valid Version; ErrataError names the line otherwise.
    """
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_field: str | None = None
    start_line = 1
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if not line.strip():
            if current:
                stanzas.append(_checked_stanza(current, source, start_line))
            current, last_field, start_line = {}, None, number + 1
            continue
        if line[0] in " \t":
            if last_field is None:
                raise ErrataError(f"{source} line {number}: continuation line without a field")
            current[last_field] += "\n" + line.strip()
            continue
        match = _FIELD.match(line)
        if match is None:
            raise ErrataError(f"{source} line {number}: expected 'Field: value', got {line!r}")
        last_field = match["name"]
        current[last_field] = match["value"].strip()
    return stanzas


def _checked_stanza(stanza: dict[str, str], source: str, line: int) -> dict[str, str]:
    missing = [name for name in ("Package", "Version") if not stanza.get(name)]
    if missing:
        raise ErrataError(
            f"{source}: the entry at line {line} has no {' or '.join(missing)}; "
            "expected every entry to name its Package and Version"
        )
    try:
        DebianVersion.parse(stanza["Version"])
    except VersionError as error:
        raise ErrataError(f"{source}: the entry at line {line}: {error}") from error
    return stanza


def read_packages(
    repo_url: str, suite: str, *, timeout: float = 5.0, arch: str = "amd64"
) -> list[dict[str, str]]:
    """The stanzas of a suite's Packages index, fetched over HTTP(S)."""
    if not repo_url.startswith(("http://", "https://")):
        raise ErrataError(f"package repository URL {repo_url!r} is invalid; expected http(s)://")
    url = index_url(repo_url, suite, arch=arch)
    try:
        response = requests.get(url, timeout=timeout)
    except requests.Timeout as error:
        raise ErrataError(f"package repository did not answer {url} in {timeout:g} s") from error
    except requests.RequestException as error:
        raise ErrataError(f"package repository is unreachable at {url}: {error}") from error
    if response.status_code == 404:
        raise ErrataError(
            f"no suite '{suite}' at {repo_url} (HTTP 404 for {url}); expected a Debian "
            f"repository with the suite {INCOMING} and one per environment (is '{suite}' "
            "among the repository's OPSBOOK_REPO_SUITES?)"
        )
    if not response.ok:
        raise ErrataError(f"package repository answered HTTP {response.status_code} for {url}")
    response.encoding = response.encoding or "utf-8"
    return parse_packages(response.text, source=url)


def read_index(
    repo_url: str, suite: str, *, timeout: float = 5.0, arch: str = "amd64"
) -> dict[str, list[str]]:
    """Every version of every package in a suite: package -> versions, oldest first (dpkg order)."""
    versions: dict[str, list[str]] = {}
    for stanza in read_packages(repo_url, suite, timeout=timeout, arch=arch):
        versions.setdefault(stanza["Package"], []).append(stanza["Version"])
    return {package: _unique_sorted(found) for package, found in sorted(versions.items())}


def _unique_sorted(versions: Iterable[str]) -> list[str]:
    """Versions oldest first, each once (dpkg-equal spellings such as 1.0 and 1.0-0 count once)."""
    unique: dict[DebianVersion, str] = {}
    for version in versions:
        unique.setdefault(DebianVersion.parse(version), version)
    return [unique[key] for key in sorted(unique)]


def installed_versions(
    play: PlayResult | Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, str]]:
    """host -> package -> installed version, from a play's package_facts results.

    Reads `ansible_facts.packages` from the runner_on_ok events (check.yml gathers them with
    ansible.builtin.package_facts; a set_fact of the same shape is read too). Where a package
    is installed more than once (several architectures), the highest version counts. Hosts with
    no such event (unreachable, failed first) are absent: callers must not take that for "nothing
    installed".
    """
    events = play.events if isinstance(play, PlayResult) else play
    found: dict[str, dict[str, str]] = {}
    for event in events:
        if event.get("event") != "runner_on_ok":
            continue
        data = event.get("event_data") or {}
        facts = (data.get("res") or {}).get("ansible_facts") or {}
        packages = facts.get("packages")
        host = data.get("host")
        if not host or not isinstance(packages, Mapping):
            continue
        versions = found.setdefault(host, {})
        for name, entries in packages.items():
            candidates = [
                str(entry["version"])
                for entry in entries or []
                if isinstance(entry, Mapping) and entry.get("version")
            ]
            if candidates:
                versions[name] = max(candidates, key=version_key)
    return {host: dict(sorted(found[host].items())) for host in sorted(found, key=natural_key)}


def list_errata(
    repo_url: str,
    installed: Mapping[str, Mapping[str, str]],
    hosts: Sequence[str],
    *,
    environment: str,
    timeout: float = 5.0,
) -> list[Erratum]:
    """The errata for these hosts (a stack's): every incoming version newer than one installed.

    One Erratum per package version, in package then version order; several versions of a
    package newer than a host's are each an erratum (approving the newest is enough for apt).
    `approved`: in the suite of `environment` (the stack's, as the runs service resolves it).
    Every host must be in `installed`: a host whose packages are unknown could need anything, so
    that is an ErrataError rather than an empty answer.
    """
    if not environment.strip() or environment == INCOMING:
        raise ErrataError(
            f"environment: expected the stack's environment (its suite), got {environment!r}"
        )
    if not hosts:
        raise ErrataError("no hosts given; expected the stack's hosts")
    unknown = [host for host in hosts if host not in installed]
    if unknown:
        raise ErrataError(
            f"installed packages of {', '.join(unknown)} are not known (did check.yml reach "
            "them?); expected package facts for every host of the stack"
        )
    published: dict[tuple[str, DebianVersion], dict[str, str]] = {}
    for stanza in read_packages(repo_url, INCOMING, timeout=timeout):
        published.setdefault((stanza["Package"], DebianVersion.parse(stanza["Version"])), stanza)
    approved = {
        (stanza["Package"], DebianVersion.parse(stanza["Version"]))
        for stanza in read_packages(repo_url, environment, timeout=timeout)
    }
    errata = []
    for (package, version), stanza in sorted(published.items(), key=lambda item: item[0]):
        affected = {
            host: installed[host][package]
            for host in hosts
            if package in installed[host] and version_key(installed[host][package]) < version
        }
        if affected:
            errata.append(
                Erratum(
                    package=package,
                    new_version=stanza["Version"],
                    hosts_affected=affected,
                    approved=(package, version) in approved,
                    description=stanza.get("Description", "").split("\n")[0],
                    severity=stanza.get("Opsbook-Severity", ""),
                    advisory=stanza.get("Opsbook-Advisory", ""),
                    needs_reboot=stanza.get("Opsbook-Reboot", "").lower() == "yes",
                )
            )
    return errata


def choose(errata: Sequence[Erratum], approve: str | Iterable[str] | None) -> list[Erratum]:
    """The errata an `approve` parameter names: "all", "none"/None/[], or "package=version"s.

    A list may also be given as one comma-separated string. Naming an erratum that is not in
    the list (a typo, or one already installed everywhere) is an ErrataError: approving something
    other than what was meant must not pass silently.
    """
    if approve is None:
        return []
    if isinstance(approve, str):
        word = approve.strip().lower()
        if word == "all":
            return list(errata)
        if word in ("", "none"):
            return []
        wanted = [spec.strip() for spec in approve.split(",") if spec.strip()]
    else:
        wanted = [str(spec).strip() for spec in approve]
    by_spec = {erratum.spec: erratum for erratum in errata}
    malformed = [spec for spec in wanted if spec.count("=") != 1]
    if malformed:
        raise ErrataError(
            f"cannot read {', '.join(map(repr, malformed))}; expected 'package=version', "
            "'all' or 'none'"
        )
    unknown = [spec for spec in wanted if spec not in by_spec]
    if unknown:
        known = ", ".join(by_spec) or "none"
        raise ErrataError(
            f"{', '.join(map(repr, unknown))} not among this stack's errata; expected some of: "
            f"{known}"
        )
    return [erratum for erratum in errata if erratum.spec in wanted]


def not_applied(
    errata: Iterable[Erratum],
    installed: Mapping[str, Mapping[str, str]],
    *,
    hosts: Iterable[str] | None = None,
) -> list[str]:
    """What is still missing after a patch: one line per host whose version is still older.

    Only the errata's affected hosts are looked at, and of those only `hosts` if given (the hosts
    the rolling patch did). A host absent from `installed` (the post-check did not reach it) is
    reported too.
    """
    only = None if hosts is None else set(hosts)
    missing = []
    for erratum in errata:
        wanted = DebianVersion.parse(erratum.new_version)
        for host in erratum.hosts_affected:
            if only is not None and host not in only:
                continue
            now = installed.get(host, {}).get(erratum.package)
            if host not in installed:
                missing.append(f"{host}: {erratum.package}: installed version unknown")
            elif now is None or DebianVersion.parse(now) < wanted:
                missing.append(
                    f"{host}: {erratum.package} is {now or 'not installed'}, "
                    f"expected {erratum.new_version} or newer"
                )
    return missing
