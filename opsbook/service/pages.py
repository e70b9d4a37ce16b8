"""The status pages, rendered on the server: small, self-contained HTML that refreshes itself.

Managers and engineers read them in a browser through the hub's OAuth, with nothing to install and
nothing fetched from elsewhere (inline CSS, no JavaScript, no external assets: the hub may have no
internet). Every value from the database goes through `_e` (HTML escaping): run names, notes and
task names are typed by people and by playbooks. No secret is shown: the ledger holds none (tokens
never reach it; runner events are summaries without stdout), and parameters are shown only on a
run's own page, as the engineer who started it typed them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opsbook.contract.wire import (
    FINISHED_STATES,
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
.b-aborted{background:#56616d}
.run.r-running{border-left-color:#1f6feb}.run.r-paused{border-left-color:#bf8700}
.run.r-handed_off{border-left-color:#8250df}.run.r-orphaned{border-left-color:#d1242f}
.run.r-failed{border-left-color:#d1242f}.run.r-completed{border-left-color:#1a7f37}
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


def index_page(
    active: Sequence[RunCard], recent: Sequence[Run], *, who: str, prefix: str, now: datetime
) -> str:
    """Runs in progress (cards), then the recently finished ones (one line each)."""
    cards = "".join(_card(card, prefix, now) for card in active)
    rows = "".join(
        f'<tr><td><a href="{_e(prefix)}runs/{run.id}">{run.id}</a></td><td>{_e(run.runbook)}</td>'
        f"<td>{_e(run.stack)} {_env(run)}</td><td>{_badge(run.state)}</td><td>{_e(run.owner)}</td>"
        f"<td>{_time(run.finished_at, now)}</td><td>{_e(run.summary)}</td></tr>"
        for run in recent
    )
    body = (
        f"<h2>In progress ({len(active)})</h2>"
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
) -> str:
    """One run: its card, everything people and the service did, and its events page by page
    (`older`: the seq to link "older events" to; `latest`: this is the newest page)."""
    run = card.run
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
        _card(card, prefix, now, link=False)
        + _legend()
        + (f"<h2>Parameters</h2><table>{params}</table>" if params else "")
        + f"<h2>History: who did what ({len(history)})</h2>"
        + _event_rows(history, now, full=True)
        + f"<h2>Events {events[0].seq if events else 0} to {events[-1].seq if events else 0} "
        f"of {run.last_seq}</h2>" + paging + _event_rows(events, now, full=True) + paging
    )
    # Refresh the latest events of a live run; an older page or a finished run does not change.
    refresh = run.state not in FINISHED_STATES and latest
    return _page(
        f"Run {run.id}: {run.runbook} on {run.stack}", body, who, prefix, now, refresh=refresh
    )


def message_page(title: str, message: str, *, who: str, prefix: str) -> str:
    """Errors (403, 404) as a page a person reads, not a traceback."""
    body = f"<h2>{_e(title)}</h2><p>{_e(message)}</p>"
    return _page(title, body, who or "nobody", prefix, datetime.now(UTC), refresh=False)
