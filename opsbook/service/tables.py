"""The ledger's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

- `runs.active_key` is "<runbook>\\n<stack>" while the run is not finished and NULL afterwards; its
  unique index is what makes "one run per runbook and stack at a time" hold even when two engineers
  press start in the same millisecond: the database lets exactly one insert through.
- `events` is append-only. `(run_id, seq)` is unique and is the index every page and the client
  read by; `(run_id, uuid)` is unique so a runner event sent twice is stored once.
- Times are naive UTC (SQLite has no time zones); the store converts at its edge.
- `certificates` records every SSH certificate the CA signed (serial, KeyID, principals, the
  public key's fingerprint, validity): the certificate text itself is not kept, only what it says.
- `approvals` records every decision on a run's approval request (who, approve or reject, why,
  when). `round` numbers the requests of a run: a re-plan asks again (round + 1) and only the
  current round's approvals count, while the earlier ones stay in the ledger.
- `promotions` records every errata promotion the service performed on the package repository:
  the environment, the versions it added (`promoted`) and those the suite had already
  (`unchanged`), who asked, when, why and for which run. Only promotions the repository confirmed
  are recorded.
- `silences` records every Alertmanager silence the service set for a batch (its ID, the hosts and
  exporter instances it covers, until when) and its end: when it was expired and why (the batch
  finished, a takeover, the lease ran out ...), or, while Alertmanager refuses, the last error and
  how often it was tried (the sweeper tries again). `expired_at` NULL: still in force.
- `runs_schema` holds the schema version: a newer database than the code stops the service.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 6  # 2: runs.options; 3: certificates; 4: approvals (table and runs columns);
# 5: promotions; 6: silences

NAME = 255  # user, host, runbook and stack names
metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for events.
EventId = BigInteger().with_variant(Integer(), "sqlite")

schema = Table(
    "runs_schema",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", DateTime, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("runbook", String(NAME), nullable=False),
    Column("stack", String(NAME), nullable=False),
    Column("environment", String(NAME), nullable=False),
    Column("production", Boolean, nullable=False),
    Column("options", JSON),  # wire.RunOptions; NULL (runs from schema 1): the defaults
    Column("parameters", JSON, nullable=False),
    Column("state", String(20), nullable=False),
    Column("owner", String(NAME), nullable=False),
    Column("lease_expires_at", DateTime),
    Column("lease_seconds", Integer, nullable=False),
    Column("created_by", String(NAME), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("summary", Text),
    Column("active_key", String(2 * NAME + 1), unique=True),
    Column("handoff_to", String(NAME)),
    Column("handoff_note", Text),
    Column("handoff_by", String(NAME)),
    Column("handoff_at", DateTime),
    Column("current_batch", Integer),
    Column("last_seq", Integer, nullable=False, default=0),
    # Approvals (schema 4; NULL in older rows: none needed). approvals_needed: distinct approvers
    # the current request needs (0: none); approval_round: the current request, from 1;
    # approval_expires_at: when the request (or, once approved, the approval if no batch has
    # started) expires, NULL once a batch started; kept on a run the expiry ended.
    # approval_requested_by: who asked (the requester, or whoever re-planned); resume_state:
    # the state the run takes once approved (running at the start; after a re-plan, the state
    # it was in).
    Column("approvals_needed", Integer),
    Column("approval_round", Integer),
    Column("approval_expires_at", DateTime),
    Column("approval_requested_by", String(NAME)),
    Column("resume_state", String(20)),
    Index("ix_runs_state_lease", "state", "lease_expires_at"),
    Index("ix_runs_finished_at", "finished_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("started_by", String(NAME)),
    Column("started_at", DateTime),
    Column("finished_by", String(NAME)),
    Column("finished_at", DateTime),
    Column("gate_passed", Boolean),
    Column("gate_message", Text),
)

hosts = Table(
    "hosts",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(NAME), primary_key=True),
    Column("batch", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("message", Text),
    Column("activity", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_by", String(NAME)),
    Column("updated_at", DateTime),
)

events = Table(
    "events",
    metadata,
    Column("id", EventId, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", DateTime, nullable=False),
    Column("client_at", String(40)),
    Column("actor", String(NAME), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("type", String(100), nullable=False),
    Column("batch", Integer),
    Column("host", String(NAME)),
    Column("task", Text),
    Column("uuid", String(100)),
    Column("message", Text),
    Column("data", JSON, nullable=False),
    Index("ux_events_run_seq", "run_id", "seq", unique=True),
    Index("ux_events_run_uuid", "run_id", "uuid", unique=True),
    Index("ix_events_run_kind_seq", "run_id", "kind", "seq"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("approver", String(NAME), nullable=False),
    Column("decision", String(10), nullable=False),  # approve or reject
    Column("reason", Text, nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_approvals_run_round", "run_id", "round"),
)

certificates = Table(
    "certificates",
    metadata,
    Column("serial", BigInteger, primary_key=True, autoincrement=False),  # random, < 2**63
    Column("key_id", String(2 * NAME), nullable=False),
    Column("user", String(NAME), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),  # NULL: no run (non-production only)
    Column("principals", JSON, nullable=False),
    Column("fingerprint", String(100), nullable=False),  # of the public key: SHA256:...
    Column("valid_after", DateTime, nullable=False),
    Column("valid_before", DateTime, nullable=False),
    Column("issued_at", DateTime, nullable=False),
    Index("ix_certificates_user_issued", "user", "issued_at"),
    Index("ix_certificates_run", "run_id"),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("environment", String(NAME), nullable=False),
    Column("promoted", JSON, nullable=False),  # [{package, version}]
    Column("unchanged", JSON, nullable=False),  # [{package, version}]
    Column("by", String(NAME), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),  # NULL: no run (non-production only)
    Column("reason", Text),
    Index("ix_promotions_environment_at", "environment", "at"),
    Index("ix_promotions_run", "run_id"),
)

silences = Table(
    "silences",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("batch", Integer, nullable=False),
    Column("silence_id", String(100), nullable=False),  # Alertmanager's silenceID
    Column("hosts", JSON, nullable=False),
    Column("instances", JSON, nullable=False),  # the exporter instances its matcher names
    Column("set_by", String(NAME), nullable=False),  # whose batch start set it
    Column("set_at", DateTime, nullable=False),
    Column("ends_at", DateTime, nullable=False),  # its ceiling, should nobody expire it
    Column("expire_why", Text),  # set once it is to end (also while expiring fails)
    Column("expired_at", DateTime),  # NULL: in force
    Column("expire_attempts", Integer, nullable=False, default=0),
    Column("expire_error", Text),  # the last failure to expire it, until it is expired
    Index("ix_silences_run_batch", "run_id", "batch"),
    Index("ix_silences_expired_at", "expired_at"),
)
