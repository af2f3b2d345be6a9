"""Schedule queries: add, list, pause, resume, remove, and firing exactly once per fire time.

Firing one schedule is one transaction with two fences:

1. The schedule is advanced first, by a conditional UPDATE that matches only while
   `next_fire_at` still holds the value the firer read (and the schedule is enabled). Of
   several daemons firing the same schedule at the same moment exactly one matches; the
   others change nothing and create nothing. On PostgreSQL the loser's UPDATE waits for
   the winner's row lock and then re-checks its WHERE against the committed row.
2. Each fire time's job has a deterministic `job_id` and `message_id`, so the tracker's
   unique index on `renewal_jobs.message_id` makes a second job for one fire time
   impossible even if the first fence were bypassed (an operator resetting a schedule).
   The insert skips such a conflict (`ON CONFLICT DO NOTHING`) instead of failing, which
   on PostgreSQL would abort the whole transaction.

Gates (the conversation's automation status, a previous job still pending or running)
are read in the same transaction; a gated fire still advances the schedule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Select,
    bindparam,
    delete,
    insert,
    select,
    update,
)

from renewald.errors import RenewaldError
from renewald.store.backend import Backend
from renewald.store.jobs import ensure_conversation, new_job_row
from renewald.store.models import FireOutcome, NewJob, Schedule
from renewald.store.schema import local_conversations, renewal_jobs, renewal_schedules

__all__ = ["FireOutcome", "Schedule", "ScheduleExists"]

schedules = renewal_schedules
jobs = renewal_jobs
convs = local_conversations


class ScheduleExists(RenewaldError):
    """A schedule with this id already exists."""


def insert_schedule(
    conn: Connection, *, schedule: Schedule, platform: str, conversation_status: str
) -> None:
    """Insert a schedule, creating its conversation row when missing."""
    found = conn.execute(
        select(schedules.c.schedule_id).where(schedules.c.schedule_id == schedule.schedule_id)
    ).first()
    if found:
        raise ScheduleExists(f"schedule {schedule.schedule_id} already exists")
    ensure_conversation(
        conn,
        conversation_id=schedule.local_conversation_id,
        platform=platform,
        status=conversation_status,
        now=schedule.created_at,
    )
    values = schedule.as_dict()
    values["allow_overlap"] = int(schedule.allow_overlap)
    values["enabled"] = int(schedule.enabled)
    conn.execute(insert(schedules).values(**values))


def get_schedule(conn: Connection, schedule_id: str) -> Schedule | None:
    row = (
        conn.execute(select(schedules).where(schedules.c.schedule_id == schedule_id))
        .mappings()
        .first()
    )
    return Schedule.from_row(row) if row else None


def list_schedules(
    conn: Connection, *, conversation: str | None = None, limit: int = 100
) -> list[Schedule]:
    query = select(schedules)
    if conversation:
        query = query.where(schedules.c.local_conversation_id == conversation)
    query = query.order_by(schedules.c.created_at, schedules.c.schedule_id).limit(limit)
    return [Schedule.from_row(r) for r in conn.execute(query).mappings()]


def due_schedules(conn: Connection, *, now: int, limit: int) -> list[Schedule]:
    """Enabled schedules whose next fire time has come, earliest first (one range of
    `idx_renewal_schedules_due`)."""
    rows = conn.execute(_due_query(), {"now": now, "limit": limit}).mappings()
    return [Schedule.from_row(r) for r in rows]


@functools.cache
def _due_query() -> Select[Any]:
    """Built once: the schedule tick runs it every second, idle or not."""
    return (
        select(schedules)
        .where(
            schedules.c.enabled == 1,
            schedules.c.next_fire_at <= bindparam("now", type_=BigInteger),
        )
        .order_by(schedules.c.next_fire_at, schedules.c.schedule_id)
        .limit(bindparam("limit", type_=Integer))
    )


def set_enabled(
    conn: Connection,
    *,
    schedule_id: str,
    enabled: bool,
    now: int,
    next_fire_at: int | None = None,
) -> bool:
    """Pause or resume; returns whether the schedule changed state. Resuming sets the
    next fire time, so fires that fell due while paused are not caught up."""
    values: dict[str, object] = {"enabled": int(enabled), "updated_at": now}
    if enabled:
        values["next_fire_at"] = next_fire_at
    result = conn.execute(
        update(schedules)
        .where(schedules.c.schedule_id == schedule_id, schedules.c.enabled == int(not enabled))
        .values(**values)
    )
    return result.rowcount == 1


def delete_schedule(conn: Connection, *, schedule_id: str) -> bool:
    result = conn.execute(delete(schedules).where(schedules.c.schedule_id == schedule_id))
    return result.rowcount == 1


def advance_schedule(
    conn: Connection,
    *,
    schedule_id: str,
    seen: int,
    next_fire_at: int | None,
    last_fire_at: int | None,
    now: int,
    last_job_id: str | None = None,
) -> bool:
    """Move an enabled schedule from the fire time `seen` to `next_fire_at`; returns whether
    this call did it (False: another daemon advanced it, or it was paused or removed)."""
    values: dict[str, object] = {
        "next_fire_at": next_fire_at,
        "last_fire_at": last_fire_at,
        "updated_at": now,
    }
    if last_job_id is not None:
        values["last_job_id"] = last_job_id
    result = conn.execute(
        update(schedules)
        .where(
            schedules.c.schedule_id == schedule_id,
            schedules.c.enabled == 1,
            schedules.c.next_fire_at == seen,
        )
        .values(**values)
    )
    return result.rowcount == 1


def skip_reason(
    conn: Connection, *, schedule: Schedule, dispatch_statuses: Sequence[str]
) -> str | None:
    """Why a fire of `schedule` must not create a job now, or None.

    The conversation gate is the due rule's (DESIGN §2): a conversation whose automation
    status may not be dispatched holds the fire. Unlike the due rule, a missing
    conversation row holds it too: `schedules add` made that row, so it was deleted since,
    and on PostgreSQL a job without it would break the foreign key.
    """
    cid = schedule.local_conversation_id
    status = conn.execute(
        select(convs.c.automation_status).where(convs.c.local_conversation_id == cid)
    ).scalar()
    if status is None:
        return f"conversation {cid} does not exist"
    if status not in dispatch_statuses:
        return f"conversation {cid} is {status}"
    if not schedule.allow_overlap and schedule.last_job_id:
        last = conn.execute(
            select(jobs.c.status).where(jobs.c.job_id == schedule.last_job_id)
        ).scalar()
        if last in ("pending", "running"):
            return f"previous job {schedule.last_job_id} is still {last}"
    return None


def fire_schedule(
    conn: Connection,
    backend: Backend,
    dispatch_statuses: Sequence[str],
    *,
    schedule: Schedule,
    new_jobs: Sequence[NewJob],
    next_fire_at: int | None,
    last_fire_at: int,
    now: int,
) -> FireOutcome:
    """Advance `schedule` past its due fires and create `new_jobs` for them, exactly once.

    `schedule` is the row as the firer read it: its `next_fire_at` is the fence.
    """
    assert schedule.next_fire_at is not None and new_jobs
    reason = skip_reason(conn, schedule=schedule, dispatch_statuses=dispatch_statuses)
    advanced = advance_schedule(
        conn,
        schedule_id=schedule.schedule_id,
        seen=schedule.next_fire_at,
        next_fire_at=next_fire_at,
        last_fire_at=last_fire_at,
        now=now,
        last_job_id=None if reason else new_jobs[-1].job_id,
    )
    if not advanced:
        return FireOutcome("raced")
    if reason:
        return FireOutcome("skipped", reason=reason)
    insert = backend.insert_ignoring_conflicts(
        jobs, [new_job_row(j, now) for j in new_jobs], key=()
    )
    created = set(conn.execute(insert.returning(jobs.c.job_id)).scalars())
    ids = [j.job_id for j in new_jobs]
    return FireOutcome(
        "fired",
        created=tuple(i for i in ids if i in created),
        existing=tuple(i for i in ids if i not in created),
    )
