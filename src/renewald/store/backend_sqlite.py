"""SQLite: one file, one writer at a time, other processes noticed through `data_version`.

The engine: WAL, `busy_timeout`, `synchronous`, foreign keys left off (renewald's own jobs
carry a synthetic `message_id` with no row in the tracker's `messages`), and the driver's
implicit transactions replaced by explicit ones (SQLAlchemy's documented recipe): writes
open with `BEGIN IMMEDIATE` so the write lock is taken up front and a busy database shows
up at BEGIN, never halfway through a transaction; read-only connections open with a
deferred `BEGIN` so they never block the tracker's writers. Since every write transaction
holds the database's write lock, a transaction-scoped lock has nothing left to add.

New work: `PRAGMA data_version` changes whenever another connection commits; it is read
from the shared WAL index, so checking it every 50 ms costs next to nothing (0.8% of a
core idle at 20 ms in bench/results.md; 50 ms keeps the pickup p50 near 25 ms).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.dml import Insert

from renewald.errors import DatabaseError
from renewald.store.backend import READ_ONLY, OnChange
from renewald.store.decode import sqlite_text


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


class SqliteBackend:
    name = "sqlite"
    skip_locked = False
    listen_notify = False
    driver_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    unavailable_states: frozenset[str] = frozenset()
    race_states: frozenset[str] = frozenset()
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

    def insert_ignoring_conflicts(
        self, table: Table, rows: dict[str, Any] | Sequence[dict[str, Any]], *, key: Sequence[str]
    ) -> Insert:
        return sqlite.insert(table).values(rows).on_conflict_do_nothing(index_elements=key or None)

    def changes_watch(
        self, url: str, on_change: OnChange, *, stop: threading.Event, interval: float
    ) -> None:
        path = sqlite_path(url)
        if path is None:
            stop.wait()
            return
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            on_change()  # whatever was written before we watched
            while not stop.wait(interval):
                current = conn.execute("PRAGMA data_version").fetchone()[0]
                if current != last:
                    last = current
                    on_change()
        finally:
            conn.close()


SQLITE = SqliteBackend()
