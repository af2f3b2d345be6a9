"""The tracker's tables (when missing), leases and fencing on renewal_jobs, attempts, daemons.

Additive only: on a database the tracker made, nothing of the tracker's is renamed,
dropped or retyped; tables are created only when missing and columns added only when
missing, so a database that already has them is left as it is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from renewald.store.schema import TRACKER_DDL_SQLITE, tracker_ddl_postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _millis() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


JOB_COLUMNS = (
    ("lease_owner", "TEXT"),
    ("lease_expires_at", "BIGINT"),
    ("lease_token", "INTEGER NOT NULL DEFAULT 0"),
    ("terminal_reason", "TEXT"),
    ("deadline_at", "BIGINT"),
    ("target_kind", "TEXT"),
)


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    for stmt in TRACKER_DDL_SQLITE if sqlite else tracker_ddl_postgresql():
        op.execute(stmt)

    existing = {c["name"] for c in sa.inspect(bind).get_columns("renewal_jobs")}
    for name, ddl in JOB_COLUMNS:
        if name not in existing:
            if sqlite:
                ddl = ddl.replace("BIGINT", "INTEGER")
            op.execute(f"ALTER TABLE renewal_jobs ADD COLUMN {name} {ddl}")
    # Rescue looks for expired leases among running jobs only; a partial index keeps that
    # independent of how many jobs ever finished and can never reject a tracker write.
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_renewal_jobs_running_lease "
        "ON renewal_jobs(lease_expires_at) WHERE status = 'running'"
    )

    op.create_table(
        "renewal_job_attempts",
        sa.Column("attempt_id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_token", sa.Integer),
        sa.Column("adapter", sa.Text),
        sa.Column("target", sa.Text),
        sa.Column("started_at", _millis(), nullable=False),
        sa.Column("finished_at", _millis(), nullable=False),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error_class", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("response_summary", sa.Text),
        sa.Column("next_attempt_at", _millis()),
        sa.Column("decision", sa.Text),
        sa.Column("decision_reason", sa.Text),
        if_not_exists=True,
    )
    op.create_index(
        "idx_renewal_job_attempts_job",
        "renewal_job_attempts",
        ["job_id", "attempt_no"],
        if_not_exists=True,
    )
    op.create_table(
        "renewald_daemons",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("started_at", _millis(), nullable=False),
        sa.Column("heartbeat_at", _millis(), nullable=False),
        sa.Column("status", sa.Text),
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
