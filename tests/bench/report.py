"""docs/benchmarks.md from a run's results (build/bench-stack/results.json)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .common import QUIET_BUSY, QUIET_WINDOW, Figure, Row

NOTES = Path(__file__).with_name("notes.md")
# Whole runs shown side by side on the page (this one last): a target must hold in each rerun.
SHOWN_RUNS = 5


def number(value: float, unit: str) -> str:
    if unit in ("events/s", "count"):
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
    if unit in ("ms", "MiB", "MB"):
        return f"{value:.1f}" if value < 10 else f"{value:.0f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def with_unit(value: float, unit: str) -> str:
    return f"{number(value, unit)} {unit}" if unit != "x" else f"{number(value, unit)} x"


def row_line(row: Row) -> str:
    p95 = with_unit(row.p95, row.unit) if row.p95 is not None else "-"
    result = f"**{row.verdict}**" if row.verdict else ""
    cells = [
        row.what,
        with_unit(row.median, row.unit),
        p95,
        str(len(row.samples)),
        row.target,
        result,
        row.note,
    ]
    return "| " + " | ".join(cells) + " |"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| measure | median | p95 | n | target | result | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    return lines + [row_line(row) for row in rows]


def conditions(figure: Figure) -> str:
    before, after = figure.context.get("before"), figure.context.get("after")
    if not before:
        return ""
    text = f"1-minute load {before['load1']:.2f} at the start"
    if after:
        text += f", {after['load1']:.2f} at the end"
    busy = before.get("test_stack_running") or (after or {}).get("test_stack_running")
    text += "; the test suite's stack was running" if busy else "; no test stack running"
    return f"*Conditions: {text}; measured in {figure.seconds:.0f} s.*"


def spawn_details(figure: Figure) -> list[str]:
    lines = []
    hub, floor = figure.context.get("hub_phases") or [], figure.context.get("floor_phases") or []
    labels = (
        ("asked_to_created", "asked → container created"),
        ("created_to_started", "created → started"),
        ("started_to_listening", "started → Jupyter server listening (its log)"),
        ("listening_to_answered", "listening → first 200 to the poller"),
    )

    def cell(profiles: list[dict[str, float]], key: str) -> str:
        values = [p[key] for p in profiles if key in p]
        return f"{statistics.median(values):.2f} s" if values else "-"

    if hub and floor:
        lines += [
            "",
            "Where the time goes (medians; the engine's timestamps and the server's own log):",
            "",
            "| phase | through the hub | floor |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {label} | {cell(hub, key)} | {cell(floor, key)} |" for key, label in labels]
    metrics = figure.context.get("hub_metrics") or {}
    spawn = metrics.get("server_spawn_duration_mean_s")
    proxy = metrics.get("proxy_add_duration_mean_s")
    if spawn is not None:
        text = (
            "The hub's own `jupyterhub_server_spawn_duration_seconds` over these spawns: "
            f"mean {spawn:.2f} s"
        )
        if proxy is not None:
            text += f"; `jupyterhub_proxy_add_duration_seconds`: mean {proxy * 1000:.0f} ms"
        lines += ["", text + "."]
    return lines


def patch_details(figure: Figure) -> list[str]:
    cells = figure.context.get("runbook_cells") or []
    steps = figure.context.get("plain_steps") or []
    lines = []
    if figure.context.get("errata"):
        specs = ", ".join(f"{e['package']}={e['version']}" for e in figure.context["errata"])
        lines += ["", f"Errata approved and applied by each: {specs}."]
    if cells:
        lines += [
            "",
            "Where the runbook's time goes (papermill's duration of each code cell, median over "
            "the runs; the rest of the total is papermill and the kernel starting):",
            "",
            "| cell (first line) | median |",
            "| --- | --- |",
        ]
        for index, (first_line, _) in enumerate(cells[0]):
            values = [run[index][1] for run in cells if index < len(run)]
            shown = first_line.replace("|", "\\|")[:70]
            lines.append(f"| `{shown}` | {statistics.median(values):.2f} s |")
    batches = figure.context.get("batches") or []
    handwritten = figure.context.get("handwritten_batches") or []
    handwritten_steps = figure.context.get("handwritten_steps") or []
    if batches:

        def phase(values: list[dict[str, float]], key: str) -> str:
            return f"{statistics.median(batch[key] for batch in values):.2f} s" if values else "-"

        by_hand = "-"
        if steps:
            per_host = [step[name] for step in steps for name in step if name != "promote"]
            by_hand = f"{statistics.median(per_host):.2f} s"
        lines += [
            "",
            f"One batch (one host), medians over {len(batches)} batches of the runbook (its "
            f"run's ledger) and {len(handwritten)} of the hand-written playbook (Ansible's log: "
            "from one task's start to the next's):",
            "",
            "| phase of a batch | the runbook | hand-written | bare plays |",
            "| --- | --- | --- | --- |",
            "| before the patch: the silence (the runbook: and the ledger, ansible-runner's "
            f"start) | {phase(batches, 'before_play')} | {phase(handwritten, 'before_play')} "
            "| - |",
            "| the patch on the host (the runbook: `patch.yml` through ansible-runner; "
            "hand-written: patch.yml's tasks; bare: `ansible-playbook patch.yml` whole) "
            f"| {phase(batches, 'play')} | {phase(handwritten, 'play')} | {by_hand} |",
            "| after the patch: the health gate, waiting for a scrape newer than the patch; "
            f"the silence expired | {phase(batches, 'gate_wait')} "
            f"| {phase(handwritten, 'gate_wait')} | - |",
        ]
    if steps or handwritten_steps:

        def step_median(runs: list[dict[str, float]], name: str) -> str:
            values = [run[name] for run in runs if name in run]
            return f"{statistics.median(values):.1f} s" if values else "-"

        lines += [
            "",
            "The baselines step by step (medians):",
            "",
            "| step | hand-written | bare plays |",
            "| --- | --- | --- |",
            f"| promotion (runs API) | {step_median(handwritten_steps, 'promote')} "
            f"| {step_median(steps, 'promote')} |",
            f"| `handwritten-patch.yml` (every batch) | {step_median(handwritten_steps, 'patch')} "
            "| - |",
        ]
        for name in steps[0] if steps else []:
            if name != "promote":
                lines.append(f"| `patch.yml --limit {name}` | - | {step_median(steps, name)} |")
    return lines


def images_details(figure: Figure) -> list[str]:
    sizes = figure.context.get("sizes_mb") or {}
    fresh = figure.context.get("fresh_s") or {}
    cached = figure.context.get("cached_s") or {}
    if not sizes:
        return []
    lines = [
        "| image | size | build from nothing | with the cache |",
        "| --- | --- | --- | --- |",
        f"| Debian root (debootstrap, import) | - | {figure.context['root_s']:.0f} s | - |",
    ]
    for name, size in sizes.items():
        lines.append(f"| {name} | {size:.0f} MB | {fresh[name]:.0f} s | {cached[name]:.1f} s |")
    total_fresh = figure.context["root_s"] + sum(fresh.values())
    lines.append(f"| **all** | | **{total_fresh:.0f} s** | **{sum(cached.values()):.1f} s** |")
    lines += ["", "Single samples (one build of each): no median or p95, no target (report only)."]
    return lines


def summary(figures: list[Figure]) -> list[str]:
    lines = [
        "| figure | measure | median | target | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for figure in figures:
        for row in figure.rows:
            if row.target:
                cells = [
                    figure.title,
                    row.what,
                    with_unit(row.median, row.unit),
                    row.target,
                    f"**{row.verdict}**",
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def history_entry(results: dict[str, Any]) -> dict[str, Any]:
    """What docs/bench-history.jsonl keeps of a whole run: when, which code, the summary rows."""
    rows = [
        {
            "figure": figure.title,
            "what": row.what,
            "median": row.median,
            "unit": row.unit,
            "target": row.target,
            "verdict": row.verdict,
        }
        for figure in (Figure.from_dict(f) for f in results["figures"])
        for row in figure.rows
        if row.target
    ]
    return {
        "date": results["date"],
        "commit": results["machine"]["commit"],
        "minutes": round(results["seconds"] / 60),
        "summary": rows,
    }


def whole_runs(history: list[dict[str, Any]], date: str) -> list[str]:
    """The spawn figures of the last SHOWN_RUNS whole runs up to `date`, and what each missed."""
    runs = [entry for entry in history if entry["date"] <= date][-SHOWN_RUNS:]
    if len(runs) < 2:
        return []

    def reruns(entry: dict[str, Any], head: str) -> str:
        values = [
            number(row["median"], row["unit"])
            for row in entry["summary"]
            if row["figure"] == "Spawn, run again" and row["what"].startswith(head)
        ]
        return " / ".join(values) or "-"

    def missed(entry: dict[str, Any]) -> str:
        rows = [row for row in entry["summary"] if row["verdict"] == "missed"]
        shown = {
            f"{row['figure']} {with_unit(row['median'], row['unit'])}"
            for row in rows
            if not row["figure"].startswith("Spawn, ")  # the first of the reruns, shown before
        }
        return ", ".join(sorted(shown)) or "none"

    lines = [
        f"The last {len(runs)} whole runs on this machine, this one last "
        "(docs/bench-history.jsonl, which each whole run extends): the spawn figures are measured "
        "three times in each run, and must hold in every one.",
        "",
        "| run | commit | one spawn / floor, runs 1-3 (≤ 1.15 x) "
        "| ten at once / ten `docker run`, runs 1-3 (≤ 1.10 x) | other targets missed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in runs:
        cells = [
            entry["date"],
            entry["commit"],
            reruns(entry, "one spawn"),
            reruns(entry, "ten at once"),
            missed(entry),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(results: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    machine = results["machine"]
    figures = [Figure.from_dict(f) for f in results["figures"]]
    quiet = results["quiet"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (tests/bench/) from the run of {results['date']}; rerun it "
        "rather than editing. How each figure is measured is said under it; the harness is "
        "the reference. Medians and nearest-rank 95th percentiles; n is the number of samples. "
        "Comparisons are ratios of samples taken side by side (seconds apart) in the same run, "
        "since absolute times drift on a shared machine.",
        "",
        "## The machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {machine['cores']} cores, {machine['cpu']} |",
        f"| memory | {machine['memory_gib']:.1f} GiB |",
        f"| Docker | engine {machine['docker']}, {machine['compose']} |",
        f"| kernel | {machine['kernel']} |",
        f"| date | {results['date']} |",
        f"| commit | {machine['commit']} |",
        f"| the whole run | {results['seconds'] / 60:.0f} min |",
    ]
    images = results.get("images") or {}
    if images:
        shown = ", ".join(
            f"{name} {images[name]}" for name in ("singleuser", "hub") if name in images
        )
        lines.append(f"| images measured | as `make up` built them: {shown} |")
    lines.append("")
    if quiet["quiet"]:
        lines.append(
            f"Before measuring, the harness waited {quiet['waited_s']} s until no test stack ran "
            f"and the CPUs were under {QUIET_BUSY:.0%} busy over {QUIET_WINDOW:g} s "
            f"({quiet.get('busy', 0):.0%}; 1-minute load {quiet['load1']:.2f}). "
            "The figures were then measured back to back; each says the load it met."
        )
    else:
        lines.append(
            f"**The machine did not get quiet** within {quiet['waited_s']} s (CPUs "
            f"{quiet.get('busy', 0):.0%} busy, load {quiet['load1']:.2f}, "
            f"{quiet.get('test_containers', 0)} test containers): the "
            "figures below were measured on a busy machine."
        )
    lines += ["", "## Summary", "", *summary(figures)]
    runs = whole_runs(history or [], results["date"])
    if runs:
        lines += ["", "## Whole runs", "", *runs]
    for figure in figures:
        lines += ["", f"## {figure.title}", "", figure.how, ""]
        if figure.key == "images" and figure.context.get("sizes_mb"):
            lines += images_details(figure)
        else:
            lines += table(figure.rows)
        if figure.key == "spawn":
            lines += spawn_details(figure)
        if figure.key == "patch":
            lines += patch_details(figure)
        lines += ["", *[f"{note}" for note in figure.notes]]
        text = conditions(figure)
        if text:
            lines += [text]
    missing = results.get("not_measured") or []
    if missing:
        lines += ["", "## Not measured in this run", ""] + [f"- {item}" for item in missing]
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    return "\n".join(line.rstrip() for line in lines).replace("\n\n\n", "\n\n") + "\n"
