"""ipywidgets front ends for runbooks. They show what the opsbook logic does and call only it.

Every widget here takes its starting values from arguments, so a runbook executed unattended
(papermill, Voilà) gets the same result as one clicked through: the values come from the
notebook's parameters, and the next cell reads the widget's value.

Buttons act only while no cell is running (Jupyter queues clicks behind a running cell); to stop
a rolling patch, interrupt the kernel: the play in flight is stopped cleanly.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from opsbook import health
from opsbook.contract import wire
from opsbook.errata import Erratum, choose
from opsbook.errors import InventoryError, OpsbookError
from opsbook.health import Check, GateResult, Series
from opsbook.plays import PlayResult, RunnerEvent
from opsbook.rolling import (
    DONE,
    FAILED,
    IN_DOUBT,
    NOT_STARTED,
    BatchResult,
    RollingPlan,
    RollingResult,
    RunObserver,
)

NO_RESULT = "no result"  # a host the play never ran a task on

_COLORS = {
    NO_RESULT: "#cf222e",
    "ok": "#1a7f37",
    "passed": "#1a7f37",
    DONE: "#1a7f37",
    "changed": "#9a6700",
    "running": "#0969da",
    "patching": "#0969da",
    "health gate": "#0969da",
    FAILED: "#cf222e",
    "unreachable": "#cf222e",
    IN_DOUBT: "#bc4c00",
    NOT_STARTED: "#57606a",
    "waiting": "#57606a",
    "skipped": "#57606a",
}
_TABLE_STYLE = "border-collapse: collapse; font-family: monospace; font-size: 12px"
_CELL_STYLE = "padding: 2px 10px; border-bottom: 1px solid #d0d7de; text-align: left"


def _badge(state: str, label: str | None = None) -> str:
    """The state in its color; `label` is shown instead of the state's name if given."""
    color = _COLORS.get(state, "#24292f")
    return f'<b style="color: {color}">{html.escape(label or state)}</b>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; cells are HTML already (escape text with html.escape)."""
    head = "".join(f'<th style="{_CELL_STYLE}">{html.escape(cell)}</th>' for cell in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL_STYLE}">{cell}</td>' for cell in row) + "</tr>"
        for row in rows
    )
    return f'<table style="{_TABLE_STYLE}"><tr>{head}</tr>{body}</table>'


# The stack picker


def stack_picker(stacks: wire.StackList, value: str | None = None) -> widgets.Dropdown:
    """A dropdown of the stacks as the runs service resolves them (RunsClient.stacks()): each with
    its environment and size; production is marked as the service decides it, so the picker,
    the service and its status page give one answer.

    `value` (the runbook's `stack` parameter) is preselected; an unknown one is refused here,
    not silently replaced by the first stack.
    """
    names = [stack.name for stack in stacks.stacks]
    if not names:
        raise InventoryError(
            "the runs service knows no stacks; expected its inventory to have some"
        )
    if value is not None and value not in names:
        raise InventoryError(f"unknown stack '{value}'; known stacks: {', '.join(names)}")
    options = []
    for stack in stacks.stacks:
        label = f"{stack.name} ({stack.environment}, {len(stack.hosts)} hosts)"
        if stack.production:
            label += " - PRODUCTION: on-call only"
        options.append((label, stack.name))
    return widgets.Dropdown(
        options=options,
        value=value if value is not None else names[0],
        description="Stack:",
        layout=widgets.Layout(width="32em"),
    )


# A play, live


