"""Retention: finished jobs and their attempts deleted in short batches (`renewald prune`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, delete, func, select

from renewald.store.schema import (
    renewal_job_attempts,
    renewal_jobs,
)

jobs = renewal_jobs
attempts = renewal_job_attempts

FINISHED = ("done", "failed")


def _prunable(before: int, table: Any = jobs):  # type: ignore[no-untyped-def]
    return and_(table.c.status.in_(FINISHED), table.c.finished_at < before)


def prune_batch(conn: Connection, *, before: int, limit: int) -> tuple[int, int]:
    """Delete up to `limit` finished jobs (finished before `before`) and their attempts.

    The DELETE re-checks status and finished_at on each row it removes, so a job the
    tracker re-armed a moment ago stays, and only the removed jobs' attempts go with them.
    Returns (jobs deleted, attempts deleted).
    """
    # An alias, so the inner SELECT is not correlated to the DELETE's own table.
    pick = jobs.alias("pick")
    chosen = select(pick.c.job_id).where(_prunable(before, pick)).limit(limit)
    deleted = list(
        conn.execute(
            delete(jobs)
            .where(jobs.c.job_id.in_(chosen), _prunable(before))
            .returning(jobs.c.job_id)
        ).scalars()
    )
    if not deleted:
        return 0, 0
    gone = conn.execute(delete(attempts).where(attempts.c.job_id.in_(deleted))).rowcount
    return len(deleted), int(gone)


def count_prunable(conn: Connection, *, before: int) -> tuple[int, int]:
    """What `prune_batch` would delete in all: (jobs, attempts)."""
    n_jobs = conn.execute(
        select(func.count()).select_from(jobs).where(_prunable(before))
    ).scalar_one()
    n_attempts = conn.execute(
        select(func.count())
        .select_from(attempts)
        .where(attempts.c.job_id.in_(select(jobs.c.job_id).where(_prunable(before))))
    ).scalar_one()
    return int(n_jobs), int(n_attempts)
