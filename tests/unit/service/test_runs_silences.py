"""Silences through the runs service (opsbook.service.silences and the ledger's use of them).

The ledger's tests use the in-memory FakeAlertmanager (fake_alertmanager.py); the HTTP client is
tested against a loopback server that answers like Alertmanager 0.25's v2 API.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fake_alertmanager import FakeAlertmanager
from test_runs_store import ALICE, BOB, Clock, refused, run_batch, start

from opsbook.contract.wire import BatchState, ErrorCode, HostResult, HostState, RunOptions, RunState
from opsbook.service.fleet import InventorySource, fleet_from_groups
from opsbook.service.settings import SettingsError, load
from opsbook.service.silences import Alertmanager, SilenceError, ceiling, silence_body
from opsbook.service.store import Store

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
WEB = [f"web-{n}:9100" for n in range(1, 6)]
ROOT = Path(__file__).resolve().parents[3]


# --- what Alertmanager gets -----------------------------------------------------------------------


def test_a_silence_matches_exactly_its_instances_anchored() -> None:
    body = silence_body(
        ["web.1:9100", "web-2:9100", "web.1:9100"],
        starts_at=START,
        ends_at=START + timedelta(minutes=30),
        created_by="alice",
        comment="batch 1",
    )
    (matcher,) = body["matchers"]
    assert matcher == {
        "name": "instance",
        "value": r"web-2:9100|web\.1:9100",
        "isRegex": True,
        "isEqual": True,
    }
    # Alertmanager anchors regex matchers: ^(?:value)$
    for instance, silenced in [
        ("web.1:9100", True),
        ("web-2:9100", True),
        ("webx1:9100", False),  # the dot is a dot
        ("web-2:91000", False),
        ("web-3:9100", False),
    ]:
        assert bool(re.fullmatch(matcher["value"], instance)) is silenced, instance
    assert (body["startsAt"], body["endsAt"]) == (
        "2026-11-29T12:00:00.000Z",
        "2026-11-29T12:30:00.000Z",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instances": []}, "none or blank"),
        ({"ends_at": START}, "must end after it starts"),
        ({"starts_at": datetime(2026, 11, 29)}, "has no timezone"),
        ({"comment": " "}, "created_by and comment"),
    ],
)
def test_a_silence_that_makes_no_sense_is_never_sent(change: dict, message: str) -> None:
    options: dict[str, Any] = {
        "instances": ["web-1:9100"],
        "starts_at": START,
        "ends_at": START + timedelta(minutes=1),
        "created_by": "alice",
        "comment": "c",
    } | change
    with pytest.raises(SilenceError, match=message):
        silence_body(options.pop("instances"), **options)


def test_the_ceiling_is_the_longest_a_batch_should_take() -> None:
    """Only if the runs service dies mid-batch does a silence last this long: the play's
    allowance (a reboot waits up to 10 minutes), the gate's timeout, and a minute."""
    assert ceiling(120) == timedelta(minutes=23)
    assert ceiling(30) == timedelta(minutes=21, seconds=30)


# --- the HTTP client ------------------------------------------------------------------------------


