"""The status pages, rendered on the server: small, self-contained HTML that refreshes itself.

Managers and engineers read them in a browser through the hub's OAuth, with nothing to install and
nothing fetched from elsewhere (inline CSS, no JavaScript, no external assets: the hub may have no
internet). Every value from the database goes through `_e` (HTML escaping): run names, notes and
task names are typed by people and by playbooks. No secret is shown: the ledger holds none (tokens
never reach it; runner events are summaries without stdout), and parameters are shown only on a
run's own page, as the engineer who started it typed them.

Approvals: the index lists the runs awaiting approval first; a run's page shows what is to be
approved (plan, errata, requester, options, parameters), the decisions so far and the time left,
and, only to someone the rules let decide, a form (approve or reject, with a reason) that posts
back with the `_xsrf` token HubOAuth checks. A page with the form does not refresh itself (the
reason being typed would be lost).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opsbook.contract.wire import (
    FINISHED_STATES,
    ApprovalDecisionKind,
    BatchState,
    Event,
    EventKind,
    HostState,
    Run,
    RunState,
    parse_wire_time,
)

REFRESH_SECONDS = 10

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2329;
background:#f5f6f8}
header{background:#24313f;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:18px;margin:0}header a{color:#fff}header .who{margin-left:auto;opacity:.85}
main{padding:12px 20px;max-width:1400px}h2{font-size:16px;margin:18px 0 8px}
.run{background:#fff;border:1px solid #d5d9de;border-left:6px solid #8a96a3;border-radius:4px;
padding:10px 14px;margin:0 0 12px}
.run h3{margin:0 0 4px;font-size:15px}.run h3 a{color:inherit}
.meta{color:#56616d;margin:2px 0}.handoff{background:#fff6d6;padding:4px 8px;border-radius:3px}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff;
background:#8a96a3;vertical-align:1px}
.prod{background:#b3261e}.env{background:#56616d}
.b-running{background:#1f6feb}.b-paused{background:#8a6d00}.b-handed_off{background:#8250df}
.b-orphaned{background:#d1242f}.b-completed{background:#1a7f37}.b-failed{background:#d1242f}
.b-aborted{background:#56616d}.b-awaiting_approval{background:#9a6700}.b-rejected{background:#a40e26}
.run.r-running{border-left-color:#1f6feb}.run.r-paused{border-left-color:#bf8700}
.run.r-handed_off{border-left-color:#8250df}.run.r-orphaned{border-left-color:#d1242f}
.run.r-failed{border-left-color:#d1242f}.run.r-completed{border-left-color:#1a7f37}
.run.r-awaiting_approval{border-left-color:#9a6700}
.approval{background:#fff8e1;border:1px solid #d4a72c;border-radius:4px;padding:8px 14px;
margin:0 0 12px}.approval h2{margin-top:4px}.approval textarea{width:100%;max-width:700px;
box-sizing:border-box;font:inherit}.approval button{margin:6px 8px 0 0;padding:4px 14px}
.ok{color:#116329}.outcome{background:#dafbe1;padding:4px 8px;border-radius:3px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 6px;vertical-align:top}
th{color:#56616d;font-weight:600;border-bottom:1px solid #d5d9de}
tr+tr td{border-top:1px solid #eef0f2}
.hosts{display:flex;flex-wrap:wrap;gap:3px}
.h{display:inline-block;padding:0 6px;border-radius:3px;font:12px/18px ui-monospace,monospace;
border:1px solid transparent}
.h-pending{background:#eef0f2;color:#56616d}.h-running{background:#ddf4ff;border-color:#1f6feb}
.h-ok{background:#dafbe1;color:#116329}.h-failed{background:#ffebe9;color:#a40e26;border-color:#d1242f}
.h-unreachable{background:#fff1e5;color:#953800;border-color:#bc4c00}
.h-in_doubt{background:#fbefff;color:#6e40c9;border-color:#8250df;border-style:dashed}
.cols{display:grid;grid-template-columns:3fr 2fr;gap:14px;margin-top:6px}
.events{font-size:13px}.events td:first-child{white-space:nowrap;color:#56616d}
.muted{color:#56616d}.failed{color:#a40e26}.legend .h{margin-right:4px}
pre{white-space:pre-wrap;margin:0}
"""