class PlayView:
    """A play's hosts in a table and a progress bar, updated from its events.

    Pass `view.event` as run_play's on_event (or let a RollingView do it). The bar counts task
    results against `expected_tasks` per host if given, else hosts finished against all hosts
    (a host finishes when it fails, is unreachable, or the play ends). A host the play ended
    without running anything on shows as 'no result'.
    """

    def __init__(
        self, hosts: Sequence[str], *, title: str = "", expected_tasks: int | None = None
    ) -> None:
        self.title = widgets.HTML()
        self.progress = widgets.IntProgress(min=0, layout=widgets.Layout(width="32em"))
        self.task = widgets.HTML()
        self.table = widgets.HTML()
        self.widget = widgets.VBox(
            [self.title, widgets.HBox([self.progress, self.task]), self.table]
        )
        self.reset(hosts, title=title, expected_tasks=expected_tasks)

    def reset(
        self, hosts: Sequence[str], *, title: str = "", expected_tasks: int | None = None
    ) -> None:
        """Start over for another play (the next batch)."""
        self.hosts = list(hosts)
        self.expected_tasks = expected_tasks
        self.rows: dict[str, dict[str, Any]] = {
            host: {
                "state": "waiting",
                "task": "",
                "ok": 0,
                "changed": 0,
                "failed": 0,
                "skipped": 0,
                "message": "",
            }
            for host in self.hosts
        }
        self.results = 0
        self.ended = False
        self.title.value = f"<b>{html.escape(title)}</b>" if title else ""
        self.task.value = ""
        self.progress.bar_style = ""
        self._render()

    def event(self, event: RunnerEvent) -> None:
        """Take one ansible-runner event into account."""
        kind = event.get("event")
        data = event.get("event_data") or {}
        host = data.get("host")
        if kind == "playbook_on_task_start":
            self.task.value = f"task: {html.escape(str(data.get('task', '')))}"
        elif kind == "runner_on_start" and host in self.rows:
            row = self.rows[host]
            row["task"] = str(data.get("task", ""))
            if row["state"] == "waiting":
                row["state"] = "running"
        elif (
            kind
            in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped")
            and host in self.rows
        ):
            self._result(self.rows[host], kind, data)
        elif kind == "playbook_on_stats":
            self.ended = True
            for row in self.rows.values():
                if row["state"] == "running":
                    row["state"] = "changed" if row["changed"] else "ok"
                elif row["state"] == "waiting":
                    row["state"] = NO_RESULT
        else:
            return
        self._render()

    def _result(self, row: dict[str, Any], kind: str, data: Mapping[str, Any]) -> None:
        self.results += 1
        result = data.get("res") or {}
        if kind == "runner_on_ok" or (kind == "runner_on_failed" and data.get("ignore_errors")):
            row["ok"] += 1
            row["changed"] += 1 if result.get("changed") else 0
        elif kind == "runner_on_skipped":
            row["skipped"] += 1
        else:
            row["failed"] += 1
            row["state"] = "unreachable" if kind == "runner_on_unreachable" else FAILED
            row["message"] = str(result.get("msg") or "")[:200]

    @property
    def finished_hosts(self) -> int:
        return sum(
            1 for row in self.rows.values() if self.ended or row["state"] in (FAILED, "unreachable")
        )

    def _render(self) -> None:
        if self.expected_tasks:
            self.progress.max = self.expected_tasks * max(len(self.hosts), 1)
            self.progress.value = min(self.results, self.progress.max)
        else:
            self.progress.max = max(len(self.hosts), 1)
            self.progress.value = self.finished_hosts
        self.progress.description = f"{self.progress.value}/{self.progress.max}"
        if self.ended:
            failed = any(
                row["state"] in (FAILED, "unreachable", NO_RESULT) for row in self.rows.values()
            )
            self.progress.bar_style = "danger" if failed else "success"
        rows = [
            [
                html.escape(host),
                _badge(row["state"]),
                html.escape(row["task"]),
                f"ok={row['ok']} changed={row['changed']} failed={row['failed']} "
                f"skipped={row['skipped']}",
                html.escape(row["message"]),
            ]
            for host, row in self.rows.items()
        ]
        self.table.value = _table(["host", "state", "task", "tasks", "message"], rows)


def play_summary_table(result: PlayResult) -> widgets.HTML:
    """A finished play's per-host results (run_play's PlayResult), with its status."""
    rows = [
        [
            html.escape(host),
            _badge(r.state),
            f"ok={r.ok} changed={r.changed} failed={r.failed} unreachable={r.unreachable} "
            f"skipped={r.skipped}",
            html.escape(f"{r.failed_task}: {r.message}" if r.failed_task else ""),
        ]
        for host, r in result.hosts.items()
    ]
    caption = f"play {_badge(result.status)} (record: {html.escape(str(result.private_data_dir))})"
    return widgets.HTML(caption + _table(["host", "state", "tasks", "failure"], rows))


# Errata


