"""Table definitions for queries, and the tracker's DDL that migrations create verbatim.

The tracker owns `local_conversations`, `conversation_links` and `renewal_jobs`; their
columns here match its DDL column for column. renewald's additions are nullable or
defaulted columns and tables of its own (DESIGN §1). Times are epoch milliseconds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

Millis = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()


def _table(name: str, key: str, *columns: Column[Any] | Index) -> Table:
    """A table keyed, as every table here is, by one TEXT id: `job_id TEXT PRIMARY KEY`."""
    return Table(name, metadata, Column(key, Text, primary_key=True), *columns)


def _optional(type_: Any, *names: str) -> list[Column[Any]]:
    """Nullable columns of one type, as the tracker's DDL runs them: `title TEXT, summary TEXT`."""
    return [Column(name, type_) for name in names]


def _required(type_: Any, *names: str) -> list[Column[Any]]:
    """NOT NULL columns of one type, without a default."""
    return [Column(name, type_, nullable=False) for name in names]


def _stamps() -> list[Column[Any]]:
    """When the row was made and last changed: every tracker table (and a schedule) ends
    with these two."""
    return _required(Millis, "created_at", "updated_at")


local_conversations = _table(
    "local_conversations",
    "local_conversation_id",
    Column("platform", Text, nullable=False),
    Column("automation_status", Text, nullable=False, server_default=text("'manual'")),
    *_optional(Text, "title", "summary", "last_message_id"),
    *_optional(Millis, "last_message_at", "cooldown_until", "paused_at"),
    *_stamps(),
)

conversation_links = _table(
    "conversation_links",
    "link_id",
    *_required(Text, "local_conversation_id", "platform"),
    *_optional(
        Text,
        "remote_conversation_id",
        "client_id",
        "page_url",
        "page_title",
        "route_path",
        "route_pattern",
        "route_params",
        "target_kind",
        "target_id",
        "target_payload",
    ),
    Column("is_active", Integer, nullable=False, server_default=text("1")),
    Column("observed_at", Millis, nullable=False),
    *_stamps(),
)

TRACKER_JOB_COLUMNS = (
    "job_id",
    "local_conversation_id",
    "message_id",
    "status",
    "payload",
    "payload_kind",
    "target_snapshot",
    "attempt_count",
    "max_attempts",
    "next_attempt_at",
    "last_attempt_at",
    "last_error",
    "log_path",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
)

renewal_jobs = _table(
    "renewal_jobs",
    "job_id",
    *_required(Text, "local_conversation_id", "message_id"),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("payload", Text, nullable=False),
    Column("payload_kind", Text, nullable=False, server_default=text("'text'")),
    Column("target_snapshot", Text),
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
    *_optional(Millis, "next_attempt_at", "last_attempt_at"),
    *_optional(Text, "last_error", "log_path"),
    *_optional(Millis, "started_at", "finished_at"),
    *_stamps(),
    # renewald's additions (DESIGN §1): lease, fencing counter, why it ended, deadline.
    Column("lease_owner", Text),
    Column("lease_expires_at", Millis),
    Column("lease_token", Integer, nullable=False, server_default=text("0")),
    Column("terminal_reason", Text),
    Column("deadline_at", Millis),
    Column("target_kind", Text),
    # The lease_token of the claim whose send began (migration 0004).
    Column("send_token", Integer),
    # When the attempt ledger first recorded a delivered attempt (the ledger's word, kept
    # on the row so the claim need not read the ledger; the tracker never writes it).
    Column("delivered_at", Millis),
    # Two partial indexes come with migration 0004 (idx_renewal_jobs_rewound,
    # idx_renewal_jobs_held). They are not declared here: a `postgresql_where` makes
    # SQLAlchemy import its whole PostgreSQL dialect (~30 ms of a SQLite daemon's start).
    # The status page's keyset pages (migration 0005).
    Index("idx_renewal_jobs_created", "created_at", "job_id"),
    Index("idx_renewal_jobs_status_created", "status", "created_at", "job_id"),
)

renewal_job_attempts = _table(
    "renewal_job_attempts",
    "attempt_id",
    Column("job_id", Text, nullable=False),
    Column("attempt_no", Integer, nullable=False),
    Column("lease_owner", Text),
    Column("lease_token", Integer),
    *_optional(Text, "adapter", "target"),
    *_required(Millis, "started_at", "finished_at"),
    Column("duration_ms", Integer),
    Column("outcome", Text, nullable=False),
    *_optional(Text, "error_class", "error_message", "response_summary"),
    Column("next_attempt_at", Millis),
    *_optional(Text, "decision", "decision_reason"),
    Index("idx_renewal_job_attempts_job", "job_id", "attempt_no"),
)