@dataclass(frozen=True)
class ApprovalForm:
    """What the run page needs to offer the approval form to the viewer of the page."""

    refusal: str | None  # why this viewer may not decide (None: show the form)
    xsrf: str = ""  # the _xsrf token the form posts back
    decided: str = ""  # approve or reject: the viewer's decision was just recorded


@dataclass(frozen=True)
class RunCard:
    """A run with what its card shows."""

    run: Run
    last_events: list[Event]
    notes: list[Event]


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _json(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _time(text: str | None, now: datetime) -> str:
    if not text:
        return ""
    moment = parse_wire_time(text)
    shown = f"{moment:%H:%M:%S}" if moment.date() == now.date() else f"{moment:%d %b %H:%M}"
    return f'<time datetime="{_e(text)}">{shown}</time>'


def _lease(run: Run, now: datetime) -> str:
    if run.state is RunState.ORPHANED:
        return f'<span class="failed">lease of {_e(run.owner)} ran out</span>'
    if not run.lease_expires_at:
        return "no lease (not running)"
    left = int((parse_wire_time(run.lease_expires_at) - now).total_seconds())
    when = f"in {left} s" if left >= 0 else f"{-left} s ago"
    return f"lease until {_time(run.lease_expires_at, now)} UTC ({when})"


def _left(text: str | None, now: datetime) -> str:
    """An expiry as the clock time and the time left."""
    if not text:
        return ""
    seconds = int((parse_wire_time(text) - now).total_seconds())
    if seconds <= 0:
        return f"expired at {_time(text, now)} UTC"
    minutes, rest = divmod(seconds, 60)
    left = f"{minutes} min {rest} s" if minutes else f"{rest} s"
    return f"expires at {_time(text, now)} UTC (in {left})"


def _approvals_count(run: Run) -> int:
    return len({a.approver for a in run.approvals if a.decision is ApprovalDecisionKind.APPROVE})


def _badge(state: RunState) -> str:
    return f'<span class="badge b-{_e(state.value)}">{_e(state.value.replace("_", " "))}</span>'


def _env(run: Run) -> str:
    css = "prod" if run.production else "env"
    return f'<span class="badge {css}">{_e(run.environment)}</span>'


def _host(name: str, state: HostState, title: str) -> str:
    return f'<span class="h h-{_e(state.value)}" title="{_e(title)}">{_e(name)}</span>'


def _batches(run: Run, now: datetime) -> str:
    hosts = {host.name: host for host in run.hosts}
    rows = []
    for batch in run.batches:
        chips = []
        for name in batch.hosts:
            host = hosts[name]
            title = f"{name}: {host.state.value}"
            if host.activity and host.state is HostState.RUNNING:
                title += f" - {host.activity}"
            if host.message:
                title += f" - {host.message}"
            chips.append(_host(name, host.state, title))
        who = _e(batch.started_by) if batch.started_by else '<span class="muted">-</span>'
        if batch.finished_by and batch.finished_by != batch.started_by:
            who += f" / {_e(batch.finished_by)}"
        gate = ""
        if batch.gate_passed is True:
            gate = "gate passed"
        elif batch.gate_passed is False:
            gate = f'<span class="failed">gate failed: {_e(batch.gate_message)}</span>'
        state = batch.state.value
        if batch.number == run.current_batch and batch.state is BatchState.RUNNING:
            state = (
                '<b class="failed">stopped: lease ran out</b>'
                if run.state is RunState.ORPHANED
                else "<b>running</b>"
            )
        again = f" (attempt {batch.attempts})" if batch.attempts > 1 else ""
        failures = "".join(
            f'<div class="failed">{_e(hosts[n].name)}: {_e(hosts[n].message)}</div>'
            for n in batch.hosts
            if hosts[n].state in (HostState.FAILED, HostState.UNREACHABLE) and hosts[n].message
        )
        rows.append(
            f"<tr><td>batch {batch.number}</td><td>{state}{again}</td><td>{who}</td>"
            f"<td>{gate}</td><td><div class=hosts>{''.join(chips)}</div>{failures}</td></tr>"
        )
    return (
        "<table><tr><th>batch</th><th>state</th><th>run by</th><th>health gate</th>"
        f"<th>hosts</th></tr>{''.join(rows)}</table>"
    )


def _event_rows(events: Iterable[Event], now: datetime, *, full: bool = False) -> str:
    rows = []
    for event in events:
        what = _e(event.message) if event.message else ""
        if event.kind is EventKind.RUNNER:
            parts = [p for p in (event.host, event.task) if p]
            what = " · ".join(_e(p) for p in parts) + (f" - {what}" if what else "")
        css = ' class="failed"' if "failed" in event.type or "unreachable" in event.type else ""
        extra = f"<td>{event.seq}</td>" if full else ""
        rows.append(
            f"<tr{css}>{extra}<td>{_time(event.at, now)}</td><td>{_e(event.actor)}</td>"
            f"<td>{_e(event.type)}</td><td>{what}</td></tr>"
        )
    if not rows:
        return '<p class="muted">none yet</p>'
    head = "<th>#</th>" if full else ""
    return (
        f'<table class="events"><tr>{head}<th>time (UTC)</th><th>who</th><th>event</th>'
        f"<th>what</th></tr>{''.join(rows)}</table>"
    )


def _card(card: RunCard, prefix: str, now: datetime, *, link: bool = True) -> str:
    run = card.run
    title = f'<a href="{_e(prefix)}runs/{run.id}">Run {run.id}</a>' if link else f"Run {run.id}"
    handoff = ""
    if run.handoff:
        note = f': "{_e(run.handoff.note)}"' if run.handoff.note else ""
        waits = (
            "waiting for them to accept"
            if run.state is RunState.HANDED_OFF
            else "pauses after the batch in flight"
        )
        handoff = (
            f'<p class="handoff">Handed off by {_e(run.handoff.by)} to '
            f"<b>{_e(run.handoff.to)}</b> ({waits}){note}</p>"
        )
    done = sum(1 for b in run.batches if b.state is BatchState.DONE)
    finished = (
        f" · finished {_time(run.finished_at, now)}"
        + (f": {_e(run.summary)}" if run.summary else "")
        if run.state in FINISHED_STATES
        else f" · {_lease(run, now)}"
    )
    notes = (
        "<ul>"
        + "".join(
            f"<li><b>{_e(n.actor)}</b> {_time(n.at, now)}: {_e(n.message)}</li>" for n in card.notes
        )
        + "</ul>"
        if card.notes
        else '<p class="muted">no notes</p>'
    )
    return (
        f'<section class="run r-{_e(run.state.value)}">'
        f"<h3>{title}: {_e(run.runbook)} on {_e(run.stack)} {_env(run)} {_badge(run.state)}</h3>"
        f'<p class="meta">owner <b>{_e(run.owner)}</b>{finished} · started by '
        f"{_e(run.created_by)} {_time(run.created_at, now)} · batches done {done}/"
        f"{len(run.batches)}</p>{handoff}{_batches(run, now)}"
        f'<div class="cols"><div><b>Last events</b>{_event_rows(card.last_events, now)}</div>'
        f"<div><b>Notes</b>{notes}</div></div></section>"
    )


def _legend() -> str:
    return (
        '<p class="legend muted">hosts: '
        + "".join(_host(state.value.replace("_", " "), state, state.value) for state in HostState)
        + "</p>"
    )


def _page(title: str, body: str, who: str, prefix: str, now: datetime, *, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    again = f" · refreshes every {REFRESH_SECONDS} s" if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1><a href="{_e(prefix)}">Opsbook runs</a></h1>'
        f"<span>as of {now:%H:%M:%S} UTC{again}</span>"
        f'<span class="who">signed in as {_e(who)}</span></header><main>{body}</main></body></html>'
    )


def _pending(runs: Sequence[Run], prefix: str, now: datetime) -> str:
    """Runs awaiting approval, one line each, for the top of the index."""
    rows = "".join(
        f'<tr><td><a href="{_e(prefix)}runs/{run.id}">{run.id}</a></td><td>{_e(run.runbook)}</td>'
        f"<td>{_e(run.stack)} {_env(run)}</td><td>{_e(run.created_by)}</td>"
        f"<td>{_count(len(run.batches), 'batch', 'batches')}, "
        f"{_count(len(run.hosts), 'host', 'hosts')}</td>"
        f"<td>{_approvals_count(run)} of {run.approvals_needed}</td>"
        f"<td>{_left(run.approval_expires_at, now)}</td></tr>"
        for run in runs
    )
    return (
        f"<h2>Awaiting approval ({len(runs)})</h2>"
        '<p class="muted">Nothing runs on these stacks until an on-call engineer other than the '
        "requester approves, with a reason, on the run's page.</p>"
        "<table><tr><th>run</th><th>runbook</th><th>stack</th><th>requested by</th><th>plan</th>"
        f"<th>approvals</th><th>request</th></tr>{rows}</table>"
    )


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def index_page(
    active: Sequence[RunCard], recent: Sequence[Run], *, who: str, prefix: str, now: datetime
) -> str:
    """Runs awaiting approval (one line each), runs in progress (cards), then the recently
    finished ones (one line each)."""
    pending = [card.run for card in active if card.run.state is RunState.AWAITING_APPROVAL]
    cards = "".join(_card(card, prefix, now) for card in active)
    rows = "".join(
        f'<tr><td><a href="{_e(prefix)}runs/{run.id}">{run.id}</a></td><td>{_e(run.runbook)}</td>'
        f"<td>{_e(run.stack)} {_env(run)}</td><td>{_badge(run.state)}</td><td>{_e(run.owner)}</td>"
        f"<td>{_time(run.finished_at, now)}</td><td>{_e(run.summary)}</td></tr>"
        for run in recent
    )
    body = (
        (_pending(pending, prefix, now) if pending else "")
        + f"<h2>In progress ({len(active)})</h2>"
        + (cards or '<p class="muted">No run in progress.</p>')
        + _legend()
        + f"<h2>Recently finished ({len(recent)})</h2>"
        + (
            "<table><tr><th>run</th><th>runbook</th><th>stack</th><th>state</th><th>owner</th>"
            f"<th>finished (UTC)</th><th>summary</th></tr>{rows}</table>"
            if rows
            else '<p class="muted">None yet.</p>'
        )
    )
    return _page("Opsbook runs", body, who, prefix, now, refresh=True)


def run_page(
    card: RunCard,
    history: Sequence[Event],
    events: Sequence[Event],
    *,
    older: int | None,
    latest: bool = True,
    who: str,
    prefix: str,
    now: datetime,
    approval: ApprovalForm | None = None,
) -> str:
    """One run: its card, everything people and the service did, and its events page by page
    (`older`: the seq to link "older events" to; `latest`: this is the newest page). For a run
    that needs approval, the approval panel first (`approval`: the viewer's form, if any)."""
    run = card.run
    panel = _approval_panel(run, approval, prefix, now)
    form_shown = bool(
        approval and approval.refusal is None and run.state is RunState.AWAITING_APPROVAL
    )
    params = "".join(
        f"<tr><td>{_e(key)}</td><td><pre>{_e(_json(value))}</pre></td></tr>"
        for key, value in sorted(run.parameters.items())
    )
    paging = (
        f'<p><a href="{_e(prefix)}runs/{run.id}?before={older}">older events</a> · '
        f'<a href="{_e(prefix)}runs/{run.id}">latest</a></p>'
        if older
        else ""
    )
    body = (
        panel
        + _card(card, prefix, now, link=False)
        + _legend()
        + (f"<h2>Parameters</h2><table>{params}</table>" if params else "")
        + f"<h2>History: who did what ({len(history)})</h2>"
        + _event_rows(history, now, full=True)
        + f"<h2>Events {events[0].seq if events else 0} to {events[-1].seq if events else 0} "
        f"of {run.last_seq}</h2>" + paging + _event_rows(events, now, full=True) + paging
    )
    # Refresh the latest events of a live run; an older page or a finished run does not change,
    # and a page with the approval form keeps the reason being typed.
    refresh = run.state not in FINISHED_STATES and latest and not form_shown
    return _page(
        f"Run {run.id}: {run.runbook} on {run.stack}", body, who, prefix, now, refresh=refresh
    )


_DECIDED = {ApprovalDecisionKind.APPROVE: "approved", ApprovalDecisionKind.REJECT: "rejected"}


def _approval_panel(run: Run, form: ApprovalForm | None, prefix: str, now: datetime) -> str:
    """What is to be approved, the decisions so far, and the form for those who may decide."""
    if not run.approvals_needed and not run.approvals:
        return ""
    approved = _approvals_count(run)
    requester = _e(run.created_by)
    if run.approval_requested_by and run.approval_requested_by != run.created_by:
        requester += f" (asked again by {_e(run.approval_requested_by)} after a re-plan)"
    if run.state is RunState.AWAITING_APPROVAL:
        status = (
            f"<b>Awaiting approval</b>: {approved} of {run.approvals_needed} on-call "
            f"engineer(s) other than the requester; nothing runs until then. "
            f"The request {_left(run.approval_expires_at, now)}."
        )
    elif run.state is RunState.REJECTED:
        status = f'<b class="failed">Rejected</b>: {_e(run.summary)}'
    elif run.state in FINISHED_STATES and run.approval_expires_at:
        status = f'<b class="failed">Approval expired</b>: {_e(run.summary)}'
    elif approved >= run.approvals_needed:
        status = '<b class="ok">Approved</b>'
        if run.approval_expires_at and run.state not in FINISHED_STATES:
            status += f"; the approval {_left(run.approval_expires_at, now)} unless a batch starts"
    else:
        status = f"{approved} of {run.approvals_needed} approvals"
    plan = "".join(
        f"<tr><td>batch {batch.number}</td><td>{_e(', '.join(batch.hosts))}</td></tr>"
        for batch in run.batches
    )
    errata: Any = run.parameters.get("approved_errata")
    errata_text = (
        _e(", ".join(map(str, errata)) if isinstance(errata, list) else _json(errata))
        if errata
        else '<span class="muted">none recorded with the request (the runbook records the '
        "errata it applies once the pre-checks passed)</span>"
    )
    options = ", ".join(f"{_e(k)}={_e(_json(v))}" for k, v in run.options.to_dict().items())
    parameters = (
        ", ".join(f"{_e(k)}" for k in sorted(run.parameters))
        if run.parameters
        else '<span class="muted">none</span>'
    )
    decisions = "".join(
        f"<li><b>{_e(a.approver)}</b> {_DECIDED[a.decision]} {_time(a.at, now)} UTC: "
        f"{_e(a.reason)}</li>"
        for a in run.approvals
    )
    outcome = ""
    if form and form.decided:
        word = "approval" if form.decided == "approve" else "rejection"
        outcome = f'<p class="outcome">Your {word} was recorded.</p>'
    action = ""
    if form and run.state is RunState.AWAITING_APPROVAL:
        if form.refusal is None:
            base = f"{_e(prefix)}runs/{run.id}"
            action = (
                f'<form method="post" action="{base}/approve">'
                f'<input type="hidden" name="_xsrf" value="{_e(form.xsrf)}">'
                '<label for="reason"><b>Your reason</b> (goes into the ledger; a rejection\'s is '
                "the run's summary)</label><br>"
                '<textarea id="reason" name="reason" rows="3" required></textarea><br>'
                f'<button type="submit" formaction="{base}/approve">Approve</button>'
                f'<button type="submit" formaction="{base}/reject">Reject</button></form>'
            )
        else:
            action = (
                f'<p class="muted">You cannot approve or reject this run: {_e(form.refusal)}</p>'
            )
    return (
        f'<section class="approval"><h2>Approval</h2>{outcome}<p>{status}</p>'
        f"<table><tr><td>requested by</td><td>{requester} {_time(run.created_at, now)} UTC"
        "</td></tr>"
        f"<tr><td>stack</td><td>{_e(run.stack)} {_env(run)}</td></tr>"
        f"<tr><td>plan</td><td><table>{plan}</table></td></tr>"
        f"<tr><td>errata</td><td>{errata_text}</td></tr>"
        f"<tr><td>options</td><td>{options}</td></tr>"
        f"<tr><td>parameters</td><td>{parameters} (below)</td></tr></table>"
        f"<p><b>Decisions</b></p>"
        + (f"<ul>{decisions}</ul>" if decisions else '<p class="muted">none yet</p>')
        + action
        + "</section>"
    )


def message_page(title: str, message: str, *, who: str, prefix: str, back: str = "") -> str:
    """Errors (403, 404) as a page a person reads, not a traceback; `back`: a link to offer."""
    link = f'<p><a href="{_e(back)}">back to the run</a></p>' if back else ""
    body = f"<h2>{_e(title)}</h2><p>{_e(message)}</p>{link}"
    return _page(title, body, who or "nobody", prefix, datetime.now(UTC), refresh=False)