class V2Api(BaseHTTPRequestHandler):
    """Alertmanager 0.25's answers to the silences API; `server.states` holds the silences."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.refuse:  # type: ignore[attr-defined]
            self._answer(400, b'"bad matchers"')
            return
        silence_id = f"id-{len(self.server.states) + 1}"  # type: ignore[attr-defined]
        self.server.states[silence_id] = "active"  # type: ignore[attr-defined]
        self.server.bodies[silence_id] = body  # type: ignore[attr-defined]
        self._answer(200, json.dumps({"silenceID": silence_id}).encode())

    def do_DELETE(self) -> None:
        silence_id = self.path.rsplit("/", 1)[1]
        states = self.server.states  # type: ignore[attr-defined]
        if self.server.refuse:  # type: ignore[attr-defined]
            self._answer(500, b"cluster is not ready")
        elif silence_id not in states:
            self._answer(404, b"")
        elif states[silence_id] == "expired":
            self._answer(500, f"silence {silence_id} already expired".encode())
        else:
            states[silence_id] = "expired"
            self._answer(200, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        """Quiet."""


@pytest.fixture
def api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), V2Api)
    server.states, server.bodies, server.refuse = {}, {}, False  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def body() -> dict[str, Any]:
    return silence_body(
        ["web-1:9100"],
        starts_at=START,
        ends_at=START + timedelta(minutes=1),
        created_by="alice",
        comment="c",
    )


def test_the_client_creates_and_expires_and_an_expired_or_unknown_one_counts_as_done(api) -> None:
    alertmanager = Alertmanager(url_of(api))
    assert alertmanager.url == url_of(api).rstrip("/")
    silence_id = alertmanager.create(body())
    assert api.states == {silence_id: "active"} and api.bodies[silence_id] == body()
    alertmanager.expire(silence_id)
    assert api.states == {silence_id: "expired"}
    alertmanager.expire(silence_id)  # 500 "already expired"
    alertmanager.expire("no-such-silence")  # 404


def test_the_clients_failures_name_alertmanager_and_its_setting(api) -> None:
    alertmanager = Alertmanager(url_of(api))
    silence_id = alertmanager.create(body())
    api.refuse = True
    with pytest.raises(SilenceError, match=r"RUNS_ALERTMANAGER_URL.*refused the silence: HTTP 400"):
        alertmanager.create(body())
    with pytest.raises(SilenceError, match=f"did not expire silence {silence_id}: HTTP 500"):
        alertmanager.expire(silence_id)
    api.shutdown()
    api.server_close()
    with pytest.raises(SilenceError, match=r"Alertmanager at http://127\.0\.0\.1:\d+ .*did not"):
        alertmanager.create(body())


# --- the ledger: set at a batch's start, expired at its end, however it ends -------------------


@pytest.fixture
def store(tmp_path, inventory, alertmanager) -> Iterator[Store]:
    store = Store(
        f"sqlite:///{tmp_path / 'runs.sqlite'}",
        fleet=inventory.current,
        alertmanager=alertmanager,
        lease_seconds=60,
        now=Clock(),
    )
    yield store
    store.close()


def events_of(store: Store, run_id: int, *types: str) -> list:
    return [e for e in store.events(run_id).events if e.type in types]


def test_a_batch_start_silences_exactly_its_hosts_and_its_finish_expires_that(
    store: Store, alertmanager: FakeAlertmanager
) -> None:
    run = start(store)
    running = store.start_batch(run.id, ALICE, 1)
    (silence_id,) = alertmanager.active
    assert alertmanager.covers(silence_id, WEB) == {"web-1:9100", "web-2:9100"}
    sent = alertmanager.bodies[silence_id]
    assert sent["createdBy"] == "alice"
    assert sent["comment"].startswith(f"opsbook run {run.id} (patching of web), batch 1: web-1")
    # the answer to the batch start says which silence covers the batch
    silence = running.batches[0].silence
    assert silence is not None and silence.id == silence_id
    assert (silence.hosts, silence.instances) == (["web-1", "web-2"], ["web-1:9100", "web-2:9100"])
    assert silence.expired_at is None
    ceiling_at = datetime.fromisoformat(silence.ends_at) - datetime.fromisoformat(silence.set_at)
    assert ceiling_at == ceiling(RunOptions().gate_timeout)
    (set_event,) = events_of(store, run.id, "silence_set")
    assert (set_event.actor, set_event.batch) == ("runs", 1)
    assert set_event.data["instances"] == ["web-1:9100", "web-2:9100"]

    done = store.finish_batch(
        run.id, ALICE, 1, [HostResult(host=h, state=HostState.OK) for h in ("web-1", "web-2")]
    )
    assert alertmanager.active == []
    assert done.batches[0].silence.expired_at is not None
    assert done.batches[0].silence.why == "batch 1 finished"
    (expired,) = events_of(store, run.id, "silence_expired")
    assert expired.message.endswith("expired: batch 1 finished")


def test_a_repeated_batch_start_sets_no_second_silence(store, alertmanager) -> None:
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    store.start_batch(run.id, ALICE, 1)  # a client's retry after a lost answer
    assert len(alertmanager.bodies) == 1


def test_no_answer_from_alertmanager_means_the_batch_does_not_start(store, alertmanager) -> None:
    run = start(store)
    alertmanager.down = True
    error = refused(store.start_batch, run.id, ALICE, 1)
    assert (error.status, error.code) == (503, ErrorCode.UNAVAILABLE)
    assert "batch 1 of run 1 did not start" in error.message
    assert "RUNS_ALERTMANAGER_URL=http://alertmanager.test:9093" in error.message
    assert "Nothing was recorded and no host was touched" in error.message
    after = store.get_run(run.id)
    assert after.current_batch is None and after.batches[0].state is BatchState.PENDING
    assert {h.state for h in after.hosts} == {HostState.PENDING}
    assert [e.type for e in store.events(run.id).events] == ["start"]
    alertmanager.down = False
    assert store.start_batch(run.id, ALICE, 1).batches[0].state is BatchState.RUNNING


def test_check_mode_sets_no_silence(store, alertmanager) -> None:
    run = start(store, options=RunOptions(batch_size=2, check_mode=True))
    run_batch(store, run.id, ALICE, 1)
    assert alertmanager.bodies == {}
    assert store.get_run(run.id).batches[0].silence is None


def test_a_lease_that_runs_out_ends_the_silence_and_a_takeover_makes_sure(
    tmp_path, inventory, alertmanager
) -> None:
    clock = Clock()
    store = Store(
        f"sqlite:///{tmp_path / 'runs.sqlite'}",
        fleet=inventory.current,
        alertmanager=alertmanager,
        lease_seconds=60,
        now=clock,
    )
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    (first,) = alertmanager.active
    alertmanager.refuse_expiry = True  # Alertmanager is busy just then
    clock.advance(61)
    store.expire_leases()
    assert alertmanager.active == [first]
    (failed,) = events_of(store, run.id, "silence_expire_failed")
    assert "alice's lease ran out" in failed.message and "tries again" in failed.message
    store.sweep_silences()  # still refused: tried again, not recorded again
    assert len(events_of(store, run.id, "silence_expire_failed")) == 1
    alertmanager.refuse_expiry = False
    taken = store.takeover(run.id, BOB, "alice's kernel died")
    assert alertmanager.active == []
    (expired,) = events_of(store, run.id, "silence_expired")
    assert "alice's lease ran out (after 3 attempts)" in expired.message
    assert taken.batches[0].silence.why == "alice's lease ran out"
    # bob runs the interrupted batch again: a silence of his, for its hosts
    again = store.start_batch(run.id, BOB, 1)
    assert again.batches[0].silence.id != first
    assert alertmanager.bodies[again.batches[0].silence.id]["createdBy"] == "bob"
    store.close()


def test_a_takeover_expires_the_silence_it_finds(store, alertmanager) -> None:
    """Whatever was still in force when the run changed hands (the sweeper had not come by)."""
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    store.now.advance(61)  # type: ignore[attr-defined]
    alertmanager.down = True
    store.expire_leases()
    alertmanager.down = False
    store.takeover(run.id, BOB, "alice went home")
    assert alertmanager.active == []


@pytest.mark.parametrize("end", ["finish", "abort"])
def test_finishing_or_aborting_a_run_mid_batch_ends_its_silence(store, alertmanager, end) -> None:
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    if end == "finish":
        store.finish(run.id, ALICE, RunState.FAILED, "stopped by hand")
        why = "the run was finished (failed)"
    else:
        store.abort(run.id, ALICE, "wrong stack")
        why = "alice aborted the run"
    assert alertmanager.active == []
    assert store.get_run(run.id).batches[0].silence.why == why


def test_pausing_and_handing_off_leave_nothing_silenced(store, alertmanager) -> None:
    """A pause or a handoff waits for the batch's end (its finish expires the silence); one
    that was left in force (Alertmanager refused then) ends with the pause at the latest."""
    run = start(store)
    store.start_batch(run.id, ALICE, 1)
    alertmanager.refuse_expiry = True
    run_hosts = ["web-1", "web-2"]
    store.finish_batch(
        run.id, ALICE, 1, [HostResult(host=h, state=HostState.OK) for h in run_hosts]
    )
    assert len(alertmanager.active) == 1
    alertmanager.refuse_expiry = False
    store.handoff(run.id, ALICE, to="bob", note="", oncall=["alice", "bob"], oncall_group="oncall")
    assert len(alertmanager.active) == 1  # running: the handoff waits for the boundary
    store.pause(run.id, ALICE)
    assert alertmanager.active == []
    assert store.get_run(run.id).state is RunState.HANDED_OFF


def test_at_start_up_leftovers_are_expired_and_the_batch_in_flight_keeps_its_silence(
    tmp_path, inventory, alertmanager
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    first = Store(url, fleet=inventory.current, alertmanager=alertmanager)
    done, flying = start(first), start(first, runbook="reboot")
    first.start_batch(done.id, ALICE, 1)
    first.start_batch(flying.id, ALICE, 1)
    alertmanager.down = True  # the finish cannot expire it; then the service stops
    first.finish_batch(
        done.id, ALICE, 1, [HostResult(host=h, state=HostState.OK) for h in ("web-1", "web-2")]
    )
    first.close()
    alertmanager.down = False
    again = Store(url, fleet=inventory.current, alertmanager=alertmanager)
    assert again.sweep_silences() == 1
    (left,) = alertmanager.active
    assert left == again.get_run(flying.id).batches[0].silence.id
    assert again.get_run(done.id).batches[0].silence.why == "batch 1 finished"
    again.close()


def test_an_unreadable_inventory_silences_as_last_read(store, inventory, alertmanager) -> None:
    run = start(store)
    inventory.broken = "no such file or folder"
    store.start_batch(run.id, ALICE, 1)
    assert len(alertmanager.active) == 1


# --- where the exporter instances come from --------------------------------------------------


def test_a_hosts_exporter_is_its_opsbook_exporter_variable_else_port_9100(inventory) -> None:
    groups = dict(inventory.groups)
    groups["_meta"] = {"hostvars": {"web-2": {"opsbook_exporter": "10.0.0.2:9200"}}}
    fleet = fleet_from_groups(groups, frozenset({"staging"}))
    assert fleet.instances(["web-1", "web-2"]) == {"web-1": "web-1:9100", "web-2": "10.0.0.2:9200"}
    error = refused(fleet.instances, ["web-9"])
    assert error.code is ErrorCode.PLAN_CHANGED and "web-9" in error.message


def test_the_demo_inventory_read_by_ansible_inventory_gives_the_exporters() -> None:
    source = InventorySource(ROOT / "ansible" / "inventories" / "demo", frozenset({"staging"}))
    assert source.current().instances(["web-1", "db-3"]) == {
        "web-1": "web-1:9100",
        "db-3": "db-3:9100",
    }


# --- the setting ----------------------------------------------------------------------------------


def test_the_setting_defaults_to_the_demos_alertmanager_and_is_checked() -> None:
    token = {"JUPYTERHUB_API_TOKEN": "x" * 16}
    assert load(token)["RUNS_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert load(token | {"RUNS_ALERTMANAGER_URL": "https://am.example/"})[
        "RUNS_ALERTMANAGER_URL"
    ] == ("https://am.example")
    with pytest.raises(SettingsError, match="RUNS_ALERTMANAGER_URL: expected an http"):
        load(token | {"RUNS_ALERTMANAGER_URL": "alertmanager:9093"})


def test_a_batch_started_again_with_more_hosts_replaces_its_silence(store, alertmanager) -> None:
    run = start(store)
    first = store.start_batch(run.id, ALICE, 1, ["web-1"]).batches[0].silence
    second = store.start_batch(run.id, ALICE, 1, ["web-1", "web-2"]).batches[0].silence
    assert alertmanager.active == [second.id]
    assert alertmanager.covers(second.id, WEB) == {"web-1:9100", "web-2:9100"}
    (expired,) = events_of(store, run.id, "silence_expired")
    assert expired.data == {"silence_id": first.id, "why": "batch 1 started again", "attempts": 1}
