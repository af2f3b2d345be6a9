"""Leases: extend them while delivering, give back what never started, find the abandoned."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, or_, select, update

from renewald.store.models import Job
from renewald.store.schema import renewal_jobs, renewald_daemons

jobs = renewal_jobs


def extend_leases(
    conn: Connection,
    *,
    owner: str,
    held: Sequence[tuple[str, int]],
    now: int,
    lease_ms: int,
) -> list[str]:
    """Push out the lease of each (job_id, lease_token) still held; returns the lost job ids."""
    lost = []
    for job_id, token in held:
        matched = conn.execute(
            update(jobs)
            .where(
                jobs.c.job_id == job_id,
                jobs.c.status == "running",
                jobs.c.lease_token == token,
                jobs.c.lease_owner == owner,
            )
            .values(lease_expires_at=now + lease_ms)
        ).rowcount
        if matched != 1:
            lost.append(job_id)
    return lost


def release_jobs(conn: Connection, *, held: Sequence[tuple[str, int]], now: int) -> list[bool]:
    """Give back claimed jobs whose delivery never started (shutdown): pending again, due
    as they were, and the claim's attempt handed back to the budget."""
    released = []
    for job_id, token in held:
        matched = conn.execute(
            update(jobs)
            .where(jobs.c.job_id == job_id, jobs.c.status == "running", jobs.c.lease_token == token)
            .values(
                status="pending",
                lease_owner=None,
                lease_expires_at=None,
                attempt_count=jobs.c.attempt_count - 1,
                updated_at=now,
            )
        ).rowcount
        released.append(matched == 1)
    return released


def find_abandoned(conn: Connection, *, now: int, stale_before: int, limit: int = 100) -> list[Job]:
    """Running jobs whose lease expired, or whose owner's heartbeat is older than
    `stale_before` (or who has no registry row at all while its lease runs)."""
    live = select(renewald_daemons.c.owner_id).where(
        renewald_daemons.c.heartbeat_at >= stale_before
    )
    query = (
        select(jobs)
        .where(
            jobs.c.status == "running",
            or_(
                jobs.c.lease_expires_at <= now,
                jobs.c.lease_expires_at.is_(None),
                jobs.c.lease_owner.is_(None),
                jobs.c.lease_owner.not_in(live),
            ),
        )
        .order_by(jobs.c.lease_expires_at)
        .limit(limit)
    )
    return [Job.from_row(r) for r in conn.execute(query).mappings()]
