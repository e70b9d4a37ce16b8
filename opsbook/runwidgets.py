"""Widgets of the runs ledger in a runbook: a run's record, its approval, the handoff controls.

Like opsbook.widgets, they only show and call the logic (opsbook.runs); their starting values come
from arguments, so an unattended run gets the same record as one clicked through.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from opsbook import runs
from opsbook.contract import wire
from opsbook.errors import OpsbookError
from opsbook.runs import ApprovalStatus, RunSession
from opsbook.runsclient import RunsClient
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
    if run.state is wire.RunState.AWAITING_APPROVAL:
        head += (
            f"<br><b>awaiting approval</b> by {run.approvals_needed} on-call engineer(s) other "
            f"than {html.escape(run.created_by)}: nothing runs until then"
        )
    for line in runs.approvals_line(run).splitlines():
        head += f"<br>{html.escape(line)}"
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


def approval_html(status: ApprovalStatus) -> str:
    """A run's approval while a runbook waits for it: who may approve, the link, the time left;
    then who approved (or rejected) it, when and why."""
    run = status.run
    link = html.escape(status.link, quote=True)
    if not run.approvals_needed:
        return f"run {run.id} ({html.escape(run.environment)}) needs no approval"
    decided = "".join(f"<br>{html.escape(line)}" for line in runs.approvals_line(run).splitlines())
    if not status.waiting:
        color = "#1a7f37" if run.state is wire.RunState.RUNNING else "#cf222e"
        verdict = "approved: it runs" if run.state is wire.RunState.RUNNING else run.state.value
        return f"<b>run {run.id}</b>: <b style='color:{color}'>{verdict}</b>{decided}"
    who = ", ".join(html.escape(name) for name in status.approvers) or (
        "<span style='color:#cf222e'>nobody else is on call now</span>"
    )
    left = (
        ""
        if status.time_left is None
        else f"<br>time left: <b>{runs.time_left_text(status.time_left)}</b>"
    )
    return (
        f"<b>run {run.id}</b> ({html.escape(run.stack)}, {html.escape(run.environment)}) "
        f"<b style='color:#9a6700'>awaits approval</b> "
        f"({len(status.approved_by)} of {run.approvals_needed}): nothing runs until an on-call "
        f"engineer other than {html.escape(run.created_by)} approves it"
        f"<br>who may approve: {who}"
        f"<br>where: <a href='{link}' target='_blank'>{link}</a> (or approvals.ipynb)"
        f"{left}{decided}"
    )


class ApprovalWait:
    """What a runbook shows while it waits for its run's approval (RunSession.wait_for_approval's
    `on_progress`): updated at every poll."""

    def __init__(self) -> None:
        self.widget = widgets.HTML("checking whether the run needs approval ...")
        self.status: ApprovalStatus | None = None

    def update(self, status: ApprovalStatus) -> None:
        self.status = status
        self.widget.value = approval_html(status)


class ApprovalControls:
    """Approve or reject a run awaiting approval, with a reason (approvals.ipynb); a refusal
    shows the service's message (your own run, not on call, an empty reason, expired ...)."""

    def __init__(self, client: RunsClient, run_id: int, reason: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.reason = widgets.Textarea(
            value=reason,
            placeholder="why (it goes into the ledger; a rejection's reason is the run's summary)",
            layout=widgets.Layout(width="60%"),
        )
        self.approve_button = widgets.Button(description="Approve", icon="check")
        self.reject_button = widgets.Button(description="Reject", icon="times")
        self.status = widgets.HTML()
        self.approve_button.on_click(lambda _: self.decide("approve"))
        self.reject_button.on_click(lambda _: self.decide("reject"))
        self.widget = widgets.VBox(
            [self.reason, widgets.HBox([self.approve_button, self.reject_button]), self.status]
        )

    def decide(self, decision: str) -> wire.Run | None:
        try:
            run = runs.decide(self.client, self.run_id, decision, self.reason.value)
        except OpsbookError as refused:
            self.status.value = f"<span style='color:#cf222e'>{html.escape(str(refused))}</span>"
            return None
        self.status.value = f"run {run.id}: <b>{run.state.value}</b><br>" + html.escape(
            runs.approvals_line(run)
        ).replace("\n", "<br>")
        return run
