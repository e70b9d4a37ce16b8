"""Widgets: built without a kernel, fed recorded events and real answers of the fake fleet."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opsbook_fakes import FakeServer
from opsbook_fleet import FLEET_DIR, FakeFleet, demo_fleet

if os.environ.get("CI") != "true":  # the engineer's image has them; CI must have them too
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")

from opsbook import widgets
from opsbook.contract import wire
from opsbook.errata import Erratum
from opsbook.errors import ErrataError, InventoryError
from opsbook.health import LOAD, CheckResult, GateResult, Series
from opsbook.inventory import Inventory
from opsbook.plays import PlayResult, summarize_events
from opsbook.rolling import BatchResult, RollingPlan, RollingResult
from opsbook.runsclient import RunsError

DATA = Path(__file__).parent / "data"
INVENTORY = FLEET_DIR / "inventories" / "demo"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def recorded_events() -> list[dict[str, Any]]:
    """A real run of play.yml: alpha changed, beta failed, gamma ok, delta unreachable."""
    return json.loads((DATA / "events.json").read_text())


@pytest.fixture
def fleet(fake_server: FakeServer) -> FakeFleet:
    fake = demo_fleet()
    fake_server.responder = fake
    return fake


STACKS = wire.StackList(
    stacks=[
        wire.StackView(
            name="db", environment="prod-eu", production=True, hosts=["db-1", "db-2", "db-3"]
        ),
        wire.StackView(name="web", environment="staging", production=False, hosts=["web-1"]),
    ],
    nonproduction=["staging"],
)


def test_stack_picker_marks_production_as_the_runs_service_says() -> None:
    picker = widgets.stack_picker(STACKS, value="web")
    assert picker.value == "web"
    assert picker.options == (
        ("db (prod-eu, 3 hosts) - PRODUCTION: on-call only", "db"),  # not named "production"
        ("web (staging, 1 hosts)", "web"),
    )
    assert widgets.stack_picker(STACKS).value == "db"
    with pytest.raises(InventoryError, match="unknown stack 'mail'; known stacks: db, web"):
        widgets.stack_picker(STACKS, value="mail")
    with pytest.raises(InventoryError, match="the runs service knows no stacks"):
        widgets.stack_picker(wire.StackList(stacks=[], nonproduction=[]))


def test_play_view_follows_the_events(recorded_events: list[dict[str, Any]]) -> None:
    view = widgets.PlayView(["alpha", "beta", "gamma", "delta"], title="batch 1")
    before_recap = [e for e in recorded_events if e["event"] != "playbook_on_stats"]
    for event in before_recap:
        view.event(event)
    # beta failed and delta is unreachable: ansible is done with them before the recap
    assert (view.progress.value, view.progress.max) == (2, 4)
    assert view.rows["beta"]["state"] == "failed"
    assert view.rows["delta"]["state"] == "unreachable"
    assert view.rows["alpha"]["state"] == "running"
    view.event(recorded_events[-1])
    assert (view.progress.value, view.progress.description) == (4, "4/4")
    assert view.progress.bar_style == "danger"
    states = {host: row["state"] for host, row in view.rows.items()}
    assert states == {"alpha": "changed", "beta": "failed", "gamma": "ok", "delta": "unreachable"}
    assert "beta was asked to fail" in view.table.value
    assert "<b>batch 1</b>" in view.title.value


def test_play_view_counts_tasks_when_told_how_many(recorded_events: list[dict[str, Any]]) -> None:
    view = widgets.PlayView(["alpha"], expected_tasks=4)
    for event in recorded_events:
        view.event(event)
    assert (view.progress.value, view.progress.max) == (4, 4)
    view.reset(["alpha", "omega"])
    for event in recorded_events:
        view.event(event)
    assert view.rows["omega"]["state"] == "no result"  # the play never reached it
    assert view.progress.bar_style == "danger"
    view.reset(["gamma", "beta"], title="next")
    assert (view.progress.value, view.progress.max) == (0, 2)
    assert view.rows["beta"]["state"] == "waiting"


def test_play_summary_table(recorded_events: list[dict[str, Any]], tmp_path: Path) -> None:
    hosts = summarize_events(recorded_events)
    result = PlayResult("failed", 2, hosts, recorded_events, tmp_path, tmp_path, "")
    table = widgets.play_summary_table(result).value
    assert "fail where asked: beta was asked to fail" in table
    assert str(tmp_path) in table


ERRATA = [
    Erratum("opsbook-demo-agent", "2.3.1", {"web-1": "2.3.0"}, True),
    Erratum("opsbook-demo-agent", "2.4.0", {"web-1": "2.3.0"}, False, "new release"),
    Erratum(
        "opsbook-demo-base", "1.1", {"web-1": "1.0"}, False, "a <fix>", "security", "A-3", True
    ),
]


class Promoter:
    """An on_promote that records what it was given and answers as the runs service would, or
    refuses with `refusal`."""

    def __init__(self, refusal: str = "") -> None:
        self.refusal = refusal
        self.calls: list[list[str]] = []

    def __call__(self, chosen: list[Erratum]) -> wire.Promotion:
        self.calls.append([erratum.spec for erratum in chosen])
        if self.refusal:
            reply = wire.ErrorReply(
                status=409, code=wire.ErrorCode.WRONG_STATE, message=self.refusal
            )
            raise RunsError(reply)
        versions = [wire.ErratumVersion(package=e.package, version=e.new_version) for e in chosen]
        return wire.Promotion(
            id=7, environment="staging", promoted=versions, unchanged=[], by="erin", at="", run_id=3
        )


def ticked(table: widgets.ErrataTable) -> list[str]:
    return [erratum.spec for erratum in table.selected()]


def test_errata_table_ticks_what_approve_names() -> None:
    table = widgets.ErrataTable(ERRATA, approve=["opsbook-demo-base=1.1"])
    # the approved erratum is ticked and locked, whatever approve says
    assert ticked(table) == ["opsbook-demo-agent=2.3.1", "opsbook-demo-base=1.1"]
    assert table.boxes["opsbook-demo-agent=2.3.1"].disabled
    assert [e.spec for e in table.to_promote()] == ["opsbook-demo-base=1.1"]
    base = table.rows.children[2].children[1].value
    assert "a &lt;fix&gt;" in base and "security A-3 (reboot)" in base
    assert table.button.disabled  # no on_promote: nothing to press
    with pytest.raises(ErrataError, match="'nope=1' not among"):
        widgets.ErrataTable(ERRATA, approve=["nope=1"])


def test_errata_table_promotes_the_ticked_ones_once() -> None:
    promoter = Promoter()
    table = widgets.ErrataTable(ERRATA, approve="none", on_promote=promoter)
    table.boxes["opsbook-demo-agent=2.4.0"].value = True  # the engineer ticks one
    table.button.click()
    assert promoter.calls == [["opsbook-demo-agent=2.4.0"]]
    assert table.status.value == "promoted 1 errata to staging (promotion 7, run 3)"
    assert table.boxes["opsbook-demo-agent=2.4.0"].disabled
    assert [e.spec for e in table.approved_errata()] == [
        "opsbook-demo-agent=2.3.1",
        "opsbook-demo-agent=2.4.0",
    ]
    assert table.promote() is None  # the next cell does the same: nothing left to do
    assert promoter.calls == [["opsbook-demo-agent=2.4.0"]]


def test_errata_table_shows_a_refused_or_dry_promotion() -> None:
    failing = widgets.ErrataTable(ERRATA, on_promote=Promoter("run 3 is <paused>"))
    with pytest.raises(RunsError, match="run 3 is <paused>"):
        failing.promote()
    assert "run 3 is &lt;paused&gt;" in failing.status.value
    assert len(failing.approved_errata()) == 1  # nothing counts as approved
    promoter = Promoter()
    dry = widgets.ErrataTable(ERRATA, on_promote=promoter, check=True)
    assert dry.promote() is None
    assert dry.status.value.startswith("check mode: would promote 2 errata (opsbook-demo-agent")
    assert promoter.calls == [] and len(dry.approved_errata()) == 1


def test_empty_errata_table() -> None:
    table = widgets.ErrataTable([], on_promote=Promoter())
    assert "every host of the stack is up to date" in table.rows.children[0].value
    assert table.promote() is None


def gate_result(*failing: str) -> GateResult:
    return GateResult(
        tuple(
            CheckResult(host, "up", host not in failing, 1.0 if host not in failing else 0.0, "m")
            for host in ("web-1", "web-2")
        )
    )


def test_rolling_view_shows_each_batch(tmp_path: Path) -> None:
    plan = RollingPlan(
        stack="web",
        environment="staging",
        production=False,
        batches=(("web-1", "web-2"), ("web-3",)),
        instances=Inventory.load(INVENTORY).exporter_instances(["web-1", "web-2", "web-3"]),
    )
    view = widgets.RollingView(plan)
    view.batch_starting(1, ["web-1", "web-2"])
    assert view.states == {1: "patching", 2: "not started"}
    view.event({"event": "runner_on_start", "event_data": {"host": "web-1", "task": "upgrade"}})
    assert view.play.rows["web-1"]["task"] == "upgrade"
    view.gate_result(1, gate_result("web-2"))
    assert view.details[1] == "waiting for the hosts ..."
    assert "health gate <b" in view.gate.value
    batch = BatchResult(
        1, ("web-1", "web-2"), "successful", {}, gate_result("web-2"), 3, "s-1", tmp_path, NOW, NOW
    )
    view.batch_finished(1, batch)
    assert view.states[1] == "failed"  # web-2 failed its gate
    result = RollingResult(plan, False, 1, (batch,), "batch 1 of 2: health gate failed", 1)
    view.finished(result)
    assert view.progress.bar_style == "danger"
    assert "not started (1): web-3" in view.summary.value
    assert ">failed<" in view.batches.value


def test_gate_html_names_failures() -> None:
    text = widgets.gate_html(gate_result("web-2"))
    assert "web-2: up: m" in text
    assert "no value" not in text
    assert ">1<" in text and ">0<" in text


def test_metric_figure_is_a_png() -> None:
    series = [Series("web-1:9100", [(NOW.timestamp(), 0.5), (NOW.timestamp() + 60, 0.7)])]
    figure = widgets.metric_figure(
        series, title="load", threshold=1.0, names={"web-1:9100": "web-1"}
    )
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["web-1", "gate limit"]
    assert widgets.png(figure).startswith(b"\x89PNG")


def test_check_history_asks_prometheus_for_the_checks_query(
    fake_server: FakeServer, fleet: FakeFleet
) -> None:
    instances = {"web-1": "web-1:9100", "web-2": "web-2:9100"}
    figure = widgets.check_history(fake_server.url, LOAD, instances, hours=1, end=NOW)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["web-1", "web-2", "gate limit"]
    request = fake_server.requests[-1]
    assert request.path == "/api/v1/query_range"
    assert request.query["query"] == LOAD.promql(["web-1:9100", "web-2:9100"])
    assert float(request.query["end"]) - float(request.query["start"]) == 3600


def test_health_view_refreshes_and_fails_closed(fake_server: FakeServer, fleet: FakeFleet) -> None:
    view = widgets.HealthView(fake_server.url, {"db-1": "db-1:9100"}, title="db")
    assert view.result is not None and view.result.passed
    assert "<h3>db</h3>" in view.title.value
    # load and disk over the last hour, as images (no Output widget: see HealthView)
    assert [type(plot).__name__ for plot in view.plots.children] == ["Image", "Image"]
    assert bytes(view.plots.children[0].value).startswith(b"\x89PNG")
    fleet.prometheus_answers = False
    assert not view.refresh().passed  # no answer: failed, and no exception
    assert "kept answering with server errors" in view.gate.value
    assert all("range query" in plot.value for plot in view.plots.children)


def test_time_range_of_health_plots_defaults_to_now(
    fake_server: FakeServer, fleet: FakeFleet
) -> None:
    before = datetime.now(UTC)
    widgets.check_history(fake_server.url, LOAD, {"web-1": "web-1:9100"}, hours=0.5)
    end = datetime.fromtimestamp(float(fake_server.requests[-1].query["end"]), UTC)
    assert before - timedelta(seconds=1) <= end <= datetime.now(UTC) + timedelta(seconds=1)


def test_rolling_view_of_a_run_taken_on_shows_the_earlier_batches_as_run_before() -> None:
    plan = RollingPlan(
        stack="web",
        environment="staging",
        production=False,
        batches=(("web-1",), ("web-2",), ("web-3",)),
        instances={"web-1": "web-1:9100", "web-2": "web-2:9100", "web-3": "web-3:9100"},
    )
    view = widgets.RollingView(plan, start_batch=2)
    assert view.states == {1: "done", 2: "not started", 3: "not started"}
    assert view.progress.value == 1
    assert "run earlier: see the run&#x27;s record" in view.batches.value