# Attempt rows whose JSONL line may not be flushed yet: a crash leaves them for the next
# start to write (migration 0004).
renewald_unlogged_attempts = _table(
    "renewald_unlogged_attempts",
    "attempt_id",
    Column("owner", Text, nullable=False),
    Column("created_at", Millis, nullable=False),
)

renewald_daemons = _table(
    "renewald_daemons",
    "owner_id",
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text, nullable=False),
    *_required(Millis, "started_at", "heartbeat_at"),
    Column("status", Text),
)

# The tracker's own DDL (DESIGN §1), verbatim for SQLite. Migrations run it so that a
# database renewald made is the database the tracker would have made.
TRACKER_DDL_SQLITE = (
    """CREATE TABLE IF NOT EXISTS local_conversations (
  local_conversation_id TEXT PRIMARY KEY, platform TEXT NOT NULL,
  automation_status TEXT NOT NULL DEFAULT 'manual',
  title TEXT, summary TEXT, last_message_id TEXT, last_message_at INTEGER,
  cooldown_until INTEGER, paused_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS conversation_links (
  link_id TEXT PRIMARY KEY, local_conversation_id TEXT NOT NULL, platform TEXT NOT NULL,
  remote_conversation_id TEXT, client_id TEXT, page_url TEXT, page_title TEXT,
  route_path TEXT, route_pattern TEXT, route_params TEXT,
  target_kind TEXT,
  target_id TEXT, target_payload TEXT,
  is_active INTEGER NOT NULL DEFAULT 1, observed_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_conversation_links_remote "
    "ON conversation_links(platform, remote_conversation_id)",
    """CREATE TABLE IF NOT EXISTS renewal_jobs (
  job_id TEXT PRIMARY KEY, local_conversation_id TEXT NOT NULL, message_id TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  payload TEXT NOT NULL, payload_kind TEXT NOT NULL DEFAULT 'text',
  target_snapshot TEXT,
  attempt_count INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL DEFAULT 3,
  next_attempt_at INTEGER, last_attempt_at INTEGER, last_error TEXT,
  log_path TEXT,
  started_at INTEGER, finished_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  FOREIGN KEY (local_conversation_id) REFERENCES local_conversations(local_conversation_id),
  FOREIGN KEY (message_id) REFERENCES messages(id))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_renewal_jobs_message ON renewal_jobs(message_id)",
    "CREATE INDEX IF NOT EXISTS idx_renewal_jobs_status_due "
    "ON renewal_jobs(status, next_attempt_at ASC, created_at ASC)",
    "CREATE INDEX IF NOT EXISTS idx_renewal_jobs_local_conversation "
    "ON renewal_jobs(local_conversation_id, status, created_at DESC)",
)


def tracker_ddl_postgresql() -> tuple[str, ...]:
    """The same schema on PostgreSQL: BIGINT for times, no FK to the tracker's `messages`."""
    out = []
    for stmt in TRACKER_DDL_SQLITE:
        stmt = stmt.replace(",\n  FOREIGN KEY (message_id) REFERENCES messages(id)", "")
        for col in (
            "last_message_at",
            "cooldown_until",
            "paused_at",
            "created_at",
            "updated_at",
            "observed_at",
            "next_attempt_at",
            "last_attempt_at",
            "started_at",
            "finished_at",
        ):
            stmt = stmt.replace(f"{col} INTEGER", f"{col} BIGINT")
        out.append(stmt)
    return tuple(out)


# Circuit breaker state per delivery target, shared by every daemon on the database.
renewal_target_pauses = _table(
    "renewal_target_pauses",
    "target_key",
    Column("adapter", Text),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    *_optional(Millis, "paused_until", "opened_at"),
    Column("last_error", Text),
    Column("updated_at", Millis, nullable=False),
)

# Recurring renewals: each fire time becomes one renewal_jobs row (issue: schedules).
renewal_schedules = _table(
    "renewal_schedules",
    "schedule_id",
    *_required(Text, "local_conversation_id", "trigger_kind"),  # trigger_kind: 'every' | 'cron'
    Column("every_ms", Millis),
    Column("cron", Text),
    Column("timezone", Text, nullable=False, server_default=text("'UTC'")),
    Column("payload", Text, nullable=False),
    Column("payload_kind", Text, nullable=False, server_default=text("'text'")),
    *_optional(Text, "target_kind", "target_snapshot"),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
    Column("jitter_ms", Millis, nullable=False, server_default=text("0")),
    Column("misfire", Text, nullable=False, server_default=text("'coalesce'")),
    Column("misfire_grace_ms", Millis),
    Column("allow_overlap", Integer, nullable=False, server_default=text("0")),
    Column("enabled", Integer, nullable=False, server_default=text("1")),
    *_optional(Millis, "next_fire_at", "last_fire_at"),
    Column("last_job_id", Text),
    *_stamps(),
    Index("idx_renewal_schedules_due", "enabled", "next_fire_at"),
)
