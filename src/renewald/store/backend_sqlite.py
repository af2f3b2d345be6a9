"""SQLite: one file, one writer at a time, other processes noticed through `data_version`.

The engine: WAL, `busy_timeout`, `synchronous`, foreign keys left off (renewald's own jobs
carry a synthetic `message_id` with no row in the tracker's `messages`), and the driver's
implicit transactions replaced by explicit ones (SQLAlchemy's documented recipe): writes
open with `BEGIN IMMEDIATE` so the write lock is taken up front and a busy database shows
up at BEGIN, never halfway through a transaction; read-only connections open with a
deferred `BEGIN` so they never block the tracker's writers. Since every write transaction
holds the database's write lock, a transaction-scoped lock has nothing left to add.

New work: a commit by another connection writes the `-wal` file (a checkpoint, the
database file), and the kernel says so through inotify on their directory (the `-wal`
comes and goes, the directory stays). An event is only a hint: `PRAGMA data_version`,
read from the shared WAL index, changes only when another connection committed, so reads
and (passive, automatic) checkpoints wake nobody. Renewald's own commits do change it
(they come from other connections than the watcher's), but a poll that finds nothing due
writes nothing, so each costs at most one idle poll; and after a wake-up further events
are gathered for `GATHER_S` (5 ms), so a burst of commits (a tracker's batch, a claim and
its finish) wakes the daemon once. An idle database leaves the watcher asleep in `read()`.

Where inotify is missing or fails (not Linux, the watch limit reached, or
`RENEWALD_SQLITE_WATCH=poll`), `data_version` is read every `interval` instead (0.8% of
a core idle at 20 ms in bench/results.md; 50 ms keeps the pickup p50 near 25 ms).
"""

from __future__ import annotations

import os
import select
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    BindParameter,
    ColumnClause,
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    Table,
    bindparam,
    create_engine,
    event,
    func,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.sql.dml import Insert

from renewald.errors import DatabaseError
from renewald.store.backend import READ_ONLY, Capabilities, OnChange, Stop
from renewald.store.decode import sqlite_text
from renewald.store.engine import sqlite_path

try:
    from inotify_simple import INotify
    from inotify_simple import flags as inotify_flags
except ImportError:  # pragma: no cover - a dependency, but only Linux has inotify
    INotify = None  # type: ignore[assignment,misc]

_log = structlog.get_logger("renewald.store.changes")

FORCE_POLL_ENV = "RENEWALD_SQLITE_WATCH"
"""`RENEWALD_SQLITE_WATCH=poll` skips inotify and polls `data_version` (tests, odd mounts)."""
GATHER_S = 0.005


class SqliteBackend(Capabilities):
    name = "sqlite"
    serial_writes = True
    driver_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    unavailable_text: tuple[str, ...] = (
        "database is locked",
        "database is busy",
        "database table is locked",
    )

    def engine_create(
        self, url: URL, *, busy_timeout: float, synchronous: str, pool_size: int
    ) -> Engine:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise DatabaseError(f"sqlite_synchronous must be NORMAL or FULL, got {synchronous!r}")
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None
            # Invalid UTF-8 in a TEXT value must fail one job (store/decode.py), not the read.
            dbapi_connection.text_factory = sqlite_text
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys = OFF")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            mode = "DEFERRED" if conn.get_execution_options().get(READ_ONLY) else "IMMEDIATE"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    def lock_transaction(self, conn: Connection, key: int) -> None:
        """Nothing to take: the write transaction holds the database's write lock."""

    def try_lock_transaction(self, space: int, name: ColumnElement[Any]) -> None:
        """Nothing to take, as for `lock_transaction`."""
        return None

    def insert_ignoring_conflicts(
        self, table: Table, rows: dict[str, Any] | Sequence[dict[str, Any]], *, key: Sequence[str]
    ) -> Insert:
        return sqlite.insert(table).values(rows).on_conflict_do_nothing(index_elements=key or None)

    def rows_from_json(
        self, rows: BindParameter[Any], columns: Sequence[ColumnClause[Any]]
    ) -> FromClause:
        each = func.json_each(rows).table_valued("value")
        return sql_select(
            *(func.json_extract(each.c.value, f"$.{c.name}").label(c.name) for c in columns)
        ).subquery("r")

    def one_of(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        # sqlite3 caches a statement per text: one per list length is cheap enough.
        return column.in_(bindparam(name, expanding=True))

    def watches_changes(self, url: URL) -> bool:
        return True

    def changes_watch(self, url: str, on_change: OnChange, *, stop: Stop, interval: float) -> None:
        path = sqlite_path(url)
        if path is None:
            stop.wait()
            return
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            changed = _data_version_changed(conn)
            on_change()  # whatever was written before we watched
            inotify = _inotify_on(path.parent)
            if inotify is None:
                _poll(changed, on_change, stop=stop, interval=interval)
                return
            with inotify:
                _follow(inotify, path.name, changed, on_change, stop=stop)
        finally:
            conn.close()


def _data_version_changed(conn: sqlite3.Connection) -> Callable[[], bool]:
    """A check of whether another connection committed since the last check."""
    last = conn.execute("PRAGMA data_version").fetchone()[0]

    def changed() -> bool:
        nonlocal last
        current = conn.execute("PRAGMA data_version").fetchone()[0]
        if current == last:
            return False
        last = current
        return True

    return changed


def _inotify_on(directory: Path) -> INotify | None:
    """An inotify watch of writes in `directory`, or None where there can be none."""
    if os.environ.get(FORCE_POLL_ENV, "").lower() == "poll":
        _log.info("changes.polling", reason=f"{FORCE_POLL_ENV}=poll")
        return None
    if INotify is None:
        _log.info("changes.polling", reason="inotify_simple is not importable")
        return None
    try:
        inotify = INotify()
    except OSError as exc:
        _log.info("changes.polling", reason=f"inotify: {exc.strerror or exc}")
        return None
    mask = inotify_flags.MODIFY | inotify_flags.CREATE | inotify_flags.MOVED_TO
    try:
        inotify.add_watch(directory, mask)
    except OSError as exc:
        inotify.close()
        _log.info("changes.polling", reason=f"inotify on {directory}: {exc.strerror or exc}")
        return None
    return inotify


def _follow(
    inotify: INotify,
    name: str,
    changed: Callable[[], bool],
    on_change: OnChange,
    *,
    stop: Stop,
) -> None:
    names = {name, f"{name}-wal"}
    while True:
        select.select([inotify.fileno(), stop.fileno()], [], [])
        if stop.is_set():
            return
        events = inotify.read(timeout=0)
        if any(e.name in names for e in events) and changed():
            on_change()
            stop.wait(GATHER_S)


def _poll(changed: Callable[[], bool], on_change: OnChange, *, stop: Stop, interval: float) -> None:
    while not stop.wait(interval):
        if changed():
            on_change()


SQLITE = SqliteBackend()
