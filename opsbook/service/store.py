"""The runs ledger: every operation on runs, hosts and events, each in one database transaction.

Each change locks the run's row first (SELECT ... FOR UPDATE on PostgreSQL; on SQLite every write
transaction is BEGIN IMMEDIATE, which takes the database's write lock), then asks `rules` whether
the caller may do it, then writes the change and its event. So the decision and the change see the
same run, the per-run sequence numbers have no gaps or repeats, and two engineers acting at once are
served one after the other. Permissions live here rather than in the HTTP layer so that the store's
tests cover them and no other caller can skip them.

The methods are synchronous (SQLAlchemy Core); the web app runs them in a small thread pool.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from opsbook.contract.scopes import SCOPE_PRODUCTION, SCOPE_WRITE
from opsbook.contract.stacks import is_production, stack_key
from opsbook.contract.wire import (
    FINISHED_STATES,
    AppendResult,
    ApprovalDecisionKind,
    ApprovalView,
    BatchState,
    BatchView,
    Certificate,
    ErratumVersion,
    ErrorCode,
    Event,
    EventIn,
    EventKind,
    EventPage,
    GateReport,
    Handoff,
    HostResult,
    HostState,
    HostView,
    LeaseGrant,
    Promotion,
    Run,
    RunOptions,
    RunState,
    SilenceView,
    WireError,
    parse_wire_time,
    wire_time,
)
from opsbook.service import rules
from opsbook.service.fleet import Fleet, Stack, plan_batches
from opsbook.service.promotions import Outcome, check_pairs
from opsbook.service.rules import (
    Action,
    ApprovalPolicy,
    Caller,
    Refused,
    RunFacts,
    bad_request,
)
from opsbook.service.silences import SETTING as ALERTMANAGER_SETTING
from opsbook.service.silences import SilenceApi, SilenceError, ceiling, silence_body
from opsbook.service.ssh_ca import CertificateAuthority, check_public_key, key_id, principals
from opsbook.service.tables import (
    SCHEMA_VERSION,
    approvals,
    batches,
    certificates,
    events,
    hosts,
    metadata,
    promotions,
    runs,
    schema,
    silences,
)

log = logging.getLogger("opsbook.runs")

SYSTEM_ACTOR = "runs"
MAX_EVENTS_PER_APPEND = 1000
MAX_EVENT_DATA = 16_384  # bytes of JSON per event; beyond: replaced by a note saying so
MAX_TEXT = 4000  # characters of a message, note or reason
MAX_PAGE = 1000


class StoreError(RuntimeError):
    """The database cannot be opened or used (message names what to check)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _db(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment else None


def _wire(moment: datetime | None) -> str | None:
    return wire_time(moment.replace(tzinfo=UTC)) if moment else None


def _name(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > 255 or any(ord(ch) < 32 for ch in value):
        raise bad_request(f"{what}: expected a name of 1 to 255 printable characters")
    return value


def _text(value: str | None) -> str | None:
    """Free text as stored: bounded, and without NUL (PostgreSQL refuses it in text)."""
    if value is None:
        return None
    value = value.replace("\x00", "")
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def make_engine(url: str) -> Engine:
    """An engine for SQLite (a file; WAL; BEGIN IMMEDIATE for writes) or PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            # We issue BEGIN ourselves (below): pysqlite's own would start writes deferred.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in (
                "journal_mode=WAL",  # readers do not wait for the writer
                "synchronous=FULL",  # a committed event survives a power cut
                "foreign_keys=ON",
                "busy_timeout=30000",
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            readonly = connection.get_execution_options().get("opsbook_readonly", False)
            connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class Store:
    """The ledger. `fleet` gives the inventory's stacks as they are now (fleet.InventorySource's
    `current`); `alertmanager` is where batches' silences are set and expired
    (silences.Alertmanager at RUNS_ALERTMANAGER_URL); `approval` which runs wait for approval (by
    default every production run, one approver, 30 minutes); `now` is injectable so tests can let
    leases run out without waiting."""

    def __init__(
        self,
        url: str,
        *,
        fleet: Callable[[], Fleet],
        alertmanager: SilenceApi,
        lease_seconds: int = 60,
        approval: ApprovalPolicy | None = None,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.url = url
        self._read_fleet = fleet
        self.alertmanager = alertmanager
        self._last_fleet: Fleet | None = None  # the inventory as last read, for silences
        self.lease_seconds = lease_seconds
        self.approval = approval or ApprovalPolicy()
        self.now = now
        self._journal = threading.local()
        try:
            self.engine = make_engine(url)
            self.backend = self.engine.dialect.name
            self._reader = self.engine.execution_options(opsbook_readonly=True)
            self._migrate()
        except SQLAlchemyError as error:
            raise StoreError(f"cannot open the database: {_short(error)}") from error

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def recording(self) -> Iterator[list[Event]]:
        """Collect the human and system events this thread records inside the block (for the
        webhook: the app announces what an action did, and only that)."""
        self._journal.events = collected = []
        try:
            yield collected
        finally:
            self._journal.events = None

    # --- transactions -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._reader.connect() as conn, conn.begin():
            yield conn

    def _migrate(self) -> None:
        metadata.create_all(self.engine)
        with self._write() as conn:
            version = conn.execute(select(func.max(schema.c.version))).scalar()
            if version is None:
                conn.execute(insert(schema).values(version=SCHEMA_VERSION, created_at=_db(_now())))
                return
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database's schema version is {version}, newer than this service's "
                    f"({SCHEMA_VERSION}): run the newer opsbook/runs image, or restore a backup"
                )
            if version < 2:  # schema 2 added the run's typed options
                conn.execute(text("ALTER TABLE runs ADD COLUMN options JSON"))
                conn.execute(insert(schema).values(version=2, created_at=_db(_now())))
            if version < 3:  # schema 3 added the certificates table (create_all made it)
                conn.execute(insert(schema).values(version=3, created_at=_db(_now())))
            if version < 4:  # schema 4: approvals (create_all made the table) and runs columns
                have = {column["name"] for column in inspect(conn).get_columns("runs")}
                for name, kind in (
                    ("approvals_needed", "INTEGER"),
                    ("approval_round", "INTEGER"),
                    ("approval_expires_at", "TIMESTAMP"),
                    ("approval_requested_by", "VARCHAR(255)"),
                    ("resume_state", "VARCHAR(20)"),
                ):
                    if name not in have:  # NULL in the runs before: they need no approval
                        conn.execute(text(f"ALTER TABLE runs ADD COLUMN {name} {kind}"))
                conn.execute(insert(schema).values(version=4, created_at=_db(_now())))
            if version < 5:  # schema 5: the promotions table (create_all made it)
                conn.execute(insert(schema).values(version=5, created_at=_db(_now())))
            if version < 6:  # schema 6: the silences table (create_all made it)
                conn.execute(insert(schema).values(version=6, created_at=_db(_now())))

    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.max(schema.c.version))).scalar() or 0)

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    # --- reading ----------------------------------------------------------------------------------

    def get_run(self, run_id: int) -> Run:
        with self._read() as conn:
            return self._load(conn, run_id)

    def list_runs(
        self,
        *,
        finished: int = 20,
        runbook: str | None = None,
        stack: str | None = None,
        active: bool = True,
    ) -> list[Run]:
        """Active runs (newest first), then the `finished` most recently finished ones."""
        filters = []
        if runbook:
            filters.append(runs.c.runbook == runbook)
        if stack:
            filters.append(runs.c.stack == stack)
        with self._read() as conn:
            rows: list[RowMapping] = []
            if active:
                query = select(runs).where(runs.c.active_key.is_not(None), *filters)
                rows += conn.execute(query.order_by(runs.c.id.desc())).mappings().all()
            if finished > 0:
                query = select(runs).where(runs.c.active_key.is_(None), *filters)
                query = query.order_by(runs.c.finished_at.desc(), runs.c.id.desc())
                rows += conn.execute(query.limit(finished)).mappings().all()
            return self._views(conn, rows)

    def events(self, run_id: int, *, since: int = 0, limit: int = 500) -> EventPage:
        limit = max(1, min(limit, MAX_PAGE))
        since = max(0, min(since, 2**31 - 1))
        with self._read() as conn:
            self._require_run(conn, run_id)
            query = (
                select(events)
                .where(events.c.run_id == run_id, events.c.seq > since)
                .order_by(events.c.seq)
                .limit(limit + 1)
            )
            rows = conn.execute(query).mappings().all()
        page = [_event_view(row) for row in rows[:limit]]
        return EventPage(
            events=page, next_since=page[-1].seq if page else since, more=len(rows) > limit
        )

    def last_events(
        self, run_id: int, count: int, *, before: int | None = None, people_only: bool = False
    ) -> list[Event]:
        """The `count` latest events (seq < before), oldest first; people_only: no runner events."""
        query = select(events).where(events.c.run_id == run_id)
        if before is not None:
            query = query.where(events.c.seq < max(0, min(before, 2**31 - 1)))
        if people_only:
            query = query.where(events.c.kind.in_([EventKind.HUMAN, EventKind.SYSTEM]))
        query = query.order_by(events.c.seq.desc()).limit(max(1, min(count, MAX_PAGE)))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [_event_view(row) for row in reversed(rows)]

    def event_count(self, run_id: int) -> int:
        with self._read() as conn:
            query = select(func.count()).select_from(events).where(events.c.run_id == run_id)
            return int(conn.execute(query).scalar() or 0)

    # --- starting a run ---------------------------------------------------------------------------

    def create_run(
        self,
        caller: Caller,
        *,
        runbook: str,
        stack: str,
        options: RunOptions | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Run:
        """Resolve the stack from the inventory, check the caller may run there, plan the
        batches and record the run; the caller owns it and holds its lease, or, where the
        approval policy says so, it waits for approval (awaiting_approval, no lease) first."""
        runbook = _name(runbook, "runbook")
        options = options or RunOptions()
        if problems := options.problems():
            raise bad_request("; ".join(problems))
        parameters = dict(parameters or {})
        if len(json.dumps(parameters, default=str)) > MAX_EVENT_DATA:
            raise bad_request(f"parameters: more than {MAX_EVENT_DATA} bytes of JSON")
        resolved = self.fleet().resolve(stack)
        rules.may_create(
            caller,
            production=resolved.production,
            stack=resolved.name,
            environment=resolved.environment,
        )
        plan = plan_batches(resolved, options)
        key = f"{runbook}\n{stack_key(resolved.name)}"
        now = self.now()
        needed = self.approval.needed(resolved.environment, resolved.production)
        try:
            with self._write() as conn:
                self._refuse_if_active(conn, key, runbook, resolved.name)
                run_id = conn.execute(
                    insert(runs).values(
                        runbook=runbook,
                        stack=resolved.name,
                        environment=resolved.environment,
                        production=resolved.production,
                        options=options.to_dict(),
                        parameters=parameters,
                        state=RunState.AWAITING_APPROVAL if needed else RunState.RUNNING,
                        owner=caller.name,
                        lease_expires_at=None
                        if needed
                        else _db(now + timedelta(seconds=self.lease_seconds)),
                        lease_seconds=self.lease_seconds,
                        approvals_needed=needed,
                        approval_round=1 if needed else 0,
                        approval_expires_at=_db(self._approval_deadline(now)) if needed else None,
                        approval_requested_by=caller.name if needed else None,
                        resume_state=RunState.RUNNING if needed else None,
                        created_by=caller.name,
                        created_at=_db(now),
                        updated_at=_db(now),
                        active_key=key,
                        last_seq=0,
                    )
                ).inserted_primary_key[0]
                self._insert_plan(conn, run_id, plan)
                count = sum(len(batch) for batch in plan)
                seq = self._record(
                    conn,
                    run_id,
                    0,
                    caller.name,
                    "start",
                    message=f"{caller.name} started {runbook} on {resolved.name} "
                    f"({resolved.environment}"
                    + (", production" if resolved.production else "")
                    + f"): {_count(len(plan), 'batch', 'batches')}, "
                    f"{_count(count, 'host', 'hosts')}",
                    data={
                        "plan": plan,
                        "environment": resolved.environment,
                        "options": options.to_dict(),
                    },
                )
                if needed:
                    self._request_approval(conn, run_id, seq, caller.name, needed, 1, plan, now)
                return self._load(conn, run_id)
        except IntegrityError:
            # Lost the race to a simultaneous start: the unique active_key let the other through.
            with self._read() as conn:
                self._refuse_if_active(conn, key, runbook, resolved.name)
            raise

    def _approval_deadline(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.approval.ttl_seconds)

    def _request_approval(
        self,
        conn: Connection,
        run_id: int,
        last_seq: int,
        actor: str,
        needed: int,
        round_: int,
        plan: Sequence[Sequence[str]],
        now: datetime,
    ) -> int:
        expires = self._approval_deadline(now)
        who = "an on-call engineer" if needed == 1 else f"{needed} on-call engineers"
        return self._record(
            conn,
            run_id,
            last_seq,
            actor,
            "approval_requested",
            message=f"{actor} asks for approval: nothing runs until {who} other than {actor} "
            f"approve{'s' if needed == 1 else ''} it, with a reason; the request expires at "
            f"{expires:%H:%M:%S} UTC",
            data={
                "needed": needed,
                "round": round_,
                "plan": [list(batch) for batch in plan],
                "expires_at": wire_time(expires),
            },
        )

    def _insert_plan(
        self, conn: Connection, run_id: int, plan: Sequence[Sequence[str]], after: int = 0
    ) -> None:
        """Batches `after`+1, `after`+2 ... with their hosts, all pending."""
        if not plan:
            return
        position = conn.execute(
            select(func.coalesce(func.max(hosts.c.position), -1)).where(hosts.c.run_id == run_id)
        ).scalar()
        conn.execute(
            insert(batches),
            [
                {"run_id": run_id, "number": after + n, "state": BatchState.PENDING, "attempts": 0}
                for n in range(1, len(plan) + 1)
            ],
        )
        members = [(after + n, h) for n, batch in enumerate(plan, start=1) for h in batch]
        conn.execute(
            insert(hosts),
            [
                {
                    "run_id": run_id,
                    "name": host,
                    "batch": number,
                    "position": position + 1 + index,
                    "state": HostState.PENDING,
                    "attempts": 0,
                }
                for index, (number, host) in enumerate(members)
            ],
        )

    def _refuse_if_active(self, conn: Connection, key: str, runbook: str, stack: str) -> None:
        row = (
            conn.execute(
                select(runs.c.id, runs.c.owner, runs.c.state).where(runs.c.active_key == key)
            )
            .mappings()
            .first()
        )
        if row:
            raise Refused(
                409,
                ErrorCode.RUN_ACTIVE,
                f"runbook {runbook} already has run {row['id']} on stack {stack} "
                f"({row['state']}, owner {row['owner']}); one run per runbook and stack at a time. "
                f"Ask {row['owner']} to hand it to you, or wait until it finishes.",
                run_id=row["id"],
            )

    # --- the owner's kernel at work ---------------------------------------------------------------

    def append_events(
        self, run_id: int, caller: Caller, incoming: Sequence[EventIn]
    ) -> AppendResult:
        if len(incoming) > MAX_EVENTS_PER_APPEND:
            raise bad_request(
                f"events: {len(incoming)} in one request; send at most {MAX_EVENTS_PER_APPEND}"
            )
        cleaned = [_clean_event(item, index) for index, item in enumerate(incoming)]
        with self._acting(run_id, caller, Action.APPEND) as (conn, row, _):
            uuids = [item["uuid"] for item in cleaned if item["uuid"]]
            known: set[str] = set()
            for start in range(0, len(uuids), 500):
                chunk = uuids[start : start + 500]
                known |= set(
                    conn.execute(
                        select(events.c.uuid).where(
                            events.c.run_id == run_id, events.c.uuid.in_(chunk)
                        )
                    ).scalars()
                )
            fresh, duplicates = [], 0
            for item in cleaned:
                if item["uuid"] and item["uuid"] in known:
                    duplicates += 1
                    continue
                if item["uuid"]:
                    known.add(item["uuid"])
                fresh.append(item)
            now = _db(self.now())
            seq = row["last_seq"]
            for item in fresh:
                seq += 1
                item.update(run_id=run_id, seq=seq, at=now, actor=caller.name)
                item["kind"] = EventKind.RUNNER.value
            if fresh:
                conn.execute(insert(events), fresh)
                self._touch(conn, run_id, seq)
                self._note_activity(conn, run_id, fresh)
            return AppendResult(stored=len(fresh), duplicates=duplicates, last_seq=seq)

    def _note_activity(self, conn: Connection, run_id: int, fresh: list[dict[str, Any]]) -> None:
        """Live progress: each host's latest task, for the status page (not its result)."""
        latest = {item["host"]: item["task"] for item in fresh if item["host"] and item["task"]}
        if latest:
            conn.execute(
                update(hosts)
                .where(hosts.c.run_id == run_id, hosts.c.name == bindparam("h"))
                .values(activity=bindparam("task")),
                [{"h": host, "task": _text(task)} for host, task in latest.items()],
            )

    def renew_lease(self, run_id: int, caller: Caller) -> LeaseGrant:
        now = self.now()
        with self._acting(run_id, caller, Action.LEASE) as (conn, row, _):
            expires = now + timedelta(seconds=self.lease_seconds)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(lease_expires_at=_db(expires), lease_seconds=self.lease_seconds)
            )
            return LeaseGrant(
                run_id=run_id,
                owner=row["owner"],
                state=RunState(row["state"]),
                lease_expires_at=wire_time(expires),
                lease_seconds=self.lease_seconds,
                handoff=_handoff(row),
            )

    def start_batch(
        self, run_id: int, caller: Caller, number: int, wanted: Sequence[str] | None = None
    ) -> Run:
        with self._acting(run_id, caller, Action.BATCH_START) as (conn, row, facts):
            states = self._batch_states(conn, run_id)
            rules.check_batch_start(facts, number, states)
            batch_hosts = self._hosts_of(conn, run_id, number)
            chosen = list(dict.fromkeys(wanted)) if wanted else list(batch_hosts)
            if not chosen:
                raise bad_request(f"hosts: name at least one host of batch {number}")
            rules.check_hosts_in_batch(number, chosen, batch_hosts)
            if (
                facts.current_batch == number
                and states[number - 1] is BatchState.RUNNING
                and all(batch_hosts[h] is HostState.RUNNING for h in chosen)
            ):
                return self._load(conn, run_id)  # the same start again: a client's retry
            # Before anything is written: no silence, no batch (the transaction is not committed).
            silence = self._set_silence(row, number, chosen, caller.name)
            try:
                seq = self._record_batch_start(conn, row, caller, number, chosen, states)
                if silence is not None:
                    seq = self._record_silence(conn, run_id, seq, number, silence)
                    again = f"batch {number} started again"
                    self._end_silences(conn, run_id, seq, again, keep=silence["silence_id"])
            except BaseException:
                if silence is not None:
                    self._forget_silence(silence["silence_id"])
                raise
            return self._load(conn, run_id)

    def _record_batch_start(
        self,
        conn: Connection,
        row: RowMapping,
        caller: Caller,
        number: int,
        chosen: list[str],
        states: list[BatchState],
    ) -> int:
        """The batch's hosts and the batch running, and its `batch_started` event (its seq)."""
        run_id = row["id"]
        now = _db(self.now())
        conn.execute(
            update(hosts)
            .where(hosts.c.run_id == run_id, hosts.c.name.in_(chosen))
            .values(
                state=HostState.RUNNING,
                attempts=hosts.c.attempts + 1,
                updated_by=caller.name,
                updated_at=now,
                message=None,
                activity=None,
            )
        )
        conn.execute(
            update(batches)
            .where(batches.c.run_id == run_id, batches.c.number == number)
            .values(
                state=BatchState.RUNNING,
                attempts=batches.c.attempts + 1,
                started_by=caller.name,
                started_at=now,
                finished_by=None,
                finished_at=None,
                gate_passed=None,
                gate_message=None,
            )
        )
        # a batch started: an approval no longer expires
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(current_batch=number, approval_expires_at=None)
        )
        again = states[number - 1] is not BatchState.PENDING
        return self._record(
            conn,
            run_id,
            row["last_seq"],
            caller.name,
            "batch_started",
            batch=number,
            message=f"{caller.name} {'re' if again else ''}started batch {number}: "
            + ", ".join(chosen),
            data={"hosts": chosen, "again": again},
        )

    def finish_batch(
        self, run_id: int, caller: Caller, number: int, results: Sequence[HostResult]
    ) -> Run:
        by_host: dict[str, HostResult] = {}
        for result in results:
            if result.host in by_host:
                raise bad_request(f"results: {result.host} is listed twice")
            by_host[result.host] = result
        with self._acting(run_id, caller, Action.BATCH_FINISH) as (conn, row, facts):
            states = self._batch_states(conn, run_id)
            batch_hosts = self._hosts_of(conn, run_id, number) if states else {}
            if (
                facts.current_batch is None
                and 1 <= number <= len(states)
                and states[number - 1] is BatchState.DONE
                and all(batch_hosts.get(h) is r.state for h, r in by_host.items())
            ):
                return self._load(conn, run_id)  # the same finish again: a client's retry
            rules.check_batch_finish(
                facts,
                number,
                len(states),
                {h: r.state for h, r in by_host.items()},
                batch_hosts,
            )
            now = _db(self.now())
            conn.execute(
                update(hosts)
                .where(hosts.c.run_id == run_id, hosts.c.name == bindparam("h"))
                .values(
                    state=bindparam("new_state"),
                    message=bindparam("new_message"),
                    updated_by=caller.name,
                    updated_at=now,
                ),
                [
                    {"h": h, "new_state": r.state.value, "new_message": _text(r.message)}
                    for h, r in by_host.items()
                ],
            )
            conn.execute(
                update(batches)
                .where(batches.c.run_id == run_id, batches.c.number == number)
                .values(state=BatchState.DONE, finished_by=caller.name, finished_at=now)
            )
            conn.execute(update(runs).where(runs.c.id == run_id).values(current_batch=None))
            counts: dict[str, int] = {}
            for result in by_host.values():
                counts[result.state.value] = counts.get(result.state.value, 0) + 1
            seq = self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "batch_finished",
                batch=number,
                message=f"{caller.name} finished batch {number}: "
                + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
                data={"results": {h: r.state.value for h, r in by_host.items()}},
            )
            self._end_silences(conn, run_id, seq, f"batch {number} finished")
            return self._load(conn, run_id)

    def record_gate(self, run_id: int, caller: Caller, number: int, report: GateReport) -> Run:
        with self._acting(run_id, caller, Action.GATE) as (conn, row, facts):
            states = self._batch_states(conn, run_id)
            state = states[number - 1] if 1 <= number <= len(states) else BatchState.PENDING
            rules.check_gate(facts, number, len(states), state)
            conn.execute(
                update(batches)
                .where(batches.c.run_id == run_id, batches.c.number == number)
                .values(gate_passed=report.passed, gate_message=_text(report.message))
            )
            verdict = "passed" if report.passed else "FAILED"
            self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "gate",
                batch=number,
                message=f"health gate of batch {number} {verdict}"
                + (f": {report.message}" if report.message else ""),
                data={
                    "passed": report.passed,
                    "details": {h: _text(m) for h, m in report.details.items()},
                },
            )
            return self._load(conn, run_id)

    # --- people -----------------------------------------------------------------------------------

    def add_note(self, run_id: int, caller: Caller, note: str) -> Event:
        if not note.strip():
            raise bad_request("text: a note needs some text")
        with self._acting(run_id, caller, Action.NOTE) as (conn, row, _):
            seq = self._record(
                conn, run_id, row["last_seq"], caller.name, "note", message=note.strip()
            )
            return _event_view(
                conn.execute(select(events).where(events.c.run_id == run_id, events.c.seq == seq))
                .mappings()
                .one()
            )

    def update_parameters(self, run_id: int, caller: Caller, parameters: dict[str, Any]) -> Run:
        """Record what the owner decided after the run started (the approved errata ...): each
        key given replaces that key of the run's parameters; the event keeps what was given."""
        parameters = dict(parameters)
        if not parameters:
            raise bad_request("parameters: nothing to record; expected at least one key")
        with self._acting(run_id, caller, Action.PARAMETERS) as (conn, row, _):
            merged = {**(row["parameters"] or {}), **parameters}
            if len(json.dumps(merged, default=str)) > MAX_EVENT_DATA:
                raise bad_request(f"parameters: more than {MAX_EVENT_DATA} bytes of JSON")
            conn.execute(update(runs).where(runs.c.id == run_id).values(parameters=merged))
            self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "parameters",
                message=f"{caller.name} recorded {', '.join(sorted(parameters))}",
                data=parameters,
            )
            return self._load(conn, run_id)

    def handoff(
        self,
        run_id: int,
        caller: Caller,
        *,
        to: str,
        note: str,
        oncall: Sequence[str],
        oncall_group: str,
    ) -> Run:
        to = to.strip()
        with self._acting(run_id, caller, Action.HANDOFF) as (conn, row, facts):
            rules.check_handoff_target(facts, to, oncall, oncall_group)
            state = rules.state_after(Action.HANDOFF, facts)
            now = _db(self.now())
            values: dict[str, Any] = {
                "state": state,
                "handoff_to": to,
                "handoff_note": _text(note.strip()),
                "handoff_by": caller.name,
                "handoff_at": now,
            }
            if state is RunState.HANDED_OFF:
                values["lease_expires_at"] = None
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            when = (
                "it waits for them"
                if state is RunState.HANDED_OFF
                else "the run pauses at the end of the batch in flight"
            )
            seq = self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "handoff",
                message=f"{caller.name} handed the run to {to}; {when}"
                + (f". Note: {note.strip()}" if note.strip() else ""),
                data={"to": to, "note": _text(note.strip())},
            )
            if state is RunState.HANDED_OFF:  # paused: no batch of it runs now
                self._end_silences(conn, run_id, seq, f"the run was handed off to {to}")
            return self._load(conn, run_id)

    def pause(self, run_id: int, caller: Caller) -> Run:
        with self._acting(run_id, caller, Action.PAUSE) as (conn, row, facts):
            if facts.state is not RunState.RUNNING:
                return self._load(conn, run_id)  # already paused: a client's retry
            current = (
                self._batch_states(conn, run_id)[facts.current_batch - 1]
                if facts.current_batch
                else None
            )
            rules.check_pause(facts, current)
            state = rules.state_after(Action.PAUSE, facts)
            conn.execute(
                update(runs).where(runs.c.id == run_id).values(state=state, lease_expires_at=None)
            )
            message = (
                f"{caller.name} paused the run for {facts.handoff_to} to accept"
                if state is RunState.HANDED_OFF
                else f"{caller.name} paused the run"
            )
            seq = self._record(conn, run_id, row["last_seq"], caller.name, "pause", message=message)
            self._end_silences(conn, run_id, seq, f"{caller.name} paused the run")
            return self._load(conn, run_id)

    def accept(self, run_id: int, caller: Caller) -> Run:
        now = self.now()
        fleet = self.fleet()  # before the lock: reading the inventory may take a second
        with self._acting(run_id, caller, Action.ACCEPT) as (conn, row, facts):
            if facts.handoff_to is None:
                return self._load(conn, run_id)  # accepted already: a client's retry
            self._refuse_if_plan_changed(conn, row, fleet, Action.ACCEPT)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    state=RunState.RUNNING,
                    owner=caller.name,
                    lease_expires_at=_db(now + timedelta(seconds=self.lease_seconds)),
                    **_NO_HANDOFF,
                )
            )
            self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "accept",
                message=f"{caller.name} accepted the run from {facts.owner}",
                data={"from": facts.owner, "note": row["handoff_note"]},
            )
            return self._load(conn, run_id)

    def takeover(self, run_id: int, caller: Caller, reason: str) -> Run:
        reason = rules.require_reason(reason, Action.TAKEOVER)
        now = self.now()
        fleet = self.fleet()
        with self._acting(run_id, caller, Action.TAKEOVER) as (conn, row, facts):
            self._refuse_if_plan_changed(conn, row, fleet, Action.TAKEOVER)
            doubtful = self._interrupt(conn, run_id, facts, caller.name, keep_current=True)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    state=RunState.RUNNING,
                    owner=caller.name,
                    lease_expires_at=_db(now + timedelta(seconds=self.lease_seconds)),
                    **_NO_HANDOFF,
                )
            )
            in_doubt = f"; in doubt: {', '.join(doubtful)}" if doubtful else ""
            seq = self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "takeover",
                batch=facts.current_batch,
                message=f"{caller.name} took over the run from {facts.owner}: {reason}{in_doubt}",
                data={"from": facts.owner, "reason": _text(reason), "in_doubt": doubtful},
            )
            why = f"{caller.name} took the run over from {facts.owner}"
            self._end_silences(conn, run_id, seq, why)
            return self._load(conn, run_id)

    def replan(self, run_id: int, caller: Caller, reason: str) -> Run:
        """Plan the batches not yet done again from the inventory as it is now, with the run's
        options; the batches done stay as they were. The ledger records both plans and why.
        A run whose (new) environment needs approval asks for it again: a changed plan needs a
        new approval, so the run waits (awaiting_approval) and the earlier approvals no longer
        count; once approved it is back in the state it was in."""
        reason = rules.require_reason(reason, Action.REPLAN)
        fleet = self.fleet()
        now = self.now()
        with self._acting(run_id, caller, Action.REPLAN) as (conn, row, facts):
            stack = fleet.resolve(row["stack"])
            if stack.production:
                rules.require(
                    caller,
                    SCOPE_PRODUCTION,
                    f"re-plan run {run_id}: {stack.name} is now in {stack.environment}, a "
                    "production environment",
                )
            states = self._batch_states(conn, run_id)
            done = [n for n, state in enumerate(states, start=1) if state is BatchState.DONE]
            kept = len(done) if done == list(range(1, len(done) + 1)) else 0
            before = self._remaining(conn, run_id)
            finished_hosts = [
                name
                for name, batch in conn.execute(
                    select(hosts.c.name, hosts.c.batch).where(hosts.c.run_id == run_id)
                )
                if batch <= kept
            ]
            options = RunOptions.from_dict(row["options"] or {})
            limited = bool(options.limit)  # a limit keeps only its hosts still in the stack
            options = replace(options, limit=[h for h in options.limit if h in stack.hosts])
            plan = (
                []
                if limited and not options.limit
                else plan_batches(stack, options, skip=finished_hosts)
            )
            conn.execute(delete(hosts).where(hosts.c.run_id == run_id, hosts.c.batch > kept))
            conn.execute(delete(batches).where(batches.c.run_id == run_id, batches.c.number > kept))
            self._insert_plan(conn, run_id, plan, after=kept)
            needed = self.approval.needed(stack.environment, stack.production)
            approval: dict[str, Any] = {"approvals_needed": needed, "approval_expires_at": None}
            if needed:
                approval.update(
                    state=RunState.AWAITING_APPROVAL,
                    resume_state=facts.state,
                    lease_expires_at=None,
                    approval_round=(row["approval_round"] or 0) + 1,
                    approval_expires_at=_db(self._approval_deadline(now)),
                    approval_requested_by=caller.name,
                )
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    environment=stack.environment,
                    production=stack.production,
                    options=options.to_dict(),
                    current_batch=None,
                    **approval,
                )
            )
            seq = self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "replan",
                message=f"{caller.name} re-planned the run from the inventory: {reason}. "
                f"Batches {kept + 1}+ were {_plan_text(before)}; now {_plan_text(plan)} "
                f"({stack.environment})",
                data={
                    "reason": _text(reason),
                    "before": before,
                    "after": plan,
                    "environment": stack.environment,
                    "was_environment": row["environment"],
                },
            )
            if needed:
                round_ = approval["approval_round"]
                self._request_approval(conn, run_id, seq, caller.name, needed, round_, plan, now)
            return self._load(conn, run_id)

    def _remaining(self, conn: Connection, run_id: int) -> list[list[str]]:
        """The hosts of the batches not done, batch by batch."""
        query = (
            select(hosts.c.name, hosts.c.batch)
            .join(
                batches,
                (batches.c.run_id == hosts.c.run_id) & (batches.c.number == hosts.c.batch),
            )
            .where(hosts.c.run_id == run_id, batches.c.state != BatchState.DONE)
            .order_by(hosts.c.batch, hosts.c.position)
        )
        plan: dict[int, list[str]] = {}
        for name, batch in conn.execute(query):
            plan.setdefault(batch, []).append(name)
        return list(plan.values())

    def _refuse_if_plan_changed(
        self, conn: Connection, row: RowMapping, fleet: Fleet, action: Action
    ) -> None:
        """Accept and takeover go on with the ledger's plan only while the inventory still
        agrees with it: the same environment, and every host left to patch still in the stack."""
        changes = _plan_changes(row, self._remaining(conn, row["id"]), fleet)
        verb = "accepted" if action is Action.ACCEPT else "taken over"
        if changes:
            raise Refused(
                409,
                ErrorCode.PLAN_CHANGED,
                f"run {row['id']} cannot be {verb}: the inventory changed since it was planned "
                f"({'; '.join(changes)}). Abort it, or re-plan its remaining batches from the "
                f"inventory (POST api/runs/{row['id']}/replan with a reason; the ledger records "
                "both plans), then try again.",
                run_id=row["id"],
            )

    def resume(self, run_id: int, caller: Caller) -> Run:
        now = self.now()
        with self._acting(run_id, caller, Action.RESUME) as (conn, row, facts):
            lease = _db(now + timedelta(seconds=self.lease_seconds))
            if facts.state is RunState.RUNNING:
                conn.execute(update(runs).where(runs.c.id == run_id).values(lease_expires_at=lease))
                return self._load(conn, run_id)  # running already: a client's retry
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(state=RunState.RUNNING, lease_expires_at=lease, **_NO_HANDOFF)
            )
            seq = row["last_seq"]
            if facts.handoff_to:
                seq = self._record(
                    conn,
                    run_id,
                    seq,
                    caller.name,
                    "handoff_cancelled",
                    message=f"{caller.name} cancelled the handoff to {facts.handoff_to}",
                )
            self._record(conn, run_id, seq, caller.name, "resume", message=f"{caller.name} resumed")
            return self._load(conn, run_id)

    def finish(self, run_id: int, caller: Caller, outcome: RunState, summary: str) -> Run:
        with self._acting(run_id, caller, Action.FINISH) as (conn, row, facts):
            rules.check_finish(
                facts,
                outcome,
                self._batch_states(conn, run_id),
                self._host_states(conn, run_id),
            )
            doubtful = self._interrupt(conn, run_id, facts, caller.name, keep_current=False)
            self._close(conn, run_id, outcome, summary)
            in_doubt = f"; in doubt: {', '.join(doubtful)}" if doubtful else ""
            seq = self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "finish",
                message=f"{caller.name} finished the run: {outcome.value}"
                + (f": {summary.strip()}" if summary.strip() else "")
                + in_doubt,
                data={"outcome": outcome.value, "in_doubt": doubtful},
            )
            self._end_silences(conn, run_id, seq, f"the run was finished ({outcome.value})")
            return self._load(conn, run_id)

    def abort(self, run_id: int, caller: Caller, reason: str) -> Run:
        reason = rules.require_reason(reason, Action.ABORT)
        with self._acting(run_id, caller, Action.ABORT) as (conn, row, facts):
            doubtful = self._interrupt(conn, run_id, facts, caller.name, keep_current=False)
            self._close(conn, run_id, RunState.ABORTED, reason)
            in_doubt = f"; in doubt: {', '.join(doubtful)}" if doubtful else ""
            seq = self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "abort",
                message=f"{caller.name} aborted the run: {reason}{in_doubt}",
                data={"reason": _text(reason), "in_doubt": doubtful},
            )
            self._end_silences(conn, run_id, seq, f"{caller.name} aborted the run")
            return self._load(conn, run_id)

    # --- approvals --------------------------------------------------------------------------------

    def approve(
        self,
        run_id: int,
        caller: Caller,
        reason: str,
        *,
        oncall: Sequence[str] | None = None,
        oncall_group: str = "oncall",
    ) -> Run:
        """Approve a run awaiting approval (rules.check_decision says who may). Once enough
        distinct approvers did, the run goes on: running, its owner holding the lease from now
        (or, after a re-plan, back in the state it was in), and the approval expires if no
        batch starts within the approval TTL. The same approver again is a harmless repeat."""
        return self._decide(Action.APPROVE, run_id, caller, reason, oncall, oncall_group)

    def reject(
        self,
        run_id: int,
        caller: Caller,
        reason: str,
        *,
        oncall: Sequence[str] | None = None,
        oncall_group: str = "oncall",
    ) -> Run:
        """Reject a run awaiting approval: it ends `rejected`, the reason as its summary."""
        return self._decide(Action.REJECT, run_id, caller, reason, oncall, oncall_group)

    def _decide(
        self,
        action: Action,
        run_id: int,
        caller: Caller,
        reason: str,
        oncall: Sequence[str] | None,
        oncall_group: str,
    ) -> Run:
        reason = _text(reason.strip()) or ""
        now = self.now()
        with self._write() as conn:
            row = self._lock(conn, run_id)
            facts = _facts(row)
            decided = self._approvers(conn, run_id, row["approval_round"] or 0)
            if not rules.check_decision(
                action,
                facts,
                caller,
                now=now,
                reason=reason,
                decided=decided,
                oncall=oncall,
                group=oncall_group,
            ):
                return self._load(conn, run_id)  # approved by them already: counted once
            round_ = row["approval_round"] or 0
            conn.execute(
                insert(approvals).values(
                    run_id=run_id,
                    round=round_,
                    approver=caller.name,
                    decision=action.value,
                    reason=reason,
                    at=_db(now),
                )
            )
            needed = row["approvals_needed"] or 0
            if action is Action.REJECT:
                self._close(conn, run_id, RunState.REJECTED, f"rejected by {caller.name}: {reason}")
                self._record(
                    conn,
                    run_id,
                    row["last_seq"],
                    caller.name,
                    "rejected",
                    message=f"{caller.name} rejected the run: {reason}",
                    data={"reason": reason, "round": round_},
                )
                return self._load(conn, run_id)
            count = len(decided | {caller.name})
            done = count >= needed
            values: dict[str, Any] = {}
            if done:
                state = RunState(row["resume_state"] or RunState.RUNNING)
                values = {
                    "state": state,
                    "resume_state": None,
                    "approval_expires_at": _db(self._approval_deadline(now)),
                }
                if state is RunState.RUNNING:
                    values["lease_expires_at"] = _db(now + timedelta(seconds=self.lease_seconds))
                conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
            goes_on = ""
            if done:
                until = f"{self._approval_deadline(now):%H:%M:%S} UTC"
                goes_on = (
                    f"; approved: {row['owner']} holds its lease, and the approval expires at "
                    f"{until} unless a batch has started"
                    if values["state"] is RunState.RUNNING
                    else f"; approved: it is {values['state'].value} again"
                )
            self._record(
                conn,
                run_id,
                row["last_seq"],
                caller.name,
                "approved",
                message=f"{caller.name} approved the run ({count} of {needed}): {reason}{goes_on}",
                data={
                    "reason": reason,
                    "round": round_,
                    "approvals": count,
                    "needed": needed,
                    "complete": done,
                },
            )
            return self._load(conn, run_id)

    def _approvers(self, conn: Connection, run_id: int, round_: int) -> set[str]:
        query = select(approvals.c.approver).where(
            approvals.c.run_id == run_id,
            approvals.c.round == round_,
            approvals.c.decision == ApprovalDecisionKind.APPROVE.value,
        )
        return set(conn.execute(query).scalars())

    def expire_approvals(self) -> list[Run]:
        """Runs whose approval request went undecided, or whose approval was not followed by a
        batch, for longer than the approval TTL: aborted by the service; returns them."""
        now = self.now()
        with self._read() as conn:
            due = list(
                conn.execute(
                    select(runs.c.id).where(
                        runs.c.active_key.is_not(None),
                        runs.c.approval_expires_at.is_not(None),
                        runs.c.approval_expires_at <= _db(now),
                    )
                ).scalars()
            )
        expired_runs = []
        for run_id in due:
            with self._write() as conn:
                row = self._lock(conn, run_id)
                expired = _aware(row["approval_expires_at"])
                if RunState(row["state"]) in FINISHED_STATES or expired is None or expired > now:
                    continue  # decided, started or finished meanwhile
                undecided = row["state"] == RunState.AWAITING_APPROVAL
                count = len(self._approvers(conn, run_id, row["approval_round"] or 0))
                why = (
                    f"nobody decided in time ({count} of {row['approvals_needed']} approvals)"
                    if undecided
                    else "the run did not start a batch in time after its approval"
                )
                summary = f"approval expired at {expired:%H:%M:%S} UTC"
                doubtful = self._interrupt(
                    conn, run_id, _facts(row), SYSTEM_ACTOR, keep_current=False
                )
                self._close(conn, run_id, RunState.ABORTED, summary, keep_approval_expiry=True)
                self._record(
                    conn,
                    run_id,
                    row["last_seq"],
                    SYSTEM_ACTOR,
                    "approval_expired",
                    kind=EventKind.SYSTEM,
                    message=f"{summary}: {why}; the run is aborted. Start it again to ask anew.",
                    data={
                        "expired_at": wire_time(expired),
                        "undecided": undecided,
                        "approvals": count,
                        "in_doubt": doubtful,
                    },
                )
                expired_runs.append(self._load(conn, run_id))
        return expired_runs

    # --- the service itself -----------------------------------------------------------------------

    def expire_leases(self) -> list[Run]:
        """Runs whose owner stopped renewing become orphaned; returns them (to notify)."""
        now = self.now()
        with self._read() as conn:
            due = conn.execute(
                select(runs.c.id).where(
                    runs.c.state == RunState.RUNNING, runs.c.lease_expires_at < _db(now)
                )
            ).scalars()
            due = list(due)
        orphaned = []
        for run_id in due:
            with self._write() as conn:
                row = self._lock(conn, run_id)
                expired = _aware(row["lease_expires_at"])
                if row["state"] != RunState.RUNNING or expired is None or expired >= now:
                    continue  # renewed meanwhile
                conn.execute(
                    update(runs).where(runs.c.id == run_id).values(state=RunState.ORPHANED)
                )
                batch = row["current_batch"]
                seq = self._record(
                    conn,
                    run_id,
                    row["last_seq"],
                    SYSTEM_ACTOR,
                    "lease_expired",
                    kind=EventKind.SYSTEM,
                    batch=batch,
                    message=f"{row['owner']}'s lease ran out at {expired:%H:%M:%S} UTC: the run "
                    "is orphaned"
                    + (f"; hosts of batch {batch} without a result are in doubt" if batch else "")
                    + ". An on-call engineer can take it over.",
                    data={"owner": row["owner"], "lease_expired_at": wire_time(expired)},
                )
                self._end_silences(conn, run_id, seq, f"{row['owner']}'s lease ran out")
                orphaned.append(self._load(conn, run_id))
        return orphaned

    def extend_leases_after_restart(self) -> int:
        """At start-up: no kernel could renew while the service was down, so every running run
        gets a full lease from now instead of being orphaned by the first sweep."""
        now = self.now()
        renewed = _db(now + timedelta(seconds=self.lease_seconds))
        with self._write() as conn:
            result = conn.execute(
                update(runs)
                .where(runs.c.state == RunState.RUNNING, runs.c.lease_expires_at < renewed)
                .values(lease_expires_at=renewed)
            )
            return result.rowcount or 0

    # --- silences (opsbook.service.silences) ------------------------------------------------------

    def _set_silence(
        self, row: RowMapping, number: int, chosen: Sequence[str], actor: str
    ) -> dict[str, Any] | None:
        """Silence exactly `chosen`'s exporter instances in Alertmanager, for at most the batch's
        ceiling; None for a check-mode run (nothing changes, so nothing will alert, and a
        silence would only hide real alerts). Fail closed: no silence, no batch (503 naming
        Alertmanager's setting; nothing is recorded and no host is touched)."""
        options = RunOptions.from_dict(row["options"] or {})
        if options.check_mode:
            return None
        instances = self._fleet_for_silences().instances(chosen)
        now = self.now()
        ends = now + ceiling(options.gate_timeout)
        hosts_text = ", ".join(chosen)
        body = silence_body(
            instances.values(),
            starts_at=now,
            ends_at=ends,
            created_by=actor,
            comment=f"opsbook run {row['id']} ({row['runbook']} of {row['stack']}), batch "
            f"{number}: {hosts_text}. Set by the runs service; expired when the batch ends.",
        )
        try:
            silence_id = self.alertmanager.create(body)
        except SilenceError as error:
            raise Refused(
                503,
                ErrorCode.UNAVAILABLE,
                f"batch {number} of run {row['id']} did not start: its hosts ({hosts_text}) "
                f"could not be silenced: {error}. Nothing was recorded and no host was touched; "
                f"start the batch again once Alertmanager answers (the runs service reaches it "
                f"at {ALERTMANAGER_SETTING}={self.alertmanager.url}).",
                run_id=row["id"],
            ) from None
        return {
            "silence_id": silence_id,
            "hosts": list(chosen),
            "instances": [instances[host] for host in chosen],
            "set_by": actor,
            "set_at": now,
            "ends_at": ends,
        }

    def fleet(self) -> Fleet:
        """The inventory's stacks now (Refused, 503, while it cannot be read)."""
        self._last_fleet = self._read_fleet()
        return self._last_fleet

    def _fleet_for_silences(self) -> Fleet:
        """The inventory now, or, while it cannot be read, as last read: the runs already under
        way go on (the README's promise), silenced as their hosts' exporters were last known.
        Not read since the start: refused (503) naming the inventory."""
        try:
            return self.fleet()
        except Refused:
            if self._last_fleet is None:
                raise
            return self._last_fleet

    def _record_silence(
        self, conn: Connection, run_id: int, last_seq: int, number: int, silence: dict[str, Any]
    ) -> int:
        """The silence in the ledger: its row, and the run's `silence_set` event (its seq)."""
        conn.execute(
            insert(silences).values(
                run_id=run_id,
                batch=number,
                silence_id=silence["silence_id"],
                hosts=silence["hosts"],
                instances=silence["instances"],
                set_by=silence["set_by"],
                set_at=_db(silence["set_at"]),
                ends_at=_db(silence["ends_at"]),
                expire_attempts=0,
            )
        )
        return self._record(
            conn,
            run_id,
            last_seq,
            SYSTEM_ACTOR,
            "silence_set",
            kind=EventKind.SYSTEM,
            batch=number,
            message=f"silenced {', '.join(silence['instances'])} in Alertmanager for batch "
            f"{number} (silence {silence['silence_id']}, until the batch ends, at the latest "
            f"{silence['ends_at']:%H:%M:%S} UTC)",
            data={
                "silence_id": silence["silence_id"],
                "hosts": silence["hosts"],
                "instances": silence["instances"],
                "ends_at": wire_time(silence["ends_at"]),
            },
        )

    def _forget_silence(self, silence_id: str) -> None:
        """A silence set for a batch start that was then not recorded: expire it again."""
        try:
            self.alertmanager.expire(silence_id)
        except SilenceError as error:
            log.error("silence %s of a failed batch start is left in place: %s", silence_id, error)

    def _end_silences(
        self, conn: Connection, run_id: int, last_seq: int, why: str, *, keep: str | None = None
    ) -> int:
        """Expire every silence of the run still in force (but `keep`), recording each: the
        batch ended, the run changed hands or stopped. A failure does not stop the action: it is
        recorded, and the sweeper tries again. Returns the run's last seq."""
        query = select(silences).where(silences.c.run_id == run_id, silences.c.expired_at.is_(None))
        for silence in conn.execute(query.order_by(silences.c.id)).mappings().all():
            if silence["silence_id"] != keep:
                last_seq, _ = self._expire_silence(conn, silence, last_seq, why)
        return last_seq

    def _expire_silence(
        self, conn: Connection, silence: RowMapping, last_seq: int, why: str
    ) -> tuple[int, bool]:
        """Expire one silence and record it (or its first failure); the run's last seq, and
        whether it is expired now."""
        why = silence["expire_why"] or why  # a retry keeps the reason it was first ended for
        attempts = silence["expire_attempts"] + 1
        what = f"silence {silence['silence_id']} of batch {silence['batch']} "
        what += f"({', '.join(silence['hosts'])})"
        try:
            self.alertmanager.expire(silence["silence_id"])
        except SilenceError as error:
            conn.execute(
                update(silences)
                .where(silences.c.id == silence["id"])
                .values(expire_why=why, expire_attempts=attempts, expire_error=_text(str(error)))
            )
            if attempts > 1:
                return last_seq, False  # recorded at the first failure; the row has the latest
            lapses = _aware(silence["ends_at"])
            seq = self._record(
                conn,
                silence["run_id"],
                last_seq,
                SYSTEM_ACTOR,
                "silence_expire_failed",
                kind=EventKind.SYSTEM,
                batch=silence["batch"],
                message=f"{what} could not be expired ({why}): {error}. The runs service tries "
                f"again every sweep; at the latest it lapses at {lapses:%H:%M:%S} UTC",
                data={"silence_id": silence["silence_id"], "why": why, "error": str(error)},
            )
            return seq, False
        conn.execute(
            update(silences)
            .where(silences.c.id == silence["id"])
            .values(
                expired_at=_db(self.now()),
                expire_why=why,
                expire_attempts=attempts,
                expire_error=None,
            )
        )
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        seq = self._record(
            conn,
            silence["run_id"],
            last_seq,
            SYSTEM_ACTOR,
            "silence_expired",
            kind=EventKind.SYSTEM,
            batch=silence["batch"],
            message=f"{what} expired: {why}{tries}",
            data={"silence_id": silence["silence_id"], "why": why, "attempts": attempts},
        )
        return seq, True

    def sweep_silences(self) -> int:
        """Expire the silences still in force whose batch is no longer in flight: those whose
        expiry failed before (tried again, with their first reason), and leftovers (the service
        stopped between setting one and its batch's end). Called by the sweeper and once at
        start-up. Returns how many were expired."""
        with self._read() as conn:
            due = sorted(
                set(
                    conn.execute(
                        select(silences.c.run_id).where(silences.c.expired_at.is_(None))
                    ).scalars()
                )
            )
        expired = 0
        for run_id in due:
            with self._write() as conn:
                row = self._lock(conn, run_id)
                query = select(silences).where(
                    silences.c.run_id == run_id, silences.c.expired_at.is_(None)
                )
                seq = row["last_seq"]
                for silence in conn.execute(query.order_by(silences.c.id)).mappings().all():
                    in_flight = (
                        row["state"] == RunState.RUNNING
                        and row["current_batch"] == silence["batch"]
                        and silence["expire_why"] is None
                    )
                    if in_flight:
                        continue
                    why = f"its batch is no longer in flight (the run is {row['state']})"
                    seq, done = self._expire_silence(conn, silence, seq, why)
                    expired += done
        return expired

    # --- SSH certificates -------------------------------------------------------------------------

    def issue_certificate(
        self,
        caller: Caller,
        public_key: str,
        run_id: int | None = None,
        *,
        ca: CertificateAuthority,
    ) -> Certificate:
        """Sign the caller's public key with the principals the rules give them (ssh_ca's module
        docstring says which); record it in the ledger and, for a run, as its `certificate` event.
        With `run_id`, the run's row is locked while it is checked and the event written, so a
        takeover or an expiring lease at the same moment is seen one way or the other."""
        rules.may_get_certificate(caller)
        user_key = check_public_key(public_key)
        if run_id is not None and not 0 < run_id <= 2**31 - 1:
            raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run {run_id}", run_id=run_id)
        fleet = self.fleet()
        with self._write() as conn:
            row = None
            environment = None
            if run_id is not None:
                row = self._lock(conn, run_id)
                rules.check_certificate_run(_facts(row), caller, self.now())
                environment = row["environment"]
            now = self.now()
            issued = ca.sign(
                user_key,
                key_id=key_id(caller.name, run_id),
                principals=principals(fleet, environment),
                now=now,
            )
            conn.execute(
                insert(certificates).values(
                    serial=issued.serial,
                    key_id=issued.key_id,
                    user=caller.name,
                    run_id=run_id,
                    principals=list(issued.principals),
                    fingerprint=user_key.fingerprint,
                    valid_after=_db(issued.valid_after),
                    valid_before=_db(issued.valid_before),
                    issued_at=_db(now),
                )
            )
            if row is not None:
                until = issued.valid_before
                self._record(
                    conn,
                    row["id"],
                    row["last_seq"],
                    caller.name,
                    "certificate",
                    message=f"SSH certificate for {caller.name}: {', '.join(issued.principals)}, "
                    f"serial {issued.serial}, valid until {until:%H:%M:%S} UTC",
                    data={
                        "serial": issued.serial,
                        "key_id": issued.key_id,
                        "principals": list(issued.principals),
                        "valid_before": wire_time(until),
                        "fingerprint": user_key.fingerprint,
                    },
                )
        log.info(
            "SSH certificate serial %d %s for %s (%s): %s until %s",
            issued.serial,
            issued.key_id,
            caller.name,
            user_key.fingerprint,
            ",".join(issued.principals),
            wire_time(issued.valid_before),
        )
        return Certificate(
            certificate=issued.certificate,
            key_id=issued.key_id,
            serial=issued.serial,
            principals=list(issued.principals),
            valid_after=wire_time(issued.valid_after),
            valid_before=wire_time(issued.valid_before),
        )

    def certificates(
        self, *, user: str | None = None, run_id: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The latest recorded certificates (newest first), for audits and tests."""
        query = select(certificates)
        if user is not None:
            query = query.where(certificates.c.user == user)
        if run_id is not None:
            query = query.where(certificates.c.run_id == run_id)
        query = query.order_by(certificates.c.issued_at.desc()).limit(max(1, min(limit, MAX_PAGE)))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {
                **row,
                "valid_after": _aware(row["valid_after"]),
                "valid_before": _aware(row["valid_before"]),
                "issued_at": _aware(row["issued_at"]),
            }
            for row in rows
        ]

    # --- errata promotions ------------------------------------------------------------------------

    def check_promotion(
        self, caller: Caller, environment: str, pairs: Sequence[tuple[str, str]], run_id: int | None
    ) -> None:
        """Whether `caller` may promote `pairs` into `environment` now (rules.check_promotion);
        Refused if not. The environment must be one of the inventory's; whether it is production
        is decided here, from the setting, never from the caller."""
        rules.require(caller, SCOPE_WRITE, f"promote errata into {environment}")
        check_pairs(environment, pairs)
        fleet = self.fleet()
        known = sorted({stack.environment for stack in fleet.stacks.values() if stack.environment})
        if environment not in known:
            raise bad_request(
                f"environment: no environment {environment!r} in the inventory; its "
                f"environments: {', '.join(known) or 'none'}"
            )
        production = is_production(environment, fleet.nonproduction)
        if run_id is not None and not 0 < run_id <= 2**31 - 1:
            raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run {run_id}", run_id=run_id)
        with self._read() as conn:
            row = self._row(conn, run_id) if run_id is not None else None
        rules.check_promotion(
            caller,
            environment=environment,
            production=production,
            run=_facts(row) if row is not None else None,
            run_environment=row["environment"] if row is not None else None,
            now=self.now(),
        )

    def record_promotion(
        self,
        caller: Caller,
        environment: str,
        outcome: Outcome,
        *,
        run_id: int | None = None,
        reason: str = "",
    ) -> Promotion:
        """Record a promotion the repository confirmed, and with a run, its `errata_promoted`
        event (the run's row locked, as for every event). Recorded even if the run changed since
        the check: the suite did change, and the ledger says what happened."""
        now = self.now()
        promoted = [{"package": p, "version": v} for p, v in outcome.promoted]
        unchanged = [{"package": p, "version": v} for p, v in outcome.unchanged]
        with self._write() as conn:
            row = self._lock(conn, run_id) if run_id is not None else None
            new_id = conn.execute(
                insert(promotions).values(
                    environment=environment,
                    promoted=promoted,
                    unchanged=unchanged,
                    by=caller.name,
                    at=_db(now),
                    run_id=run_id,
                    reason=_text(reason.strip()) or None,
                )
            ).inserted_primary_key[0]
            if row is not None:
                listed = ", ".join(f"{p}={v}" for p, v in outcome.promoted) or "nothing new"
                self._record(
                    conn,
                    row["id"],
                    row["last_seq"],
                    caller.name,
                    "errata_promoted",
                    message=f"errata promoted into {environment}: {listed}"
                    + (
                        f" (already there: {', '.join(f'{p}={v}' for p, v in outcome.unchanged)})"
                        if outcome.unchanged
                        else ""
                    ),
                    data={
                        "promotion": new_id,
                        "environment": environment,
                        "promoted": promoted,
                        "unchanged": unchanged,
                    },
                )
        log.info(
            "promotion %d into %s by %s (run %s): promoted %s; unchanged %s",
            new_id,
            environment,
            caller.name,
            run_id if run_id is not None else "-",
            ",".join(f"{p}={v}" for p, v in outcome.promoted) or "-",
            ",".join(f"{p}={v}" for p, v in outcome.unchanged) or "-",
        )
        return self.promotions(promotion_id=new_id)[0]

    def promotions(
        self,
        *,
        environment: str | None = None,
        run_id: int | None = None,
        promotion_id: int | None = None,
        limit: int = 100,
    ) -> list[Promotion]:
        """The recorded promotions, newest first."""
        query = select(promotions)
        if environment is not None:
            query = query.where(promotions.c.environment == environment)
        if run_id is not None:
            query = query.where(promotions.c.run_id == run_id)
        if promotion_id is not None:
            query = query.where(promotions.c.id == promotion_id)
        query = query.order_by(promotions.c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Promotion(
                id=row["id"],
                environment=row["environment"],
                promoted=[ErratumVersion(**item) for item in row["promoted"]],
                unchanged=[ErratumVersion(**item) for item in row["unchanged"]],
                by=row["by"],
                at=_wire(row["at"]) or "",
                run_id=row["run_id"],
                reason=row["reason"] or "",
            )
            for row in rows
        ]

    # --- helpers ----------------------------------------------------------------------------------

    def _row(self, conn: Connection, run_id: int) -> RowMapping:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run {run_id}", run_id=run_id)
        return row

    @contextmanager
    def _acting(
        self, run_id: int, caller: Caller, action: Action
    ) -> Iterator[tuple[Connection, RowMapping, RunFacts]]:
        """One action on a run: its row locked, the caller checked, in one transaction."""
        with self._write() as conn:
            row = self._lock(conn, run_id)
            facts = _facts(row)
            rules.authorize(action, facts, caller)
            yield conn, row, facts

    def _lock(self, conn: Connection, run_id: int) -> RowMapping:
        row = (
            conn.execute(select(runs).where(runs.c.id == run_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run {run_id}", run_id=run_id)
        return row

    def _require_run(self, conn: Connection, run_id: int) -> None:
        if conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
            raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run {run_id}", run_id=run_id)

    def _batch_states(self, conn: Connection, run_id: int) -> list[BatchState]:
        query = select(batches.c.state).where(batches.c.run_id == run_id).order_by(batches.c.number)
        return [BatchState(state) for state in conn.execute(query).scalars()]

    def _hosts_of(self, conn: Connection, run_id: int, number: int) -> dict[str, HostState]:
        query = (
            select(hosts.c.name, hosts.c.state)
            .where(hosts.c.run_id == run_id, hosts.c.batch == number)
            .order_by(hosts.c.position)
        )
        return {name: HostState(state) for name, state in conn.execute(query)}

    def _host_states(self, conn: Connection, run_id: int) -> dict[str, HostState]:
        query = select(hosts.c.name, hosts.c.state).where(hosts.c.run_id == run_id)
        return {name: HostState(state) for name, state in conn.execute(query)}

    def _interrupt(
        self, conn: Connection, run_id: int, facts: RunFacts, actor: str, *, keep_current: bool
    ) -> list[str]:
        """The batch in flight lost its runner: its running hosts become in doubt."""
        if facts.current_batch is None:
            return []
        query = (
            select(hosts.c.name)
            .where(hosts.c.run_id == run_id, hosts.c.state == HostState.RUNNING)
            .order_by(hosts.c.position)
        )
        doubtful = list(conn.execute(query).scalars())
        if doubtful:
            conn.execute(
                update(hosts)
                .where(hosts.c.run_id == run_id, hosts.c.name.in_(doubtful))
                .values(
                    state=HostState.IN_DOUBT,
                    message="its batch was interrupted before its result was recorded",
                    updated_by=actor,
                    updated_at=_db(self.now()),
                )
            )
        conn.execute(
            update(batches)
            .where(batches.c.run_id == run_id, batches.c.number == facts.current_batch)
            .values(state=BatchState.INTERRUPTED)
        )
        if not keep_current:
            conn.execute(update(runs).where(runs.c.id == run_id).values(current_batch=None))
        return doubtful

    def _close(
        self,
        conn: Connection,
        run_id: int,
        state: RunState,
        summary: str,
        *,
        keep_approval_expiry: bool = False,
    ) -> None:
        now = _db(self.now())
        expiry = {} if keep_approval_expiry else {"approval_expires_at": None}
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(
                state=state,
                finished_at=now,
                summary=_text(summary.strip()) or None,
                active_key=None,
                lease_expires_at=None,
                current_batch=None,
                resume_state=None,
                **expiry,
                **_NO_HANDOFF,
            )
        )

    def _record(
        self,
        conn: Connection,
        run_id: int,
        last_seq: int,
        actor: str,
        type_: str,
        *,
        kind: EventKind = EventKind.HUMAN,
        batch: int | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> int:
        """Append one human or system event; returns its seq (the run's new last_seq)."""
        seq = last_seq + 1
        row = {
            "run_id": run_id,
            "seq": seq,
            "at": _db(self.now()),
            "actor": actor,
            "kind": kind.value,
            "type": type_,
            "batch": batch,
            "host": None,
            "task": None,
            "uuid": None,
            "message": _text(message),
            "data": data or {},
            "client_at": None,
        }
        conn.execute(insert(events).values(**row))
        self._touch(conn, run_id, seq)
        collected = getattr(self._journal, "events", None)
        if collected is not None:
            collected.append(_event_view(row))
        return seq

    def _touch(self, conn: Connection, run_id: int, last_seq: int) -> None:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(last_seq=last_seq, updated_at=_db(self.now()))
        )

    def _load(self, conn: Connection, run_id: int) -> Run:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise Refused(404, ErrorCode.NOT_FOUND, f"there is no run {run_id}", run_id=run_id)
        return self._views(conn, [row])[0]

    def _views(self, conn: Connection, rows: Sequence[RowMapping]) -> list[Run]:
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        batch_rows: dict[int, list[RowMapping]] = {run_id: [] for run_id in ids}
        host_rows: dict[int, list[RowMapping]] = {run_id: [] for run_id in ids}
        query = select(batches).where(batches.c.run_id.in_(ids)).order_by(batches.c.number)
        for batch in conn.execute(query).mappings():
            batch_rows[batch["run_id"]].append(batch)
        query = select(hosts).where(hosts.c.run_id.in_(ids)).order_by(hosts.c.position)
        for host in conn.execute(query).mappings():
            host_rows[host["run_id"]].append(host)
        last_silence: dict[tuple[int, int], RowMapping] = {}  # (run, batch): its last attempt's
        query = select(silences).where(silences.c.run_id.in_(ids)).order_by(silences.c.id)
        for silence in conn.execute(query).mappings():
            last_silence[(silence["run_id"], silence["batch"])] = silence
        rounds = {row["id"]: row["approval_round"] or 0 for row in rows}
        decisions: dict[int, list[ApprovalView]] = {run_id: [] for run_id in ids}
        query = select(approvals).where(approvals.c.run_id.in_(ids)).order_by(approvals.c.id)
        for decision in conn.execute(query).mappings():
            if decision["round"] == rounds[decision["run_id"]]:
                decisions[decision["run_id"]].append(
                    ApprovalView(
                        approver=decision["approver"],
                        decision=ApprovalDecisionKind(decision["decision"]),
                        reason=decision["reason"],
                        at=_wire(decision["at"]) or "",
                    )
                )
        return [
            _run_view(
                row, batch_rows[row["id"]], host_rows[row["id"]], decisions[row["id"]], last_silence
            )
            for row in rows
        ]


_NO_HANDOFF = {"handoff_to": None, "handoff_note": None, "handoff_by": None, "handoff_at": None}


def _plan_changes(row: RowMapping, remaining: list[list[str]], fleet: Fleet) -> list[str]:
    """What changed in the inventory that the run's remaining plan did not foresee."""
    stack: Stack | None = fleet.stacks.get(row["stack"])
    if stack is None:
        return [f"stack {row['stack']} is no longer in the inventory"]
    if stack.problem:
        return [f"stack {row['stack']}: {stack.problem}"]
    changes = []
    if stack.environment != row["environment"]:
        changes.append(
            f"stack {stack.name} is now in {stack.environment}, not {row['environment']}"
        )
    elif stack.production != bool(row["production"]):
        now = "production" if stack.production else "non-production"
        changes.append(f"environment {stack.environment} is now {now}")
    gone = [host for batch in remaining for host in batch if host not in stack.hosts]
    if gone:
        changes.append(
            f"{', '.join(gone)} left stack {stack.name} (it has {', '.join(stack.hosts)})"
        )
    return changes


def _plan_text(plan: Sequence[Sequence[str]]) -> str:
    return " | ".join(", ".join(batch) for batch in plan) or "nothing"


def _facts(row: RowMapping) -> RunFacts:
    return RunFacts(
        id=row["id"],
        state=RunState(row["state"]),
        owner=row["owner"],
        production=bool(row["production"]),
        handoff_to=row["handoff_to"],
        current_batch=row["current_batch"],
        lease_expires_at=_aware(row["lease_expires_at"]),
        finished_at=_aware(row["finished_at"]),
        created_by=row["created_by"],
        requested_by=row["approval_requested_by"] or "",
        approval_expires_at=_aware(row["approval_expires_at"]),
    )


def facts_of(run: Run) -> RunFacts:
    """What the rules know of a run, from its wire view (the status page asks the rules too)."""

    def moment(text: str | None) -> datetime | None:
        return parse_wire_time(text) if text else None

    return RunFacts(
        id=run.id,
        state=run.state,
        owner=run.owner,
        production=run.production,
        handoff_to=run.handoff.to if run.handoff else None,
        current_batch=run.current_batch,
        lease_expires_at=moment(run.lease_expires_at),
        finished_at=moment(run.finished_at),
        created_by=run.created_by,
        requested_by=run.approval_requested_by or "",
        approval_expires_at=moment(run.approval_expires_at),
    )


def _handoff(row: RowMapping) -> Handoff | None:
    if not row["handoff_to"]:
        return None
    return Handoff(
        to=row["handoff_to"],
        note=row["handoff_note"] or "",
        by=row["handoff_by"] or "",
        at=_wire(row["handoff_at"]) or "",
    )


def _run_view(
    row: RowMapping,
    batch_rows: list[RowMapping],
    host_rows: list[RowMapping],
    decisions: list[ApprovalView],
    last_silence: Mapping[tuple[int, int], RowMapping],
) -> Run:
    members: dict[int, list[str]] = {}
    for host in host_rows:
        members.setdefault(host["batch"], []).append(host["name"])
    return Run(
        id=row["id"],
        runbook=row["runbook"],
        stack=row["stack"],
        environment=row["environment"],
        production=bool(row["production"]),
        options=RunOptions.from_dict(row["options"] or {}),
        parameters=row["parameters"] or {},
        state=RunState(row["state"]),
        owner=row["owner"],
        lease_expires_at=_wire(row["lease_expires_at"]),
        lease_seconds=row["lease_seconds"],
        created_by=row["created_by"],
        created_at=_wire(row["created_at"]) or "",
        updated_at=_wire(row["updated_at"]) or "",
        finished_at=_wire(row["finished_at"]),
        summary=row["summary"],
        handoff=_handoff(row),
        current_batch=row["current_batch"],
        last_seq=row["last_seq"],
        batches=[
            BatchView(
                number=batch["number"],
                hosts=members.get(batch["number"], []),
                state=BatchState(batch["state"]),
                attempts=batch["attempts"],
                started_by=batch["started_by"],
                started_at=_wire(batch["started_at"]),
                finished_by=batch["finished_by"],
                finished_at=_wire(batch["finished_at"]),
                gate_passed=batch["gate_passed"],
                gate_message=batch["gate_message"],
                silence=_silence_view(last_silence.get((row["id"], batch["number"]))),
            )
            for batch in batch_rows
        ],
        hosts=[
            HostView(
                name=host["name"],
                batch=host["batch"],
                state=HostState(host["state"]),
                message=host["message"],
                activity=host["activity"],
                attempts=host["attempts"],
                updated_by=host["updated_by"],
                updated_at=_wire(host["updated_at"]),
            )
            for host in host_rows
        ],
        approvals=decisions,
        approvals_needed=row["approvals_needed"] or 0,
        approval_expires_at=_wire(row["approval_expires_at"]),
        approval_requested_by=row["approval_requested_by"],
    )


def _silence_view(row: RowMapping | None) -> SilenceView | None:
    if row is None:
        return None
    return SilenceView(
        id=row["silence_id"],
        hosts=list(row["hosts"]),
        instances=list(row["instances"]),
        set_at=_wire(row["set_at"]) or "",
        ends_at=_wire(row["ends_at"]) or "",
        expired_at=_wire(row["expired_at"]),
        why=row["expire_why"],
        expire_error=row["expire_error"],
    )


def _event_view(row: Mapping[str, Any]) -> Event:
    return Event(
        seq=row["seq"],
        run_id=row["run_id"],
        at=_wire(row["at"]) or "",
        actor=row["actor"],
        kind=EventKind(row["kind"]),
        type=row["type"],
        batch=row["batch"],
        host=row["host"],
        task=row["task"],
        uuid=row["uuid"],
        message=row["message"],
        data=row["data"] or {},
        client_at=row["client_at"],
    )


def _clean_event(item: EventIn, index: int) -> dict[str, Any]:
    """One runner event as stored: bounded sizes, a checked time, no surprises for the page."""
    where = f"events[{index}]"
    kind = item.type.strip()
    if not kind or len(kind) > 100:
        raise bad_request(f"{where}.type: expected the runner's event name (1 to 100 characters)")
    if item.uuid is not None and not 0 < len(item.uuid) <= 100:
        raise bad_request(f"{where}.uuid: expected the runner's event uuid (1 to 100 characters)")
    for name, value in (("type", kind), ("uuid", item.uuid), ("host", item.host)):
        if value is not None and any(ord(ch) < 32 for ch in value):
            raise bad_request(f"{where}.{name}: contains control characters")
    if item.host is not None and len(item.host) > 255:
        raise bad_request(f"{where}.host: longer than 255 characters")
    if item.batch is not None and not 0 <= item.batch <= 100_000:
        raise bad_request(f"{where}.batch: expected a batch number, got {item.batch}")
    client_at = None
    if item.at is not None:
        try:
            client_at = wire_time(parse_wire_time(item.at))
        except WireError as error:
            raise bad_request(f"{where}.at: {error}") from None
    data = item.data
    size = len(json.dumps(data, default=str))
    if size > MAX_EVENT_DATA:
        data = {"truncated": f"the event's data had {size} bytes; at most {MAX_EVENT_DATA} kept"}
    return {
        "type": kind,
        "uuid": item.uuid,
        "host": item.host,
        "task": _text(item.task),
        "batch": item.batch,
        "message": _text(item.message),
        "data": data,
        "client_at": client_at,
    }


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _short(error: Exception) -> str:
    first = str(error).strip().splitlines()
    return first[0] if first else type(error).__name__
