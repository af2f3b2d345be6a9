"""The registry of live daemons: who holds what, and who stopped answering."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from renewald.store.schema import renewal_jobs, renewald_daemons

daemons = renewald_daemons


@dataclass(frozen=True)
class DaemonRow:
    owner_id: str
    host: str
    pid: int
    version: str
    started_at: int
    heartbeat_at: int
    status: str | None


def register_daemon(
    conn: Connection, *, owner: str, host: str, pid: int, version: str, now: int
) -> None:
    """A fresh row for this owner (any row it left is replaced), started and beating now."""
    unregister_daemon(conn, owner=owner)
    row = DaemonRow(owner, host, pid, version, started_at=now, heartbeat_at=now, status="starting")
    conn.execute(insert(daemons).values(asdict(row)))


def heartbeat_daemon(conn: Connection, *, owner: str, now: int, status: str | None) -> bool:
    """Refresh this daemon's row; False when the row was gone (re-registered by the caller)."""
    matched = conn.execute(
        update(daemons).where(daemons.c.owner_id == owner).values(heartbeat_at=now, status=status)
    ).rowcount
    return matched == 1


def unregister_daemon(conn: Connection, *, owner: str) -> None:
    conn.execute(delete(daemons).where(daemons.c.owner_id == owner))


def list_daemons(conn: Connection) -> list[DaemonRow]:
    rows = conn.execute(select(daemons).order_by(daemons.c.started_at)).mappings()
    return [DaemonRow(**dict(r)) for r in rows]


def prune_daemons(conn: Connection, *, stale_before: int) -> int:
    return conn.execute(delete(daemons).where(daemons.c.heartbeat_at < stale_before)).rowcount


def running_by_owner(conn: Connection) -> dict[str, int]:
    """How many running jobs each lease owner holds (`renewald daemons`' IN FLIGHT)."""
    jobs = renewal_jobs
    rows = conn.execute(
        select(jobs.c.lease_owner, func.count())
        .where(jobs.c.status == "running", jobs.c.lease_owner.is_not(None))
        .group_by(jobs.c.lease_owner)
    ).all()
    return {str(owner): int(n) for owner, n in rows}
