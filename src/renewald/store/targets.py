"""Breaker state per delivery target (`renewal_target_pauses`), shared by every daemon.

A row exists only while its target is in trouble: transient failures counted, or the
breaker open. A delivery that succeeds deletes it. Decisions (when to open, how long)
belong to `renewald.daemon.breaker`; this module only reads and writes rows, with the
row locked while a decision is applied so that two daemons counting failures of one
target never lose a count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Select, delete, select, update

from renewald.store.backend import Backend
from renewald.store.models import TargetPause
from renewald.store.schema import renewal_target_pauses

pauses = renewal_target_pauses

Change = Callable[[TargetPause | None], TargetPause | None]


def list_target_pauses(conn: Connection) -> list[TargetPause]:
    """Every target in trouble (the table holds nothing else)."""
    rows = conn.execute(_pauses_query()).mappings()
    return [TargetPause.from_row(r) for r in rows]


@functools.cache
def _pauses_query() -> Select[Any]:
    """Built once: the breakers refresh from it at every poll."""
    return select(pauses).order_by(pauses.c.target_key)


def get_target_pause(conn: Connection, target_key: str) -> TargetPause | None:
    row = conn.execute(select(pauses).where(pauses.c.target_key == target_key)).mappings().first()
    return TargetPause.from_row(row) if row else None


def change_target_pause(
    conn: Connection,
    backend: Backend,
    *,
    target_key: str,
    adapter: str | None,
    now: int,
    change: Change,
) -> tuple[TargetPause | None, TargetPause | None]:
    """Apply `change` to the target's row while holding it locked; returns (before, after).

    `change` gets the row (None when there was none) and returns the new row, or None to
    delete it. It must be a pure function: a retried transaction calls it again.
    SQLite holds the database write lock already (`BEGIN IMMEDIATE`); PostgreSQL locks
    the row with `FOR UPDATE`, which SQLite's compiler leaves out.
    """
    # The empty row is inserted unless one exists, so that there is always a row to lock:
    # two daemons inserting the first failure of a target at once must not collide.
    # RETURNING says whether it was inserted (rowcount is not reliable for ON CONFLICT).
    missing = backend.insert_ignoring_conflicts(
        pauses,
        {"target_key": target_key, "adapter": adapter, "failures": 0, "updated_at": now},
        key=["target_key"],
    )
    inserted = conn.execute(missing.returning(pauses.c.target_key)).first() is not None
    row = (
        conn.execute(select(pauses).where(pauses.c.target_key == target_key).with_for_update())
        .mappings()
        .one()
    )
    before = None if inserted else TargetPause.from_row(row)
    after = change(before)
    if after is None:
        conn.execute(delete(pauses).where(pauses.c.target_key == target_key))
        return before, None
    if after.target_key != target_key:
        raise ValueError(f"a change of {target_key!r} returned a row for {after.target_key!r}")
    values = after.as_dict()
    values.pop("target_key")
    values["updated_at"] = now
    conn.execute(update(pauses).where(pauses.c.target_key == target_key).values(**values))
    return before, TargetPause(**{**after.as_dict(), "updated_at": now})


def claim_target_probe(
    conn: Connection, *, target_key: str, paused_until: int, now: int, probe_until: int
) -> bool:
    """Take the one probe of a half-open target: move `paused_until` (as this daemon saw
    it, already past) to `probe_until`. Fenced like a lease: of all daemons that saw the
    same row, exactly one matches; the others find the row changed and stay paused."""
    matched = conn.execute(
        update(pauses)
        .where(
            pauses.c.target_key == target_key,
            pauses.c.paused_until == paused_until,
            pauses.c.paused_until <= now,
        )
        .values(paused_until=probe_until, updated_at=now)
    ).rowcount
    return matched == 1


def clear_target_pause(conn: Connection, *, target_key: str) -> TargetPause | None:
    """Forget a target's trouble (it accepted a delivery); returns the row that was there."""
    found = get_target_pause(conn, target_key)
    if found is not None:
        conn.execute(delete(pauses).where(pauses.c.target_key == target_key))
    return found
