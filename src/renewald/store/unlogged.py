"""Attempts whose JSONL line a crash may have lost (`renewald_unlogged_attempts`).

The recorder marks each attempt row in the transaction that writes it and forgets the
mark once the line is flushed. A mark whose writer is gone (no live registry row) is a
line that may never have been written: the next start on that host writes it from the
ledger, unless the job log already holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select

from renewald.store.models import Attempt
from renewald.store.schema import (
    renewal_job_attempts,
    renewal_jobs,
    renewald_daemons,
    renewald_unlogged_attempts,
)

unlogged = renewald_unlogged_attempts
attempts = renewal_job_attempts


@dataclass(frozen=True)
class Unlogged:
    """An attempt row with no line known to be flushed, and the conversation of its job."""

    attempt: Attempt
    writer: str
    conversation: str | None
    log_path: str | None


def find_unlogged(
    conn: Connection,
    *,
    stale_before: int,
    writers: Sequence[str] | None = None,
    exclude_writer: str | None = None,
    limit: int = 1000,
) -> list[Unlogged]:
    """Marks left by writers with no live registry row (heartbeat at or after
    `stale_before`), optionally only those of `writers`."""
    live = select(renewald_daemons.c.owner_id).where(
        renewald_daemons.c.heartbeat_at >= stale_before
    )
    query = (
        select(
            attempts,
            unlogged.c.owner.label("writer"),
            renewal_jobs.c.local_conversation_id.label("conversation"),
            renewal_jobs.c.log_path.label("job_log_path"),
        )
        .select_from(
            unlogged.join(attempts, attempts.c.attempt_id == unlogged.c.attempt_id).outerjoin(
                renewal_jobs, renewal_jobs.c.job_id == attempts.c.job_id
            )
        )
        .where(unlogged.c.owner.not_in(live))
        .order_by(attempts.c.finished_at, attempts.c.attempt_id)
        .limit(limit)
    )
    if writers is not None:
        query = query.where(unlogged.c.owner.in_(list(writers)))
    if exclude_writer is not None:
        query = query.where(unlogged.c.owner != exclude_writer)
    return [
        Unlogged(
            attempt=Attempt.from_row(row),
            writer=row["writer"],
            conversation=row["conversation"],
            log_path=row["job_log_path"],
        )
        for row in conn.execute(query).mappings()
    ]
