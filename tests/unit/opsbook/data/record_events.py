"""Re-record events.json: run play.yml on local-inventory.yml for real and keep what tests read.

Run from anywhere with the project's venv: python tests/unit/opsbook/data/record_events.py
"""

import json
import tempfile
from pathlib import Path

from opsbook.plays import run_play

HERE = Path(__file__).parent
KEPT_EVENT_KEYS = ("event", "counter", "stdout")
KEPT_DATA_KEYS = ("host", "task", "ignore_errors", "ok", "changed", "failures", "dark", "skipped")
KEPT_RESULT_KEYS = ("msg", "changed", "rc", "stderr")


def trimmed(event: dict) -> dict:
    """The event with only the fields summarize_events and people reading the fixture need."""
    data = event.get("event_data", {})
    kept = {key: event[key] for key in KEPT_EVENT_KEYS if key in event}
    kept["event_data"] = {key: data[key] for key in KEPT_DATA_KEYS if key in data}
    if "res" in data:
        result = data["res"]
        kept["event_data"]["res"] = {k: result[k] for k in KEPT_RESULT_KEYS if k in result}
    return kept


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as runs_dir:
        result = run_play(HERE / "play.yml", HERE / "local-inventory.yml", runs_dir=runs_dir)
    events = [trimmed(event) for event in result.events]
    (HERE / "events.json").write_text(json.dumps(events, indent=1) + "\n")
    print(f"{len(events)} events, status {result.status}")
