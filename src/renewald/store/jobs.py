"""Job queries the CLI and the daemon share: insert, get, list, what is due and when."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError

from renewald.errors import DuplicateJob
from renewald.store.decode import MAX_EPOCH_MS, epoch_ms_or_none
from renewald.store.models import Attempt, Job, NewJob
from renewald.store.schema import (
    conversation_links,
    local_conversations,
    renewal_job_attempts,
    renewal_jobs,
)

jobs = renewal_jobs
convs = local_conversations


def ensure_conversation(
    conn: Connection, *, conversation_id: str, platform: str, status: str, now: int
) -> bool:
    """Create the conversation row when missing; returns whether it was created."""
    found = conn.execute(
        select(convs.c.local_conversation_id).where(
            convs.c.local_conversation_id == conversation_id
        )
    ).first()
    if found:
        return False
    conn.execute(
        insert(convs).values(
            local_conversation_id=conversation_id,
            platform=platform,
            automation_status=status,
            created_at=now,
            updated_at=now,
        )
    )
    return True


def new_job_row(job: NewJob, now: int) -> dict[str, Any]:
    """The `renewal_jobs` row of a job renewald creates: pending, never attempted."""
    return {
        "job_id": job.job_id,
        "local_conversation_id": job.local_conversation_id,
        "message_id": job.message_id,
        "status": "pending",
        "payload": job.payload,
        "payload_kind": job.payload_kind,
        "target_snapshot": job.target_snapshot,
        "target_kind": job.target_kind,
        "attempt_count": 0,
        "max_attempts": job.max_attempts,
        "next_attempt_at": job.next_attempt_at,
        "deadline_at": job.deadline_at,
        "created_at": now,
        "updated_at": now,
    }


def insert_job(conn: Connection, *, job: NewJob, now: int) -> None:
    clash = conn.execute(
        select(jobs.c.job_id, jobs.c.message_id).where(
            or_(jobs.c.job_id == job.job_id, jobs.c.message_id == job.message_id)
        )
    ).first()
    if clash:
        what = f"job id {job.job_id}" if clash.job_id == job.job_id else f"message {job.message_id}"
        raise DuplicateJob(f"{what} already has a job ({clash.job_id})")
    try:
        conn.execute(insert(jobs).values(new_job_row(job, now)))
    except IntegrityError as exc:  # lost a race with another writer of the same ids
        raise DuplicateJob(f"job {job.job_id} or message {job.message_id} already exists") from exc


def get_job(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    return Job.from_row(row) if row else None


@dataclass(frozen=True)
class JobFilter:
    """What `renewald jobs` selects by: status, conversation, `updated_at >= since`,
    reason (the terminal reason, or the start of its latest attempt's decision reason:
    `backoff`, `retry_after`, `breaker`), and the target kind the daemon would use (the
    job's own, else its conversation's active link's). Empty: every job."""

    statuses: Sequence[str] = ()
    conversation: str | None = None
    since: int | None = None
    reasons: Sequence[str] = ()
    target_kinds: Sequence[str] = ()

    def where(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.statuses:
            where.append(jobs.c.status.in_(list(self.statuses)))
        if self.conversation:
            where.append(jobs.c.local_conversation_id == self.conversation)
        if self.since is not None:
            where.append(jobs.c.updated_at >= self.since)
        if self.reasons:
            where.append(_reason_is_one_of(self.reasons))
        if self.target_kinds:
            where.append(_target_kind_is_one_of(self.target_kinds))
        return where


EVERY_JOB = JobFilter()


def _reason_is_one_of(reasons: Sequence[str]) -> ColumnElement[bool]:
    atts = renewal_job_attempts
    latest = (
        select(atts.c.decision_reason)
        .where(atts.c.job_id == jobs.c.job_id)
        .order_by(atts.c.started_at.desc(), atts.c.finished_at.desc(), atts.c.attempt_id)
        .limit(1)
        .scalar_subquery()
    )
    return or_(
        jobs.c.terminal_reason.in_(list(reasons)),
        *[latest.startswith(r, autoescape=True) for r in reasons],
    )


def _target_kind_is_one_of(target_kinds: Sequence[str]) -> ColumnElement[bool]:
    links = conversation_links
    link_kind = (
        select(links.c.target_kind)
        .where(
            links.c.local_conversation_id == jobs.c.local_conversation_id,
            links.c.is_active == 1,
        )
        .order_by(links.c.observed_at.desc(), links.c.link_id)
        .limit(1)
        .scalar_subquery()
    )
    kind = func.coalesce(func.nullif(jobs.c.target_kind, ""), link_kind)
    return kind.in_(list(target_kinds))


def list_jobs(conn: Connection, where: JobFilter, *, limit: int | None = 50) -> list[Job]:
    """Jobs, newest first (`limit` None: all of them)."""
    query = select(jobs).where(*where.where())
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.job_id)
    if limit is not None:
        query = query.limit(limit)
    return [Job.from_row(r) for r in conn.execute(query).mappings()]


def count_jobs(conn: Connection, where: JobFilter) -> int:
    """How many jobs `list_jobs` would return without a limit."""
    query = select(func.count()).select_from(jobs).where(*where.where())
    return int(conn.execute(query).scalar_one())


def list_attempts(conn: Connection, job_id: str) -> list[Attempt]:
    query = (
        select(renewal_job_attempts)
        .where(renewal_job_attempts.c.job_id == job_id)
        .order_by(renewal_job_attempts.c.attempt_no, renewal_job_attempts.c.started_at)
    )
    return [Attempt.from_row(r) for r in conn.execute(query).mappings()]


def dispatch_allowed(now: int | ColumnElement[int], dispatch_statuses: Sequence[str]):  # type: ignore[no-untyped-def]
    """The conversation gate of the due rule: no conversation row, or one that allows dispatch
    and is not cooling down (DESIGN §2)."""
    gate = convs.alias("gate")
    blocked = exists().where(
        gate.c.local_conversation_id == jobs.c.local_conversation_id,
        or_(
            gate.c.automation_status.not_in(list(dispatch_statuses)),
            # A cooldown that is not a time (SQLite sorts text above every number) holds
            # nothing: the claimed job ends failed/malformed, naming it (store/decode.py).
            and_(gate.c.cooldown_until > now, gate.c.cooldown_until <= MAX_EPOCH_MS),
        ),
    )
    return ~blocked


def due_condition(now: int | ColumnElement[int], dispatch_statuses: Sequence[str]):  # type: ignore[no-untyped-def]
    return and_(
        jobs.c.status == "pending",
        jobs.c.next_attempt_at <= now,
        dispatch_allowed(now, dispatch_statuses),
    )


def count_due(conn: Connection, *, now: int, dispatch_statuses: Sequence[str]) -> int:
    query = select(func.count()).select_from(jobs).where(due_condition(now, dispatch_statuses))
    return int(conn.execute(query).scalar_one())


def next_due_at(conn: Connection, *, now: int) -> int | None:
    """The earliest future `next_attempt_at` of a pending job that could then be dispatched.

    Read straight off `idx_renewal_jobs_status_due`: `min()` over the index range is one
    seek. Conversation gates are not applied: a wake-up for a gated job claims nothing and
    costs one poll, while applying them here would cost a scan.

    The upper bound keeps out what no claim will take (SQLite sorts text and BLOBs after
    every number, and a time past year 9999 is no time): the sweep ends those rows.
    """
    return epoch_ms_or_none(conn.execute(next_due_query(), {"now": now}).scalar())


@functools.cache
def next_due_query() -> Select[tuple[Any]]:
    """`next_due_at`'s statement; its one parameter is `now`. Built once: an idle daemon
    runs it every poll, and building it cost more than running it."""
    now = bindparam("now", type_=BigInteger)
    return select(func.min(jobs.c.next_attempt_at)).where(
        jobs.c.status == "pending",
        jobs.c.next_attempt_at > now,
        jobs.c.next_attempt_at <= MAX_EPOCH_MS,
    )
