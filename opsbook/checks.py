"""The checks around a patch run, and the problems that stop it, as lines a person can act on.

Before: `check.yml` (it changes nothing: free space on /, sshd running, the installed package
versions) must pass on every host, and the hosts must pass the health gate, unless the runbook is
told to start on an unhealthy stack (then the rolling patch stops at the first batch whose hosts
fail the gate). After: `check.yml` again, and every host the run patched must have at least every
approved version. The runbooks call these through their run (opsbook.runs.RunSession.pre_checks
and post_checks: the run's hosts, thresholds, recorded errata and certificate); they hold no check
of their own.

Each check play first makes sure of the container's SSH certificate (`before_play`, default
opsbook.sshcert.certificate_step as the settings say): without one the play does not start and
CertificateError says why. A certificate without a run carries the non-production environments;
a production stack's hosts accept only one issued for a running production run of the caller's,
which is why both checks run inside the run, after it is registered and before it is finished
(RunSession passes `before_play=session.certificate_step(settings)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opsbook import errata, health, sshcert
from opsbook.config import Settings
from opsbook.errata import Erratum
from opsbook.errors import OpsbookError
from opsbook.health import Check, GateResult
from opsbook.inventory import Inventory
from opsbook.plays import PlayResult, RunnerEvent, run_play

CHECK_PLAYBOOK = "check.yml"


class ChecksFailed(OpsbookError):
    """Pre-checks or post-checks found problems; the message lists them, one line each."""


def errata_parameters(approved: Iterable[Erratum]) -> dict[str, Any]:
    """The approved errata as a run records them (its `parameters`, set once they are decided,
    after the run started: RunSession.record_errata): their specs, and each one's package,
    version and affected hosts, so whoever finishes the run post-checks the same."""
    approved = list(approved)
    return {
        "approved": [erratum.spec for erratum in approved],
        "errata": [
            {"package": e.package, "version": e.new_version, "hosts": dict(e.hosts_affected)}
            for e in approved
        ],
    }


def recorded_errata(parameters: Mapping[str, Any]) -> list[Erratum]:
    """The approved errata a run recorded (errata_parameters), for its post-checks."""
    return [
        Erratum(
            package=str(item["package"]),
            new_version=str(item["version"]),
            hosts_affected={str(h): str(v) for h, v in dict(item.get("hosts") or {}).items()},
            approved=True,
        )
        for item in parameters.get("errata") or []
    ]


def play_problems(play: PlayResult, hosts: Sequence[str]) -> list[str]:
    """One line per host the play failed on, could not reach, or gave no result for."""
    problems = [
        f"{host}: {result.state} at '{result.failed_task}': {result.message}"
        for host, result in play.hosts.items()
        if result.state in ("failed", "unreachable")
    ]
    problems += [f"{host}: no result" for host in hosts if host not in play.hosts]
    return problems


def _check_play(
    settings: Settings,
    inventory: Inventory,
    hosts: Sequence[str],
    on_event: Callable[[RunnerEvent], None] | None,
    before_play: Callable[[], object] | None,
) -> PlayResult:
    if not hosts:
        raise OpsbookError("no hosts to check; expected the run's or the stack's hosts")
    if before_play is None:
        before_play = sshcert.certificate_step(settings.ssh_certificates, folder=settings.ssh_dir)
    before_play()
    return run_play(
        settings.playbook(CHECK_PLAYBOOK),
        inventory,
        runs_dir=settings.runs_dir,
        hosts=list(hosts),
        on_event=on_event,
    )


@dataclass(frozen=True)
class PreChecks:
    """What the pre-checks found: check.yml's play, the health gate, and what stops the run.

    require_healthy: whether a failed health gate stops the run (the runbook's
    require_healthy_stack); check.yml failing always does.
    """

    stack: str
    hosts: tuple[str, ...]
    play: PlayResult
    health: GateResult
    require_healthy: bool = True

    @property
    def problems(self) -> list[str]:
        found = play_problems(self.play, self.hosts)
        if not self.health.passed and self.require_healthy:
            found.append(self.health.summary())
        return found

    @property
    def passed(self) -> bool:
        return self.play.status == "successful" and not self.problems

    def report(self) -> str:
        """Lines for a person: the gate's answer, and whether the run may start."""
        lines = [self.health.summary()]
        if not self.passed:
            lines.append(f"pre-checks of {self.stack} FAILED:")
            lines += [f"  {problem}" for problem in self.problems] or [
                f"  check.yml: {self.play.status}"
            ]
            return "\n".join(lines)
        if not self.health.passed:
            lines.append(
                "the stack fails its health gate; going on all the same "
                "(require_healthy_stack=False): the rolling patch will stop at the first batch "
                "whose hosts fail the gate"
            )
        lines.append(f"pre-checks passed: {len(self.hosts)} hosts")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """ChecksFailed, naming every problem and the play's record, unless they passed."""
        if not self.passed:
            raise ChecksFailed(
                f"pre-checks of {self.stack} failed; fix this before patching (check.yml: "
                f"{self.play.status}, record: {self.play.private_data_dir}):\n"
                + "\n".join(self.problems)
            )


