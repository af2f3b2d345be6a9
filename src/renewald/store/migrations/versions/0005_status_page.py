"""Indexes for the status page's keyset pages of jobs (renewald/web, store/status.py).

- `idx_renewal_jobs_created`: (created_at, job_id), walked backwards for the newest-first
  page of every job, and seeked to the previous page's last row (no OFFSET).
- `idx_renewal_jobs_status_created`: (status, created_at, job_id), the same page for one
  status (the jobs page's status filter, the overview's recent failures).

Both are plain indexes: they never reject a write the tracker may make.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "idx_renewal_jobs_created",
        "renewal_jobs",
        ["created_at", "job_id"],
        if_not_exists=True,
    )
    op.create_index(
        "idx_renewal_jobs_status_created",
        "renewal_jobs",
        ["status", "created_at", "job_id"],
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
