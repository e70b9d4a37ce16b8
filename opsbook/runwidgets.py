"""Widgets of the runs ledger in a runbook: a run's record, and the handoff controls.

Like opsbook.widgets, they only show and call the logic (opsbook.runs); their starting values come
from arguments, so an unattended run gets the same record as one clicked through.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from opsbook.contract import wire
from opsbook.errors import OpsbookError
from opsbook.runs import RunSession
from opsbook.widgets import _badge, _table

STATUS_PAGE = "/services/runs/runs/{id}"

_HOST_BADGES = {
    wire.HostState.OK: "done",
    wire.HostState.FAILED: "failed",
    wire.HostState.UNREACHABLE: "unreachable",
    wire.HostState.IN_DOUBT: "in doubt",
    wire.HostState.RUNNING: "running",
    wire.HostState.PENDING: "waiting",
}


def run_html(run: wire.Run) -> str:
    """A run's state, owner, batches (who ran each) and hosts, as the status page has them."""
    link = STATUS_PAGE.format(id=run.id)
    head = (
        f"<b>run {run.id}</b>: {html.escape(run.runbook)} on {html.escape(run.stack)} "
        f"({html.escape(run.environment)}), <b>{run.state.value}</b>, owner "
        f"{html.escape(run.owner)} &middot; <a href='{link}' target='_blank'>status page</a>"
    )
    if run.handoff is not None:
        head += (
            f"<br>handed to <b>{html.escape(run.handoff.to)}</b> by "
            f"{html.escape(run.handoff.by)}: {html.escape(run.handoff.note)}"
        )
    states = run.host_states()
    rows = [
        [
            f"batch {batch.number}",
            batch.state.value,
            html.escape(batch.started_by or "-"),
            "-" if batch.gate_passed is None else ("passed" if batch.gate_passed else "FAILED"),
            " ".join(_badge(_HOST_BADGES[states[host]], html.escape(host)) for host in batch.hosts),
        ]
        for batch in run.batches
    ]
    return head + _table(["batch", "state", "run by", "health gate", "hosts"], rows)


def run_view(run: wire.Run) -> widgets.HTML:
    return widgets.HTML(run_html(run))


class HandoffControls:
    """Hand the run to an on-call engineer: the batch in flight finishes, then it pauses.

    Usable while the patch runs in the background (RunSession.patch), before the cell that
    waits for it; from another kernel at any time: handoff.ipynb.
    """

    def __init__(self, session: RunSession, oncall: list[str], me: str = "") -> None:
        self.session = session
        choices = [name for name in oncall if name != me]
        self.to = widgets.Dropdown(options=choices, description="hand to", value=None)
        self.note = widgets.Textarea(
            placeholder="what the next engineer must know (state, doubts, where you stopped)",
            layout=widgets.Layout(width="60%"),
        )
        self.button = widgets.Button(description="Hand off after this batch", icon="share")
        self.status = widgets.HTML()
        self.button.on_click(lambda _: self.hand_off())
        self.widget = widgets.VBox([widgets.HBox([self.to, self.button]), self.note, self.status])

    def hand_off(self) -> None:
        if not self.to.value:
            self.status.value = "choose the on-call engineer to hand the run to"
            return
        try:
            run = self.session.handoff(self.to.value, self.note.value)
        except OpsbookError as refused:
            self.status.value = f"<span style='color:#cf222e'>{html.escape(str(refused))}</span>"
            return
        self.status.value = (
            f"handed to <b>{html.escape(self.to.value)}</b>: run {run.id} pauses at the end of "
            "the batch in flight, and waits for them to accept it"
        )
