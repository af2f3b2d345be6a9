"""Everything that differs between the databases renewald runs on, decided once.

A `Backend` is chosen from the database URL where the engine is made
(`engine.backend_for`) and kept by the `Store`; nothing else asks which database it is.
Each backend is one module (`backend_sqlite.py`, `backend_postgresql.py`) that settles:
how the engine connects, locking (transaction-scoped locks, SKIP LOCKED),
insert-or-ignore, how other processes' writes are noticed, which driver errors mean
"unavailable" or "lost a race", and its capability flags.

A new backend is one new module implementing `Backend`, its entry in `engine.BACKENDS`,
and its branch in each migration under `migrations/versions/` that differs by dialect.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import BindParameter, ColumnClause, ColumnElement, FromClause, Table
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql.dml import Insert

OnChange = Callable[[], None]

# Execution option of a read-only transaction (SQLite opens it DEFERRED, not IMMEDIATE).
READ_ONLY = "renewald_read_only"


class Stop(threading.Event):
    """A stop flag that `select()` can wait on too: once set, `fileno()` is readable, so a
    watcher asleep on its connection or on inotify wakes at once rather than checking the
    flag on a timeout (which would wake an idle daemon a few times a second)."""

    def __init__(self) -> None:
        super().__init__()
        self._read, self._write = os.pipe()

    def set(self) -> None:
        if not self.is_set():
            super().set()
            os.write(self._write, b"\0")

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


class Capabilities:
    """What a database without any of the capabilities `Backend` names would say: a
    backend module's class inherits these and states only what it has."""

    skip_locked = False
    serial_writes = False
    bulk_rows_as_json = False
    bare_statements = False
    unavailable_states: frozenset[str] = frozenset()
    race_states: frozenset[str] = frozenset()


class Backend(Protocol):
    """One database's dialect, behind the names the store uses."""

    name: str
    skip_locked: bool
    """The claim's scan takes `FOR UPDATE SKIP LOCKED` (rows other claims hold are skipped)."""
    serial_writes: bool
    """One writer at a time: the process queues its own write transactions on a lock
    rather than in the database's busy handler, which sleeps in steps of milliseconds."""
    bare_statements: bool
    """A write of one statement goes without BEGIN and COMMIT (each a round trip to a
    server); SQLite keeps its BEGIN IMMEDIATE, which takes the write lock up front."""
    bulk_rows_as_json: bool
    """Many rows are inserted as one statement over a JSON array (`rows_from_json`)
    rather than by the driver's executemany, which costs a round of Python per row."""
    driver_errors: tuple[type[BaseException], ...]
    unavailable_states: frozenset[str]
    """SQLSTATEs of a server that is going away, starting up, full or unreachable."""
    race_states: frozenset[str]
    """SQLSTATEs of a transaction that lost a race: running it again is safe."""
    unavailable_text: tuple[str, ...]
    """Lower-case fragments of driver messages that carry no SQLSTATE but mean "down"."""

    def __hash__(self) -> int:
        """Backends are singletons, so statements built for one are cached by it."""
        ...

    def engine_create(
        self, url: URL, *, busy_timeout: float, synchronous: str, pool_size: int
    ) -> Engine: ...

    def lock_transaction(self, conn: Connection, key: int) -> None:
        """Hold the lock `key` until the transaction ends, waiting for it if need be."""

    def try_lock_transaction(
        self, space: int, name: ColumnElement[Any]
    ) -> ColumnElement[bool] | None:
        """An expression that takes the lock on (`space`, `name`) until the transaction
        ends if no other transaction holds it, without waiting, and is true when it got it
        (the same transaction may take it again); None where every write transaction
        already excludes all others, so there is nothing to take. Keys whose names hash
        alike may share one lock: it only ever excludes too much."""

    def insert_ignoring_conflicts(
        self, table: Table, rows: dict[str, Any] | Sequence[dict[str, Any]], *, key: Sequence[str]
    ) -> Insert:
        """INSERT … ON CONFLICT DO NOTHING: `key` names the conflict target, () means any."""
        ...

    def rows_from_json(
        self, rows: BindParameter[Any], columns: Sequence[ColumnClause[Any]]
    ) -> FromClause:
        """A table of `columns` read from `rows`, one JSON array of objects: a whole batch
        in one parameter, so one cached statement serves every batch size."""
        ...

    def one_of(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """`column` is one of the values of the list parameter `name`, in a statement
        whose text does not depend on the list's length (so the driver prepares it once)."""
        ...

    def watches_changes(self, url: URL) -> bool:
        """Whether `changes_watch` can watch at this URL (behind a transaction pooler it
        only asks for the first poll: nothing LISTENs)."""
        ...

    def changes_watch(self, url: str, on_change: OnChange, *, stop: Stop, interval: float) -> None:
        """Call `on_change()` once connected and whenever another process may have written
        new work, until `stop` is set; raise when the connection fails."""
