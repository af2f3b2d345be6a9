"""The lease protocol: which claim began a send, the held-rows index, unlogged attempts.

- `renewal_jobs.send_token`: the `lease_token` of the claim whose send began. A rescued
  job whose `send_token` differs from its `lease_token` was claimed but never sent: it
  comes back without spending an attempt (a crash costs only what was in flight).
- `renewal_jobs.delivered_at`: when the ledger first recorded a delivered attempt, set in
  the transaction that writes that attempt row (and backfilled here), so the claim's "the
  ledger decides" check is a column of the row itself; `idx_renewal_jobs_rewound` finds
  the rows a tracker upsert rewound after delivery.
- `idx_renewal_jobs_held`: the rows renewald holds (`lease_owner IS NOT NULL`), small,
  read by the one-per-conversation check and by rescue whatever `status` the tracker
  last wrote (the lease is the only key).
- `renewald_unlogged_attempts`: attempt rows whose JSONL line may not be written yet. A
  row is added with its attempt and removed once the line is flushed; what a crash
  leaves here is written to the job log on the next start (`recovered: true`).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _millis() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("renewal_jobs")}
    if "send_token" not in columns:
        op.add_column("renewal_jobs", sa.Column("send_token", sa.Integer))
    if "delivered_at" not in columns:
        op.add_column("renewal_jobs", sa.Column("delivered_at", _millis()))
        op.execute(
            "UPDATE renewal_jobs SET delivered_at = (SELECT min(a.finished_at)"
            " FROM renewal_job_attempts a WHERE a.job_id = renewal_jobs.job_id"
            " AND a.outcome = 'delivered')"
            " WHERE EXISTS (SELECT 1 FROM renewal_job_attempts a"
            " WHERE a.job_id = renewal_jobs.job_id AND a.outcome = 'delivered')"
        )
    rewound = "delivered_at IS NOT NULL AND status IN ('pending', 'running')"
    op.create_index(
        "idx_renewal_jobs_rewound",
        "renewal_jobs",
        ["job_id"],
        sqlite_where=sa.text(rewound),
        postgresql_where=sa.text(rewound),
        if_not_exists=True,
    )
    op.create_index(
        "idx_renewal_jobs_held",
        "renewal_jobs",
        ["local_conversation_id", "lease_expires_at"],
        sqlite_where=sa.text("lease_owner IS NOT NULL"),
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
        if_not_exists=True,
    )
    op.create_table(
        "renewald_unlogged_attempts",
        sa.Column("attempt_id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("created_at", _millis(), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
