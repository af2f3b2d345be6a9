"""The malformed sweep: pending rows whose `next_attempt_at` no claim can ever select.

Text or a BLOB in `next_attempt_at` (SQLite sorts both after every number), a time past
year 9999 or before 1970: the due query never takes such a row, so no delivery would
ever end it. The sweep ends each one `failed/malformed` with one attempt row, naming the
column. Both bounds are range conditions on `idx_renewal_jobs_status_due`, the same SQL
on both dialects.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, insert, or_, select, update

from renewald.store.decode import MAX_EPOCH_MS, malformed_error
from renewald.store.models import Job
from renewald.store.schema import renewal_job_attempts, renewal_jobs

jobs = renewal_jobs
MALFORMED = "malformed"


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
        error = malformed_error(problems)
        ended = conn.execute(
            update(jobs)
            .where(jobs.c.job_id == row["job_id"], *_unclaimable())
            .values(
                status="failed",
                terminal_reason=MALFORMED,
                last_error=error,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
                log_path=log_path if log_path is not None else jobs.c.log_path,
            )
        ).rowcount
        if ended != 1:
            continue
        attempt_id = uuid.uuid4().hex
        conn.execute(
            insert(renewal_job_attempts).values(
                attempt_id=attempt_id,
                job_id=job.job_id,
                attempt_no=job.attempt_count,
                lease_owner=owner,
                lease_token=job.lease_token,
                adapter=None,
                target=None,
                started_at=now,
                finished_at=now,
                duration_ms=0,
                outcome=MALFORMED,
                error_class="MalformedRow",
                error_message=error,
                decision="failed",
                decision_reason=MALFORMED,
            )
        )
        swept.append(
            Swept(job.job_id, attempt_id, job.attempt_count, job.local_conversation_id, error)
        )
    return swept
