"""The malformed sweep: pending rows whose `next_attempt_at` no claim can ever select.

Text or a BLOB in `next_attempt_at` (SQLite sorts both after every number), a time past
year 9999 or before 1970: the due query never takes such a row, so no delivery would
ever end it. The sweep ends each one `failed/malformed` with one attempt row, naming the
column. Both bounds are range conditions on `idx_renewal_jobs_status_due`, the same SQL
on both dialects.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, or_, select, update

from renewald.store.attempts import ended_failed, insert_untried
from renewald.store.decode import MAX_EPOCH_MS, malformed_error
from renewald.store.models import MALFORMED, AttemptResult, Job
from renewald.store.schema import renewal_jobs

jobs = renewal_jobs


@dataclass(frozen=True)
class Swept:
    """One job the sweep ended, for the daemon's log line."""

    job_id: str
    attempt_id: str
    attempt_no: int
    conversation: str
    error: str


def _unclaimable():  # type: ignore[no-untyped-def]
    return (
        jobs.c.status == "pending",
        or_(jobs.c.next_attempt_at > MAX_EPOCH_MS, jobs.c.next_attempt_at < 0),
    )


def any_unclaimable(conn: Connection) -> bool:
    """Whether the sweep has anything to end: read first, so that an idle daemon's sweep
    takes no write lock (on SQLite, one the tracker would have to wait for)."""
    return conn.execute(select(jobs.c.job_id).where(*_unclaimable()).limit(1)).first() is not None


def sweep_malformed(
    conn: Connection, *, now: int, owner: str, log_path: str | None, limit: int
) -> list[Swept]:
    """End up to `limit` unclaimable pending jobs failed/malformed; returns what it ended."""
    rows = conn.execute(select(jobs).where(*_unclaimable()).limit(limit)).mappings().all()
    swept: list[Swept] = []
    for row in rows:
        job = Job.from_row(row)
        problems = job.problems or (
            f"renewal_jobs.next_attempt_at is out of range ({row['next_attempt_at']!r})",
        )
        ended = _end(conn, job, problems, _unclaimable(), now=now, owner=owner, log_path=log_path)
        if ended is not None:
            swept.append(ended)
    return swept


def end_held_malformed(
    conn: Connection, *, found: Sequence[Job], now: int, owner: str, log_path: str | None
) -> list[Swept]:
    """End held rows that rescue found but cannot read (a `lease_owner` that does not
    decode, say) failed/malformed, fenced on the claim's token alone: the token is
    renewald's own counter, while the owner as decoded may not match what is stored."""
    swept = []
    for job in sorted(found, key=lambda j: j.job_id):
        fence = (jobs.c.lease_token == job.lease_token, jobs.c.lease_owner.is_not(None))
        ended = _end(conn, job, job.problems, fence, now=now, owner=owner, log_path=log_path)
        if ended is not None:
            swept.append(ended)
    return swept


def _end(
    conn: Connection,
    job: Job,
    problems: Sequence[str],
    fence: Sequence[Any],
    *,
    now: int,
    owner: str,
    log_path: str | None,
) -> Swept | None:
    error = malformed_error(tuple(problems))
    ended = conn.execute(
        update(jobs)
        .where(jobs.c.job_id == job.job_id, *fence)
        .values(ended_failed(MALFORMED, error, at=now, now=now, log_path=log_path))
    ).rowcount
    if ended != 1:
        return None
    attempt_id = uuid.uuid4().hex
    insert_untried(
        conn, AttemptResult.malformed(job, now, error, attempt_id=attempt_id, owner=owner)
    )
    return Swept(job.job_id, attempt_id, job.attempt_count, job.local_conversation_id, error)
