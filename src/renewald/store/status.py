"""Reads for the status page (renewald/web): overview counts, keyset pages of jobs,
conversations with their next renewal. Read-only, and bounded per request: counts that
could grow with the table stop at `cap`, pages are keyset (never OFFSET), and every
ordered read has an index to walk (migration 0005).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, literal, or_, select

from renewald.store import conversations as conversation_sql
from renewald.store import facts, stats
from renewald.store.backend import Backend
from renewald.store.daemons import DaemonRow
from renewald.store.decode import epoch_ms_or_none
from renewald.store.jobs import EVERY_JOB, JobFilter, due_condition
from renewald.store.models import ClaimedJob, Job, TargetPause
from renewald.store.schema import local_conversations as convs
from renewald.store.schema import renewal_jobs as jobs

# Counts above this are shown as "cap+": an exact count of a million rows costs more
# than a page may spend.
COUNT_CAP = 10_000
# Each due row costs a look at its conversation: a smaller cap keeps a backlog cheap.
DUE_CAP = 1_000


@dataclass(frozen=True)
class Overview:
    by_status: dict[str, int]  # each capped at `cap + 1`
    due: int  # capped at `due_cap + 1`
    oldest_due_at: int | None
    daemons: list[DaemonRow]
    paused_targets: list[TargetPause]
    recent_failures: list[Job]
    cap: int
    due_cap: int


def _status_is(value: str) -> ColumnElement[bool]:
    """`status = 'value'` with the value in the SQL text: psycopg prepares a statement run
    often, and PostgreSQL's generic plan for `status = $1` cannot use the partial indexes
    of one status (`running`), so it scans the table (measured: 0.01 ms became 110 ms)."""
    return jobs.c.status == literal(value, literal_execute=True)


def _capped_count(conn: Connection, *where: object, cap: int) -> int:
    inner = select(jobs.c.job_id).where(*where).limit(cap + 1).subquery()  # type: ignore[arg-type]
    return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())


def overview(
    conn: Connection,
    *,
    now: int,
    dispatch_statuses: Sequence[str],
    failures: int = 10,
    cap: int = COUNT_CAP,
    due_cap: int = DUE_CAP,
) -> Overview:
    """What the overview page shows. Each status count walks its part of an index on
    status and stops after `cap + 1` rows; the due count after `due_cap + 1`."""
    by_status = {
        s: _capped_count(conn, _status_is(s), cap=cap)
        for s in ("pending", "running", "done", "failed")
    }
    due_cond = due_condition(now, dispatch_statuses)
    due = _capped_count(conn, due_cond, cap=due_cap)
    oldest = conn.execute(
        select(jobs.c.next_attempt_at)
        .where(due_cond)
        .order_by(jobs.c.status, jobs.c.next_attempt_at, jobs.c.created_at)
        .limit(1)
    ).scalar()
    failed = conn.execute(
        select(jobs)
        .where(_status_is("failed"))
        .order_by(jobs.c.status.desc(), jobs.c.created_at.desc(), jobs.c.job_id.desc())
        .limit(failures)
    ).mappings()
    return Overview(
        by_status=by_status,
        due=due,
        oldest_due_at=epoch_ms_or_none(oldest),
        **stats.fleet(conn, now=now),
        recent_failures=[Job.from_row(r) for r in failed],
        cap=cap,
        due_cap=due_cap,
    )


@dataclass(frozen=True)
class JobPage:
    facts: list[facts.JobFacts]
    next_after: tuple[int, str] | None  # the cursor of the next page, if there is one


def jobs_page(
    conn: Connection,
    *,
    backend: Backend,
    now: int,
    where: JobFilter = EVERY_JOB,
    after: tuple[int, str] | None = None,
    limit: int = 50,
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
) -> JobPage:
    """One page of `renewald jobs`' selection, newest first (created_at, then job_id, both
    descending, so the index on them is walked backwards), starting after the cursor
    `(created_at, job_id)` of the previous page's last row; with the facts `explain`
    needs for each job."""
    terms = where.where()
    if after is not None:
        at, job_id = after
        # The first conjunct is a plain range the index can seek to.
        terms += [
            jobs.c.created_at <= at,
            or_(jobs.c.created_at < at, and_(jobs.c.created_at == at, jobs.c.job_id < job_id)),
        ]
    order = [jobs.c.created_at.desc(), jobs.c.job_id.desc()]
    if len(where.statuses) == 1:
        order.insert(0, jobs.c.status.desc())
    rows = conn.execute(select(jobs).where(*terms).order_by(*order).limit(limit + 1)).mappings()
    found = [Job.from_row(r) for r in rows]
    more = len(found) > limit
    found = found[:limit]
    cursor = (found[-1].created_at, found[-1].job_id) if more and found else None
    found_facts = facts.jobs_facts(conn, found, backend=backend, now=now, target_of=target_of)
    return JobPage(found_facts, cursor)


@dataclass(frozen=True)
class ConversationRow:
    summary: conversation_sql.ConversationSummary
    title: str | None
    next_renewal_at: int | None


def conversations(conn: Connection, *, limit: int = 100) -> list[ConversationRow]:
    """The most recently updated conversations, their job counts, title and the earliest
    `next_attempt_at` of their pending jobs (read through the per-conversation index)."""
    found = conversation_sql.list_conversations(conn, limit=limit)
    ids = [s.conversation.local_conversation_id for s in found]
    if not ids:
        return []
    nexts: dict[Any, Any] = dict(
        (cid, at)
        for cid, at in conn.execute(
            select(jobs.c.local_conversation_id, func.min(jobs.c.next_attempt_at))
            .where(jobs.c.local_conversation_id.in_(ids), jobs.c.status == "pending")
            .group_by(jobs.c.local_conversation_id)
        ).all()
    )
    titles: dict[Any, Any] = dict(
        (cid, title)
        for cid, title in conn.execute(
            select(convs.c.local_conversation_id, convs.c.title).where(
                convs.c.local_conversation_id.in_(ids)
            )
        ).all()
    )
    return [
        ConversationRow(
            s,
            titles.get(cid) if isinstance(titles.get(cid), str) else None,
            epoch_ms_or_none(nexts.get(cid)),
        )
        for s, cid in zip(found, ids, strict=True)
    ]
