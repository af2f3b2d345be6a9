"""Leases: begin a send, extend, give back what never started, find what to take back.

Every write here is fenced on the lease itself — `lease_owner` and `lease_token`, the two
columns only renewald writes — and not on `status`: the tracker's upsert rewrites
`status` with whatever it last saw, so a status is a hint and the lease is the key.
Rows are always written in `job_id` order, so two duties (the heartbeat, the recorder, a
rescuer) locking several rows on PostgreSQL take their locks in one order and cannot
deadlock each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Text,
    Update,
    and_,
    bindparam,
    case,
    column,
    func,
    or_,
    select,
    update,
)

from renewald.store.backend import Backend
from renewald.store.models import Job
from renewald.store.schema import renewal_job_attempts, renewal_jobs, renewald_daemons

jobs = renewal_jobs
attempts = renewal_job_attempts


def held_by(owner: str | None, lease_token: int):  # type: ignore[no-untyped-def]
    """The fence: the row still carries the lease it was decided on."""
    return (jobs.c.lease_token == lease_token, jobs.c.lease_owner.is_not_distinct_from(owner))


_HELD_COLUMNS = (column("job_id", Text), column("lease_token", Integer))
_HELD_BATCH: dict[tuple[str, bool], Update] = {}


def _held_batch_statement(backend: Backend, *, mark_sent: bool) -> Update:
    """A fenced write of a batch of held jobs in one statement, RETURNING the job ids it
    matched: the lease pushed out to `p_until`, and the send marked begun if `mark_sent`.
    The batch is one JSON parameter (`Backend.rows_from_json`), so one compiled statement
    serves every size."""
    key = (backend.name, mark_sent)
    statement = _HELD_BATCH.get(key)
    if statement is None:
        r = backend.rows_from_json(bindparam("p_rows", type_=Text), _HELD_COLUMNS).c
        values: dict[str, Any] = {"lease_expires_at": bindparam("p_until", type_=BigInteger)}
        if mark_sent:
            values["send_token"] = jobs.c.lease_token
        statement = _HELD_BATCH[key] = (
            update(jobs)
            .where(
                jobs.c.job_id == r.job_id,
                jobs.c.lease_token == r.lease_token,
                jobs.c.lease_owner == bindparam("p_owner", type_=Text),
            )
            .values(**values)
            .returning(jobs.c.job_id)
        )
    return statement


def _write_held_batch(
    conn: Connection,
    backend: Backend,
    *,
    owner: str,
    held: Sequence[tuple[str, int]],
    until: int,
    mark_sent: bool,
) -> set[str]:
    # Rows locked in job_id order, as every other multi-row write here.
    rows = json.dumps(
        [{"job_id": j, "lease_token": t} for j, t in sorted(held)], separators=(",", ":")
    )
    params = {"p_rows": rows, "p_owner": owner, "p_until": until}
    statement = _held_batch_statement(backend, mark_sent=mark_sent)
    return set(conn.execute(statement, params).scalars())


def begin_sends(
    conn: Connection,
    *,
    backend: Backend,
    owner: str,
    held: Sequence[tuple[str, int]],
    until: int,
) -> list[bool]:
    """Mark each held job's attempt as spent, right before its send, and renew its lease
    to `until`, in one statement. Returns, per job in `held`'s order, whether it was still
    held: a job no longer held (rescued, released) must not be sent."""
    begun = _write_held_batch(conn, backend, owner=owner, held=held, until=until, mark_sent=True)
    return [job_id in begun for job_id, _ in held]


def extend_leases(
    conn: Connection,
    *,
    backend: Backend,
    owner: str,
    held: Sequence[tuple[str, int]],
    until: int,
) -> list[str]:
    """Push out to `until` the lease of each (job_id, lease_token) still held, in one
    statement; returns the lost job ids."""
    kept = _write_held_batch(conn, backend, owner=owner, held=held, until=until, mark_sent=False)
    return [job_id for job_id, _ in sorted(held) if job_id not in kept]


def release_jobs(
    conn: Connection, *, owner: str, held: Sequence[tuple[str, int]], now: int
) -> list[bool]:
    """Give back claimed jobs whose send never began: pending again, due as they were, and
    the claim's attempt handed back to the budget. Returns, per job in `held`'s order,
    whether it was still held."""
    released = {}
    for job_id, token in sorted(held):
        released[job_id] = (
            conn.execute(
                update(jobs)
                .where(
                    jobs.c.job_id == job_id,
                    *held_by(owner, token),
                    or_(jobs.c.send_token.is_(None), jobs.c.send_token != token),
                )
                .values(
                    status="pending",
                    lease_owner=None,
                    lease_expires_at=None,
                    attempt_count=jobs.c.attempt_count - 1,
                    updated_at=now,
                )
            ).rowcount
            == 1
        )
    return [released[job_id] for job_id, _ in held]


def find_abandoned(
    conn: Connection, *, now: int, exclude_owner: str | None = None, limit: int = 100
) -> list[Job]:
    """Rows to take back: a lease that expired (whatever status the row now says), or a
    `running` row that carries no lease at all. A live lease is never taken, so a stopped
    or partitioned owner keeps its jobs until their leases run out."""
    expired = and_(
        jobs.c.lease_owner.is_not(None),
        or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at <= now),
    )
    unleased = and_(
        jobs.c.status == "running",
        or_(jobs.c.lease_owner.is_(None), jobs.c.lease_expires_at.is_(None)),
    )
    query = select(jobs).where(or_(expired, unleased))
    if exclude_owner is not None:
        query = query.where(or_(jobs.c.lease_owner.is_(None), jobs.c.lease_owner != exclude_owner))
    query = query.order_by(jobs.c.lease_expires_at, jobs.c.job_id).limit(limit)
    return [Job.from_row(r) for r in conn.execute(query).mappings()]


@dataclass(frozen=True)
class DeliveredAt:
    job_id: str
    attempt_id: str
    finished_at: int


def delivered_attempts(conn: Connection, job_ids: Sequence[str]) -> dict[str, DeliveredAt]:
    """The delivered attempt of each job that has one (the ledger's word)."""
    if not job_ids:
        return {}
    rows = conn.execute(
        select(attempts.c.job_id, attempts.c.attempt_id, attempts.c.finished_at)
        .where(attempts.c.job_id.in_(list(job_ids)), attempts.c.outcome == "delivered")
        .order_by(attempts.c.finished_at)
    )
    found: dict[str, DeliveredAt] = {}
    for job_id, attempt_id, finished_at in rows:
        found.setdefault(job_id, DeliveredAt(job_id, attempt_id, finished_at))
    return found


def find_rewound(conn: Connection, *, limit: int = 100) -> list[Job]:
    """Jobs the ledger says were delivered but whose row says they may be sent again
    (a stale upsert rewound status to pending or running), and no live lease holds."""
    query = (
        select(jobs)
        .where(
            jobs.c.delivered_at.is_not(None),
            jobs.c.status.in_(("pending", "running")),
            jobs.c.lease_owner.is_(None),
        )
        .order_by(jobs.c.job_id)
        .limit(limit)
    )
    return [Job.from_row(r) for r in conn.execute(query).mappings()]


def reconcile_delivered(conn: Connection, *, job: Job, delivered: DeliveredAt, now: int) -> bool:
    """Put a rewound job back to done/delivered, fenced on the row as it was read."""
    return (
        conn.execute(
            update(jobs)
            .where(
                jobs.c.job_id == job.job_id,
                jobs.c.status == job.status,
                *held_by(job.lease_owner, job.lease_token),
            )
            .values(
                status="done",
                terminal_reason="delivered",
                attempt_count=select(func.max(attempts.c.attempt_no))
                .where(attempts.c.job_id == job.job_id)
                .scalar_subquery(),
                finished_at=func.coalesce(jobs.c.finished_at, delivered.finished_at),
                delivered_at=func.coalesce(jobs.c.delivered_at, delivered.finished_at),
                lease_owner=None,
                lease_expires_at=None,
                last_error=None,
                updated_at=now,
            )
        ).rowcount
        == 1
    )


def put_back_unsent(conn: Connection, *, job: Job, now: int) -> bool:
    """A held job whose send never began (its owner died first), or a `running` row with
    no lease: pending again, due as it was. A claim's attempt is handed back; a row no
    claim produced spent none."""
    claimed = job.lease_owner is not None
    values: dict[str, object] = {
        "status": "pending",
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if claimed and job.status == "running":
        values["attempt_count"] = case(
            (jobs.c.attempt_count > 0, jobs.c.attempt_count - 1), else_=0
        )
    return (
        conn.execute(
            update(jobs)
            .where(
                jobs.c.job_id == job.job_id,
                *held_by(job.lease_owner, job.lease_token),
                or_(jobs.c.send_token.is_(None), jobs.c.send_token != job.lease_token),
            )
            .values(**values)
        ).rowcount
        == 1
    )


@dataclass(frozen=True)
class HeldLeases:
    """The leases one other owner holds: how many, the first to expire, and its registry
    heartbeat (None: no registry row)."""

    owner: str
    jobs: int
    first_expiry: int | None
    heartbeat_at: int | None


def held_leases(conn: Connection, *, exclude_owner: str | None = None) -> list[HeldLeases]:
    query = (
        select(
            jobs.c.lease_owner,
            func.count(),
            func.min(jobs.c.lease_expires_at),
            func.max(renewald_daemons.c.heartbeat_at),
        )
        .select_from(
            jobs.outerjoin(renewald_daemons, renewald_daemons.c.owner_id == jobs.c.lease_owner)
        )
        .where(jobs.c.lease_owner.is_not(None))
        .group_by(jobs.c.lease_owner)
        .order_by(jobs.c.lease_owner)
    )
    if exclude_owner is not None:
        query = query.where(jobs.c.lease_owner != exclude_owner)
    return [HeldLeases(o, int(n), first, beat) for o, n, first, beat in conn.execute(query)]
