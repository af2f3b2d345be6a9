"""Table definitions for queries, and the tracker's DDL that migrations create verbatim.

The tracker owns `local_conversations`, `conversation_links` and `renewal_jobs`; their
columns here match its DDL column for column. renewald's additions are nullable or
defaulted columns and tables of its own (DESIGN §1). Times are epoch milliseconds.
"""

from __future__ import annotations

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

local_conversations = Table(
    "local_conversations",
    metadata,
    Column("local_conversation_id", Text, primary_key=True),
    Column("platform", Text, nullable=False),
    Column("automation_status", Text, nullable=False, server_default=text("'manual'")),
    Column("title", Text),
    Column("summary", Text),
    Column("last_message_id", Text),
    Column("last_message_at", Millis),
    Column("cooldown_until", Millis),
    Column("paused_at", Millis),
    Column("created_at", Millis, nullable=False),
    Column("updated_at", Millis, nullable=False),
)

conversation_links = Table(
    "conversation_links",
    metadata,
    Column("link_id", Text, primary_key=True),
    Column("local_conversation_id", Text, nullable=False),
    Column("platform", Text, nullable=False),
    Column("remote_conversation_id", Text),
    Column("client_id", Text),
    Column("page_url", Text),
    Column("page_title", Text),
    Column("route_path", Text),
    Column("route_pattern", Text),
    Column("route_params", Text),
    Column("target_kind", Text),
    Column("target_id", Text),
    Column("target_payload", Text),
    Column("is_active", Integer, nullable=False, server_default=text("1")),
    Column("observed_at", Millis, nullable=False),
    Column("created_at", Millis, nullable=False),
    Column("updated_at", Millis, nullable=False),
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

renewal_jobs = Table(
    "renewal_jobs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("local_conversation_id", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("payload", Text, nullable=False),
    Column("payload_kind", Text, nullable=False, server_default=text("'text'")),
    Column("target_snapshot", Text),
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
    Column("next_attempt_at", Millis),
    Column("last_attempt_at", Millis),
    Column("last_error", Text),
    Column("log_path", Text),
    Column("started_at", Millis),
    Column("finished_at", Millis),
    Column("created_at", Millis, nullable=False),
    Column("updated_at", Millis, nullable=False),
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
    Index(
        "idx_renewal_jobs_rewound",
        "job_id",
        sqlite_where=text("delivered_at IS NOT NULL AND status IN ('pending', 'running')"),
        postgresql_where=text("delivered_at IS NOT NULL AND status IN ('pending', 'running')"),
    ),
    Index(
        "idx_renewal_jobs_held",
        "local_conversation_id",
        "lease_expires_at",
        sqlite_where=text("lease_owner IS NOT NULL"),
        postgresql_where=text("lease_owner IS NOT NULL"),
    ),
    # The status page's keyset pages (migration 0005).
    Index("idx_renewal_jobs_created", "created_at", "job_id"),
    Index("idx_renewal_jobs_status_created", "status", "created_at", "job_id"),
)

renewal_job_attempts = Table(
    "renewal_job_attempts",
    metadata,
    Column("attempt_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("attempt_no", Integer, nullable=False),
    Column("lease_owner", Text),
    Column("lease_token", Integer),
    Column("adapter", Text),
    Column("target", Text),
    Column("started_at", Millis, nullable=False),
    Column("finished_at", Millis, nullable=False),
    Column("duration_ms", Integer),
    Column("outcome", Text, nullable=False),
    Column("error_class", Text),
    Column("error_message", Text),
    Column("response_summary", Text),
    Column("next_attempt_at", Millis),
    Column("decision", Text),
    Column("decision_reason", Text),
    Index("idx_renewal_job_attempts_job", "job_id", "attempt_no"),
)

# Attempt rows whose JSONL line may not be flushed yet: a crash leaves them for the next
# start to write (migration 0004).
renewald_unlogged_attempts = Table(
    "renewald_unlogged_attempts",
    metadata,
    Column("attempt_id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("created_at", Millis, nullable=False),
)

renewald_daemons = Table(
    "renewald_daemons",
    metadata,
    Column("owner_id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text, nullable=False),
    Column("started_at", Millis, nullable=False),
    Column("heartbeat_at", Millis, nullable=False),
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
renewal_target_pauses = Table(
    "renewal_target_pauses",
    metadata,
    Column("target_key", Text, primary_key=True),
    Column("adapter", Text),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    Column("paused_until", Millis),
    Column("opened_at", Millis),
    Column("last_error", Text),
    Column("updated_at", Millis, nullable=False),
)

# Recurring renewals: each fire time becomes one renewal_jobs row (issue: schedules).
renewal_schedules = Table(
    "renewal_schedules",
    metadata,
    Column("schedule_id", Text, primary_key=True),
    Column("local_conversation_id", Text, nullable=False),
    Column("trigger_kind", Text, nullable=False),  # 'every' | 'cron'
    Column("every_ms", Millis),
    Column("cron", Text),
    Column("timezone", Text, nullable=False, server_default=text("'UTC'")),
    Column("payload", Text, nullable=False),
    Column("payload_kind", Text, nullable=False, server_default=text("'text'")),
    Column("target_kind", Text),
    Column("target_snapshot", Text),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
    Column("jitter_ms", Millis, nullable=False, server_default=text("0")),
    Column("misfire", Text, nullable=False, server_default=text("'coalesce'")),
    Column("misfire_grace_ms", Millis),
    Column("allow_overlap", Integer, nullable=False, server_default=text("0")),
    Column("enabled", Integer, nullable=False, server_default=text("1")),
    Column("next_fire_at", Millis),
    Column("last_fire_at", Millis),
    Column("last_job_id", Text),
    Column("created_at", Millis, nullable=False),
    Column("updated_at", Millis, nullable=False),
    Index("idx_renewal_schedules_due", "enabled", "next_fire_at"),
)