class ErrataTable:
    """The stack's errata with a checkbox each, and a "Promote approved" button.

    Ticked at the start: the errata `approve` names (see errata.choose) and those already
    approved (their box is locked). The button, or calling `promote()` from the next cell,
    promotes the ticked errata not yet approved through `on_promote` (RunSession.promote: the
    runs service promotes them into the suite of the run's environment) and shows what the
    service did. With check=True (a dry run) nothing is promoted: it says what would be.
    """

    def __init__(
        self,
        errata: Sequence[Erratum],
        *,
        approve: str | Sequence[str] | None = "all",
        on_promote: Callable[[list[Erratum]], wire.Promotion] | None = None,
        check: bool = False,
    ) -> None:
        self.errata = list(errata)
        self.on_promote = on_promote
        self.check = check
        self.approved = {erratum.spec for erratum in self.errata if erratum.approved}
        wanted = {erratum.spec for erratum in choose(self.errata, approve)}
        self.boxes = {
            erratum.spec: widgets.Checkbox(
                value=erratum.spec in wanted or erratum.spec in self.approved,
                disabled=erratum.spec in self.approved,
                indent=False,
                layout=widgets.Layout(width="2em"),
            )
            for erratum in self.errata
        }
        self.button = widgets.Button(
            description="Promote approved", button_style="warning", icon="check"
        )
        self.button.on_click(lambda _: self._clicked())
        self.status = widgets.HTML()
        self.result: wire.Promotion | None = None
        self.rows = widgets.VBox()
        self.widget = widgets.VBox([self.rows, widgets.HBox([self.button, self.status])])
        self._render()

    def selected(self) -> list[Erratum]:
        """The ticked errata (already approved ones included)."""
        return [erratum for erratum in self.errata if self.boxes[erratum.spec].value]

    def to_promote(self) -> list[Erratum]:
        """The ticked errata that are not approved yet."""
        return [erratum for erratum in self.selected() if erratum.spec not in self.approved]

    def approved_errata(self) -> list[Erratum]:
        """The errata in the environment's suite now: approved before, or promoted here."""
        return [erratum for erratum in self.errata if erratum.spec in self.approved]

    def promote(self) -> wire.Promotion | None:
        """Promote what is ticked and not yet approved; None if nothing was (nothing to do, or
        check mode). A refusal or a failure of the service raises (RunsError, with its reason)
        after the status line says it; nothing counts as approved then."""
        chosen = self.to_promote()
        if not chosen:
            self.status.value = "nothing to promote: every ticked erratum is approved"
            return None
        if self.check:
            specs = ", ".join(erratum.spec for erratum in chosen)
            self.status.value = html.escape(
                f"check mode: would promote {len(chosen)} errata ({specs}); nothing changed"
            )
            return None
        if self.on_promote is None:
            raise OpsbookError("this errata table was made without on_promote; cannot promote")
        self.status.value = f"promoting {len(chosen)} errata ..."
        self.button.disabled = True
        try:
            result = self.on_promote(chosen)
        except OpsbookError as error:
            self.status.value = f"{_badge(FAILED)}: {html.escape(str(error))}"
            raise
        finally:
            self.button.disabled = False
        self.result = result
        done = {f"{e.package}={e.version}" for e in (*result.promoted, *result.unchanged)}
        self.approved |= {erratum.spec for erratum in chosen if erratum.spec in done}
        self.status.value = html.escape(
            f"promoted {len(result.promoted)} errata to {result.environment} (promotion "
            f"{result.id}"
            + (f", run {result.run_id}" if result.run_id else "")
            + ")"
            + (f"; {len(result.unchanged)} were there already" if result.unchanged else "")
        )
        self._render()
        return result

    def _clicked(self) -> None:
        try:
            self.promote()
        except OpsbookError as error:
            self.status.value = f"{_badge(FAILED)}: {html.escape(str(error))}"

    def _render(self) -> None:
        lines: list[widgets.Widget] = []
        for erratum in self.errata:
            box = self.boxes[erratum.spec]
            approved = erratum.spec in self.approved
            box.disabled = approved
            box.value = box.value or approved
            state = _badge("passed", "approved") if approved else _badge("waiting", "in incoming")
            hosts = ", ".join(f"{h} ({v})" for h, v in erratum.hosts_affected.items())
            kind = " ".join(
                part
                for part in (
                    erratum.severity,
                    erratum.advisory,
                    "(reboot)" if erratum.needs_reboot else "",
                )
                if part
            )
            text = (
                '<span style="font-family: monospace; font-size: 12px">'
                f"<b>{html.escape(erratum.package)}</b> {html.escape(erratum.new_version)} "
                f"&nbsp; {state} &nbsp; {html.escape(kind)} &nbsp; for {html.escape(hosts)} "
                f"&nbsp; <i>{html.escape(erratum.description)}</i></span>"
            )
            lines.append(widgets.HBox([box, widgets.HTML(text)]))
        if not self.errata:
            lines = [widgets.HTML("no errata: every host of the stack is up to date")]
        self.rows.children = lines
        self.button.disabled = not self.errata or self.on_promote is None


