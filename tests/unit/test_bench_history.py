"""docs/bench-history.jsonl and the page's "Whole runs" (tests/bench/report.py)."""

from tests.bench import report
from tests.bench.common import Figure, Row


def run(date: str, one: list[float], ten: list[float], patch: float) -> dict:
    """A whole run's results as the bench writes them, with the figures the history keeps."""
    reruns = Figure("spawn-runs", "Spawn, run again", "how")
    for index, value in enumerate(one, 1):
        verdict = "met" if value <= 1.15 else "missed"
        reruns.rows.append(
            Row(f"one spawn / floor, run {index}", [value], "x", "≤ 1.15 x", verdict)
        )
    for index, value in enumerate(ten, 1):
        verdict = "met" if value <= 1.10 else "missed"
        what = f"ten at once / ten `docker run`, run {index}"
        reruns.rows.append(Row(what, [value], "x", "≤ 1.1 x", verdict))
    overhead = Figure("patch", "Patch overhead", "how")
    overhead.rows += [
        Row(
            "runbook / the hand-written equivalent",
            [patch],
            "x",
            "≤ 1.10 x",
            "met" if patch <= 1.1 else "missed",
        ),
        Row("the batches alone", [0.9], "x"),  # reported only: not kept
    ]
    first = Figure("spawn", "Spawn, one engineer", "how")  # run 1 of the reruns, again
    first.rows.append(Row("spawn / floor (per pair)", [one[0]], "x", "≤ 1.15 x", "missed"))
    return {
        "date": date,
        "machine": {"commit": "abc1234"},
        "seconds": 1930.0,
        "figures": [first.to_dict(), reruns.to_dict(), overhead.to_dict()],
    }


def test_a_whole_run_keeps_its_targeted_rows_and_which_code_it_measured():
    entry = report.history_entry(run("2026-11-30 03:40 UTC", [1.07, 1.04, 0.98], [0.93], 1.25))
    assert entry["date"] == "2026-11-30 03:40 UTC"
    assert entry["commit"] == "abc1234"
    assert entry["minutes"] == 32
    assert [row["what"] for row in entry["summary"]][-1] == "runbook / the hand-written equivalent"
    assert len(entry["summary"]) == 6
    assert entry["summary"][1]["median"] == 1.07


def test_the_page_shows_every_rerun_of_the_last_runs_and_what_else_they_missed():
    history = [
        report.history_entry(
            run(f"2026-11-3{day} 0{day}:00 UTC", [1.1 + day / 100] * 3, [0.9] * 3, 1.0 + day / 10)
        )
        for day in range(7)
    ]
    lines = report.whole_runs(history, "2026-11-35 05:00 UTC")
    body = lines[4:]
    assert [line.split(" | ")[0] for line in body] == [
        f"| 2026-11-3{day} 0{day}:00 UTC" for day in range(1, 6)
    ]  # the last five up to the run shown; a later one is not
    assert "| 1.15 / 1.15 / 1.15 | 0.90 / 0.90 / 0.90 |" in body[-1]
    assert body[-1].endswith("| Patch overhead 1.50 x |")
    assert body[0].endswith("| none |")  # patch 1.1 x met; spawn's misses are in its columns


def test_one_run_alone_has_no_whole_runs_section():
    history = [report.history_entry(run("2026-11-30 03:40 UTC", [1.0], [1.0], 1.0))]
    assert report.whole_runs(history, "2026-11-30 03:40 UTC") == []
    assert "## Whole runs" not in report.render(
        {**run("2026-11-30 03:40 UTC", [1.0], [1.0], 1.0), **PAGE}, history
    )


PAGE = {
    "machine": {
        "commit": "abc1234",
        "cores": 2,
        "cpu": "cpu",
        "memory_gib": 23.5,
        "docker": "20.10",
        "compose": "docker-compose 1.29.2",
        "kernel": "Linux",
    },
    "quiet": {"quiet": True, "waited_s": 10, "busy": 0.0, "load1": 0.5},
}
