"""The rows that decide whether a job is due, gathered for `explain`: one job
(`job_facts`) or a page of them in chunks (`jobs_facts`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, select

from renewald.store.backend import Backend
from renewald.store.claim import load_targets
from renewald.store.conversations import Conversation, conversation_from_row
from renewald.store.daemons import DaemonRow
from renewald.store.models import ClaimedJob, Job, TargetPause
from renewald.store.schema import (
    local_conversations,
    renewal_jobs,
    renewald_daemons,
)
from renewald.store.stats import paused_targets

jobs = renewal_jobs
convs = local_conversations


@dataclass(frozen=True)
class JobFacts:
    """Everything the due rule looks at for one job, read in one transaction."""

    job: Job
    conversation: Conversation | None
    target_kind: str | None
    target_key: str | None
    busy: Job | None  # another running job of the same conversation
    daemons: dict[str, DaemonRow] = field(default_factory=dict)  # every registered daemon
    pauses: tuple[TargetPause, ...] = ()
    # Owners whose process is known to be gone though their heartbeat is still fresh: the
    # caller checks the pids of daemons on its own host (`with_gone_owners`).
    gone_owners: frozenset[str] = frozenset()

    def with_gone_owners(self, gone: Callable[[DaemonRow], bool] | None) -> JobFacts:
        if gone is None:
            return self
        found = frozenset(o for o, d in self.daemons.items() if gone(d))
        return replace(self, gone_owners=found) if found else self


def job_facts(
    conn: Connection,
    job_id: str,
    *,
    backend: Backend,
    now: int,
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
) -> JobFacts | None:
    """The job and the rows that decide whether it is due.

    `target_of` maps the job (with its conversation's active link, as a claim would see
    it) to (target kind, breaker key); the key's format belongs to the adapter. Without a
    key, the breaker pauses of the whole adapter kind are returned instead.
    """
    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    if row is None:
        return None
    [facts] = jobs_facts(conn, [Job.from_row(row)], backend=backend, now=now, target_of=target_of)
    return facts


# Conversation ids per IN list: far below SQLite's limit on bound parameters.
_CHUNK = 500


def _chunk_facts(
    conn: Connection,
    backend: Backend,
    chunk: Sequence[Job],
    registry: dict[str, DaemonRow],
    open_pauses: Sequence[TargetPause],
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None,
) -> list[JobFacts]:
    ids = sorted({j.local_conversation_id for j in chunk})
    conversations = {
        r["local_conversation_id"]: conversation_from_row(r)
        for r in conn.execute(
            select(convs).where(convs.c.local_conversation_id.in_(ids))
        ).mappings()
    }
    running: dict[str, list[Job]] = {}
    for r in conn.execute(
        select(jobs)
        .where(jobs.c.local_conversation_id.in_(ids), jobs.c.status == "running")
        .order_by(jobs.c.started_at, jobs.c.job_id)
    ).mappings():
        other = Job.from_row(r)
        running.setdefault(other.local_conversation_id, []).append(other)
    claimed = {c.job.job_id: c for c in load_targets(conn, chunk, backend=backend)}
    out = []
    for job in chunk:
        c = claimed[job.job_id]
        kind, key = target_of(c) if target_of else (job.target_kind, None)
        if kind is None and c.link is not None:
            kind = c.link.target_kind
        busy = next(
            (r for r in running.get(job.local_conversation_id, ()) if r.job_id != job.job_id),
            None,
        )
        out.append(
            JobFacts(
                job=job,
                conversation=conversations.get(job.local_conversation_id),
                target_kind=kind,
                target_key=key,
                busy=busy,
                daemons=registry,
                pauses=_pauses_of(kind, key, open_pauses),
            )
        )
    return out


def _pauses_of(
    kind: str | None, key: str | None, open_pauses: Sequence[TargetPause]
) -> tuple[TargetPause, ...]:
    """The open pauses that hold a job back: its target's, or (no key) its whole kind's."""
    if key is not None:
        return tuple(p for p in open_pauses if p.target_key == key)
    if kind is not None:
        return tuple(p for p in open_pauses if p.adapter == kind)
    return ()


def jobs_facts(
    conn: Connection,
    found: Sequence[Job],
    *,
    backend: Backend,
    now: int,
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
) -> list[JobFacts]:
    """`job_facts` for each of `found`, in that order, read with a few queries per 500
    jobs rather than per job (`renewald jobs` explains every row it lists)."""
    # The registry (one row per running daemon) and the open breaker pauses (one row per
    # failing target) are small enough to read whole.
    registry = {
        r["owner_id"]: DaemonRow(**dict(r))
        for r in conn.execute(select(renewald_daemons)).mappings()
    }
    open_pauses = paused_targets(conn, now=now)
    out: list[JobFacts] = []
    for start in range(0, len(found), _CHUNK):
        chunk = found[start : start + _CHUNK]
        out += _chunk_facts(conn, backend, chunk, registry, open_pauses, target_of)
    return out
