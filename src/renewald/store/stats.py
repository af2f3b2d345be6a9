"""Queue counts: `renewald stats` (`stats`) and what /metrics reads at scrape time (`gauges`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypedDict

from sqlalchemy import Connection, func, or_, select

from renewald.store.daemons import DaemonRow, list_daemons
from renewald.store.decode import epoch_ms_or_none
from renewald.store.jobs import dispatch_allowed, due_condition
from renewald.store.models import TargetPause
from renewald.store.schema import (
    renewal_jobs,
    renewal_target_pauses,
)

jobs = renewal_jobs
pauses = renewal_target_pauses


@dataclass(frozen=True)
class Stats:
    now: int
    by_status: dict[str, int]
    due: int
    oldest_due_at: int | None
    overdue: int
    held: int  # pending, past next_attempt_at, but held back by its conversation
    unscheduled: int
    running: int
    oldest_running_started_at: int | None
    expired_leases: int
    failures_since: int
    failures: dict[str, int]
    daemons: list[DaemonRow]
    paused_targets: list[TargetPause]

    def as_dict(self, *, stale_before: int) -> dict[str, Any]:
        """Every field in order, each oldest time followed by its age (`_AGE_OF`)."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = out[field.name] = getattr(self, field.name)
            if field.name in _AGE_OF:
                out[_AGE_OF[field.name]] = None if value is None else max(0, self.now - value)
        out["daemons"] = [
            {**asdict(d), "alive": d.heartbeat_at >= stale_before} for d in self.daemons
        ]
        out["paused_targets"] = [p.as_dict() for p in self.paused_targets]
        return out


_AGE_OF = {"oldest_due_at": "oldest_due_age_ms", "oldest_running_started_at": "oldest_lease_age_ms"}


def stats(
    conn: Connection,
    *,
    now: int,
    dispatch_statuses: Sequence[str],
    overdue_before: int,
    failures_since: int,
) -> Stats:
    """Queue counts for `renewald stats`; each is one count or group-by query."""
    by_status = {
        s: int(n)
        for s, n in conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
    }
    counts = _pending_counts(conn, now, dispatch_statuses, overdue_before)
    running, oldest_running, expired = conn.execute(
        select(
            func.count(),
            func.min(jobs.c.started_at),
            func.count().filter(
                or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at <= now)
            ),
        ).where(jobs.c.status == "running")
    ).one()
    failures = {
        (reason or "unknown"): int(n)
        for reason, n in conn.execute(
            select(jobs.c.terminal_reason, func.count())
            .where(jobs.c.status == "failed", jobs.c.finished_at >= failures_since)
            .group_by(jobs.c.terminal_reason)
            .order_by(func.count().desc(), jobs.c.terminal_reason)
        ).all()
    }
    return Stats(
        now=now,
        by_status=by_status,
        **counts,
        running=int(running),
        oldest_running_started_at=epoch_ms_or_none(oldest_running),
        expired_leases=int(expired),
        failures_since=failures_since,
        failures=failures,
        **fleet(conn, now=now),
    )


def _pending_counts(
    conn: Connection, now: int, dispatch_statuses: Sequence[str], overdue_before: int
) -> dict[str, Any]:
    """The pending jobs: due (and the oldest), overdue, held back by their conversation,
    and without a time."""
    due_cond = due_condition(now, dispatch_statuses)
    due, oldest_due = conn.execute(
        select(func.count(), func.min(jobs.c.next_attempt_at)).select_from(jobs).where(due_cond)
    ).one()

    def count(*where: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one())

    return {
        "due": int(due),
        "oldest_due_at": epoch_ms_or_none(oldest_due),
        "overdue": count(due_cond, jobs.c.next_attempt_at < overdue_before),
        "held": count(
            jobs.c.status == "pending",
            jobs.c.next_attempt_at <= now,
            ~dispatch_allowed(now, dispatch_statuses),
        ),
        "unscheduled": count(jobs.c.status == "pending", jobs.c.next_attempt_at.is_(None)),
    }


class Fleet(TypedDict):
    daemons: list[DaemonRow]
    paused_targets: list[TargetPause]


def fleet(conn: Connection, *, now: int) -> Fleet:
    """Who serves the queue and which targets are paused: what `renewald stats` and the
    status page's overview both show below their counts."""
    return {"daemons": list_daemons(conn), "paused_targets": paused_targets(conn, now=now)}


def paused_targets(conn: Connection, *, now: int) -> list[TargetPause]:
    query = (
        select(pauses)
        .where(pauses.c.paused_until > now)
        .order_by(pauses.c.paused_until.desc(), pauses.c.target_key)
    )
    return [TargetPause.from_row(r) for r in conn.execute(query).mappings()]


@dataclass(frozen=True)
class Gauges:
    """What /metrics reads at scrape time: a few cheap counts, one transaction."""

    due: int
    running: int
    oldest_due_at: int | None
    paused_targets: list[TargetPause]


def gauges(conn: Connection, *, now: int, dispatch_statuses: Sequence[str]) -> Gauges:
    due, oldest = conn.execute(
        select(func.count(), func.min(jobs.c.next_attempt_at))
        .select_from(jobs)
        .where(due_condition(now, dispatch_statuses))
    ).one()
    running = conn.execute(
        select(func.count()).select_from(jobs).where(jobs.c.status == "running")
    ).scalar_one()
    return Gauges(int(due), int(running), epoch_ms_or_none(oldest), paused_targets(conn, now=now))
