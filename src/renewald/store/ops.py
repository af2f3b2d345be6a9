"""What operators write: retry and cancel a job, recorded as an attempt row.

Every function takes a Connection and an explicit `now`; the Store wraps each in one
transaction (bulk retry: one short transaction per batch). State changes are fenced like
the daemon's own (DESIGN §2): they match the status (and, for a running job, the lease
token) they were decided on, and report whether they did.

Explaining, conversations, stats and retention live in their own modules (explain.py,
conversations.py, stats.py, retention.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, or_, select, update

from renewald.store.attempts import CANCEL_REASON, CANCELLED, insert_untried
from renewald.store.jobs import get_job
from renewald.store.models import AttemptResult, Decision, Job
from renewald.store.retention import FINISHED
from renewald.store.schema import (
    renewal_job_attempts,
    renewal_jobs,
)

jobs = renewal_jobs
attempts = renewal_job_attempts

__all__ = [
    "EVERY_FAILED_JOB",
    "RETRY_REASON",
    "Cancelled",
    "FailedJobFilter",
    "OperatorAction",
    "Retried",
    "cancel_job",
    "failed_job_ids",
    "retry_job",
]

RETRY_REASON = "retried by operator"


@dataclass(frozen=True)
class OperatorAction:
    """Who acts and how the action is recorded: the attempt row's owner and log file."""

    operator: str
    log_path: str | None = None


def _operator_write(
    conn: Connection,
    job: Job,
    *,
    fence: Sequence[ColumnElement[bool]],
    values: dict[str, Any],
    outcome: str,
    decision: Decision,
    attempt_id: str,
    now: int,
    action: OperatorAction,
) -> Job | None:
    """Apply `values` to `job` if it still matches `fence`, record the operator's attempt
    row, and return the job as it is now; None (and nothing written) when it changed."""
    if action.log_path is not None:
        values = {**values, "log_path": action.log_path}
    matched = conn.execute(
        update(jobs).where(jobs.c.job_id == job.job_id, *fence).values(**values)
    ).rowcount
    if matched != 1:
        return None
    insert_untried(
        conn, AttemptResult(job, decision, attempt_id, action.operator, outcome, now, now)
    )
    after = get_job(conn, job.job_id)
    assert after is not None
    return after


@dataclass(frozen=True)
class Retried:
    job: Job
    attempt_id: str
    previous_reason: str | None


def retry_job(
    conn: Connection, *, job_id: str, attempt_id: str, now: int, action: OperatorAction
) -> Retried | None:
    """A failed job back to pending, due now, with a fresh attempt budget (attempt_count 0,
    max_attempts kept). Fenced on status='failed'; None when it was not failed."""
    job = get_job(conn, job_id)
    if job is None or job.status != "failed":
        return None
    after = _operator_write(
        conn,
        job,
        fence=[jobs.c.status == "failed"],
        values={
            "status": "pending",
            "attempt_count": 0,
            "next_attempt_at": now,
            "terminal_reason": None,
            "finished_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        },
        outcome="operator_retry",
        decision=Decision("pending", now, None, "retry", RETRY_REASON),
        attempt_id=attempt_id,
        now=now,
        action=action,
    )
    return None if after is None else Retried(after, attempt_id, job.terminal_reason)


@dataclass(frozen=True)
class FailedJobFilter:
    """What `retry --failed` selects among failed jobs: `finished_at >= since`, one
    conversation, only these terminal reasons, none of those. Empty: every failed job."""

    since: int | None = None
    conversation: str | None = None
    reasons: Sequence[str] = ()
    exclude_reasons: Sequence[str] = ()


EVERY_FAILED_JOB = FailedJobFilter()


def failed_job_ids(
    conn: Connection,
    where: FailedJobFilter = EVERY_FAILED_JOB,
    *,
    limit: int | None = None,
    after_id: str | None = None,
) -> list[str]:
    """Failed jobs, by job id, that `retry --failed` selects, after `after_id`."""
    query = select(jobs.c.job_id).where(jobs.c.status == "failed")
    if where.since is not None:
        query = query.where(jobs.c.finished_at >= where.since)
    if where.conversation is not None:
        query = query.where(jobs.c.local_conversation_id == where.conversation)
    if where.reasons:
        query = query.where(jobs.c.terminal_reason.in_(list(where.reasons)))
    if where.exclude_reasons:
        query = query.where(
            or_(
                jobs.c.terminal_reason.is_(None),
                jobs.c.terminal_reason.not_in(where.exclude_reasons),
            )
        )
    if after_id is not None:
        query = query.where(jobs.c.job_id > after_id)
    query = query.order_by(jobs.c.job_id)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).scalars())


@dataclass(frozen=True)
class Cancelled:
    """What `cancel` did: 'cancelled' (was pending, now failed/cancelled), 'cancelling'
    (running, marked: ends cancelled when its attempt returns), 'already_cancelling',
    'finished' (done or failed already: nothing changed)."""

    result: str
    job: Job
    attempt_id: str | None = None


def cancel_job(
    conn: Connection, *, job_id: str, attempt_id: str, now: int, action: OperatorAction
) -> Cancelled | None:
    """Cancel a job; None when there is no such job.

    A pending job ends failed/cancelled at once, with an attempt row. A running job keeps
    running but is marked (`terminal_reason = 'cancelled'`): `attempts.record_results`
    then ends it failed/cancelled whatever its attempt's outcome, and so does a rescue.
    Each write is fenced on the state it was decided on; if a claim or a finish slipped in
    between (PostgreSQL runs them concurrently), the job is read again and decided anew.
    """
    for _ in range(5):
        job = get_job(conn, job_id)
        if job is None:
            return None
        if job.status in FINISHED:
            return Cancelled("finished", job)
        if job.status == "running":
            if job.terminal_reason == CANCELLED:
                return Cancelled("already_cancelling", job)
            marked = _mark_cancelling(conn, job, now=now)
            if marked is not None:
                return Cancelled("cancelling", marked)
            continue
        after = _operator_write(
            conn,
            job,
            fence=[jobs.c.status == job.status, jobs.c.lease_token == job.lease_token],
            values={
                "status": "failed",
                "terminal_reason": CANCELLED,
                # Not the error of an earlier retry: `jobs show` says why the job ended.
                "last_error": CANCEL_REASON,
                "finished_at": now,
                "updated_at": now,
            },
            outcome=CANCELLED,
            decision=Decision("failed", None, CANCELLED, "failed", CANCEL_REASON),
            attempt_id=attempt_id,
            now=now,
            action=action,
        )
        if after is not None:
            return Cancelled(CANCELLED, after, attempt_id)
    raise RuntimeError(f"job {job_id} kept changing while being cancelled")


def _mark_cancelling(conn: Connection, job: Job, *, now: int) -> Job | None:
    """Mark a running job to end cancelled when its attempt returns; None if its lease
    changed in between."""
    matched = conn.execute(
        update(jobs)
        .where(
            jobs.c.job_id == job.job_id,
            jobs.c.status == "running",
            jobs.c.lease_token == job.lease_token,
        )
        .values(terminal_reason=CANCELLED, updated_at=now)
    ).rowcount
    if matched != 1:
        return None
    return get_job(conn, job.job_id)