# The rolling patch, live


class RollingView(RunObserver):
    """A rolling patch as it goes: each batch's state, the play in flight, the last gate.

    It is a RunObserver: pass it to rolling_patch(observer=view), or to RunSession.patch as
    `forward`. Batches before `start_batch` (run earlier, by whoever held the run) show as such.
    """

    def __init__(self, plan: RollingPlan, *, check: bool = False, start_batch: int = 1) -> None:
        self.plan = plan
        numbers = range(1, len(plan.batches) + 1)
        self.states = {n: DONE if n < start_batch else NOT_STARTED for n in numbers}
        self.details = {
            n: "run earlier: see the run's record" if n < start_batch else "" for n in numbers
        }
        mode = " (check mode: a dry run)" if check else ""
        self.header = widgets.HTML(
            f"<b>Rolling patch of {html.escape(plan.stack)} "
            f"({html.escape(plan.environment)}){html.escape(mode)}</b>"
        )
        self.progress = widgets.IntProgress(
            min=0, max=len(plan.batches), description="batches", layout=widgets.Layout(width="32em")
        )
        self.progress.value = start_batch - 1
        self.batches = widgets.HTML()
        self.play = PlayView([], title="")
        self.gate = widgets.HTML()
        self.summary = widgets.HTML()
        self.widget = widgets.VBox(
            [self.header, self.progress, self.batches, self.play.widget, self.gate, self.summary]
        )
        self._render()

    def batch_starting(self, number: int, hosts: Sequence[str]) -> None:
        self.states[number] = "patching"
        self.details[number] = ""
        self.play.reset(hosts, title=f"batch {number} of {len(self.plan.batches)}: play")
        self.gate.value = ""
        self._render()

    def event(self, event: RunnerEvent) -> None:
        self.play.event(event)

    def gate_result(self, number: int, gate_result: GateResult) -> None:
        self.states[number] = "health gate"
        self.details[number] = "passed" if gate_result.passed else "waiting for the hosts ..."
        self.gate.value = gate_html(gate_result)
        self._render()

    def batch_finished(self, number: int, batch_result: BatchResult) -> None:
        states = {batch_result.outcome(host) for host in batch_result.hosts}
        worst = next(s for s in (FAILED, IN_DOUBT, NOT_STARTED, DONE) if s in states)
        self.states[number] = worst
        details = batch_result.note or (
            f"{batch_result.gate_attempts} gate answer(s)" if batch_result.gate else ""
        )
        if batch_result.silence_id:  # set and expired by the runs service
            details = f"{details} (silence {batch_result.silence_id})".strip()
        self.details[number] = details
        self.progress.value = sum(1 for state in self.states.values() if state == DONE)
        self._render()

    def finished(self, rolling_result: RollingResult) -> None:
        self.progress.bar_style = "success" if rolling_result.complete else "danger"
        self.summary.value = f"<pre>{html.escape(rolling_result.summary())}</pre>"

    def _render(self) -> None:
        rows = [
            [
                str(number),
                html.escape(", ".join(batch)),
                _badge(self.states[number]),
                html.escape(self.details[number]),
            ]
            for number, batch in enumerate(self.plan.batches, start=1)
        ]
        self.batches.value = _table(["batch", "hosts", "state", "detail"], rows)


# Health


def gate_html(result: GateResult) -> str:
    """A gate's answer as an HTML table: one row per host, one column per check."""
    checks = list(dict.fromkeys(r.check for r in result.results))
    by_host: dict[str, dict[str, Any]] = {}
    for r in result.results:
        cell = f"{r.value:.3g}" if r.value is not None else "no value"
        mark = "passed" if r.passed else FAILED
        title = html.escape(r.message, quote=True)
        by_host.setdefault(r.host, {})[r.check] = (
            f'<span title="{title}" style="color: {_COLORS[mark]}">{cell}</span>'
        )
    rows = [
        [html.escape(host), *(cells.get(c, "") for c in checks)] for host, cells in by_host.items()
    ]
    verdict = _badge("passed") if result.passed else _badge(FAILED)
    failures = "".join(
        f"<br>{html.escape(f'{r.host}: {r.check}: {r.message}')}" for r in result.failures
    )
    return f"health gate {verdict}{failures}" + _table(["host", *checks], rows)