def pre_checks(
    settings: Settings,
    inventory: Inventory,
    stack: str,
    hosts: Sequence[str],
    checks: Sequence[Check] = health.DEFAULT_CHECKS,
    *,
    require_healthy: bool = True,
    on_event: Callable[[RunnerEvent], None] | None = None,
    before_play: Callable[[], object] | None = None,
) -> PreChecks:
    """Run check.yml on `hosts` and ask the health gate about them (nothing is changed).

    `inventory` is the runbook's one Inventory: the play runs on its file and the gate asks
    Prometheus about its hosts' exporter instances. Prometheus not answering is a failed gate.
    before_play: see the module docstring (None: the certificate step the settings say).
    """
    play = _check_play(settings, inventory, hosts, on_event, before_play)
    gate = health.gate(settings.prometheus_url, inventory.exporter_instances(hosts), checks)
    return PreChecks(stack, tuple(hosts), play, gate, require_healthy)


def post_check_problems(
    play: PlayResult,
    hosts: Sequence[str],
    *,
    approved: Iterable[Erratum] = (),
    patched: Iterable[str] = (),
    check_mode: bool = False,
) -> list[str]:
    """check.yml's failures, then every patched host still older than an approved version.

    A dry run (check_mode) installed nothing, so only check.yml counts then.
    """
    problems = play_problems(play, hosts)
    if not check_mode:
        patched = list(patched)
        approved = list(approved)
        if patched and approved:
            installed = errata.installed_versions(play)
            problems += errata.not_applied(approved, installed, hosts=patched)
    return problems


@dataclass(frozen=True)
class PostChecks:
    """What the post-checks found: check.yml's play and the problems, one line each."""

    stack: str
    play: PlayResult
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def report(self) -> str:
        return f"post-checks: {'; '.join(self.problems) or 'passed'}"

    def raise_if_failed(self) -> None:
        if self.problems:
            raise ChecksFailed(
                f"post-checks of {self.stack} failed (record: {self.play.private_data_dir}):\n"
                + "\n".join(self.problems)
            )


def post_checks(
    settings: Settings,
    inventory: Inventory,
    stack: str,
    hosts: Sequence[str],
    *,
    approved: Iterable[Erratum] = (),
    patched: Iterable[str] = (),
    check_mode: bool = False,
    on_event: Callable[[RunnerEvent], None] | None = None,
    before_play: Callable[[], object] | None = None,
) -> PostChecks:
    """Run check.yml on `hosts`; the `patched` ones must have every `approved` version.

    before_play: see the module docstring (None: the certificate step the settings say).
    """
    play = _check_play(settings, inventory, hosts, on_event, before_play)
    problems = post_check_problems(
        play, hosts, approved=approved, patched=patched, check_mode=check_mode
    )
    return PostChecks(stack, play, tuple(problems))