def metric_figure(
    series: Sequence[Series],
    *,
    title: str,
    ylabel: str = "",
    threshold: float | None = None,
    names: Mapping[str, str] | None = None,
) -> Figure:
    """A line per series over time; `names` renames series labels (instance -> host)."""
    figure = Figure(figsize=(8, 2.8), layout="constrained")
    axes = figure.subplots()
    for one in series:
        times = [datetime.fromtimestamp(t, UTC) for t, _ in one.points]
        axes.plot(times, [v for _, v in one.points], label=(names or {}).get(one.label, one.label))
    if threshold is not None:
        axes.axhline(threshold, color="#cf222e", linestyle="--", linewidth=1, label="gate limit")
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.set_xlabel("UTC")
    axes.grid(alpha=0.3)
    if series or threshold is not None:
        axes.legend(loc="upper left", fontsize="small", ncols=4)
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes (for an Image widget or IPython.display.Image)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()


def check_history(
    prometheus_url: str,
    check: Check,
    instances_by_host: Mapping[str, str],
    *,
    hours: float = 1.0,
    end: datetime | None = None,
    step: str = "60s",
) -> Figure:
    """A gate check's values over the last `hours` for these hosts, with the gate's limit.

    Raises HealthError if Prometheus cannot answer (health.query_range).
    """
    end = end or datetime.now(UTC)
    series = health.query_range(
        prometheus_url,
        check.promql(list(instances_by_host.values())),
        end - timedelta(hours=hours),
        end,
        step,
    )
    names = {instance: host for host, instance in instances_by_host.items()}
    return metric_figure(
        series,
        title=f"{check.name}: {check.description} (last {hours:g} h)",
        threshold=check.threshold,
        names=names,
    )


class HealthView:
    """A health gate's table for some hosts and the history of some of its checks.

    `refresh()` (or the Refresh button, when no cell runs) asks Prometheus again. Prometheus not
    answering shows as a failed gate and a message in place of each plot, never as an error.
    The plots are Image widgets, not an Output widget: papermill's client answers an Output
    widget's messages on the kernel's shell channel while it waits there for the cell's reply,
    and with jupyter_client 8.10 / pyzmq 27 that wait then sometimes sleeps through the reply.
    """

    def __init__(
        self,
        prometheus_url: str,
        instances_by_host: Mapping[str, str],
        *,
        checks: Sequence[Check] = health.DEFAULT_CHECKS,
        plot: Sequence[Check] = (health.LOAD, health.ROOT_DISK),
        hours: float = 1.0,
        title: str = "",
    ) -> None:
        self.prometheus_url = prometheus_url
        self.instances = dict(instances_by_host)
        self.checks = tuple(checks)
        self.plot_checks = tuple(plot)
        self.hours = hours
        self.result: GateResult | None = None
        self.title = widgets.HTML(f"<h3>{html.escape(title)}</h3>" if title else "")
        self.gate = widgets.HTML()
        self.plots = widgets.VBox()
        self.button = widgets.Button(description="Refresh", icon="refresh")
        self.button.on_click(lambda _: self.refresh())
        self.widget = widgets.VBox([self.title, self.button, self.gate, self.plots])
        self.refresh()

    def refresh(self) -> GateResult:
        """Ask the gate and redraw the plots; returns the gate's answer."""
        self.result = health.gate(self.prometheus_url, self.instances, self.checks)
        self.gate.value = gate_html(self.result)
        plots: list[widgets.Widget] = []
        for check in self.plot_checks:
            try:
                figure = check_history(self.prometheus_url, check, self.instances, hours=self.hours)
            except OpsbookError as error:
                plots.append(widgets.HTML(f"{_badge(FAILED)}: {html.escape(str(error))}"))
            else:
                plots.append(widgets.Image(value=png(figure), format="png"))
        self.plots.children = plots
        return self.result
