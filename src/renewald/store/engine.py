"""Engines for SQLite and PostgreSQL, with every dialect setting settled here once.

SQLite: WAL, `busy_timeout`, `synchronous`, foreign keys left off (renewald's own jobs
carry a synthetic `message_id` with no row in the tracker's `messages`), and the
driver's implicit transactions replaced by explicit ones (SQLAlchemy's documented
recipe): writes open with `BEGIN IMMEDIATE` so the write lock is taken up front and a
busy database shows up at BEGIN, never halfway through a transaction; read-only
connections open with a deferred `BEGIN` so they never block the tracker's writers.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from renewald.errors import DatabaseError
from renewald.store.decode import sqlite_text

READ_ONLY = "renewald_read_only"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(
    url: str,
    *,
    busy_timeout: float = 5.0,
    synchronous: str = "NORMAL",
    pool_size: int = 5,
) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database url {url!r} is not a SQLAlchemy URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, busy_timeout=busy_timeout, synchronous=synchronous)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2") or parsed.drivername == (
            "postgresql"
        ):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"connect_timeout": max(1, round(busy_timeout))},
        )
    raise DatabaseError(
        f"database url {url!r}: only sqlite:/// and postgresql+psycopg:// are supported"
    )


def _sqlite_engine(url: str, *, busy_timeout: float, synchronous: str) -> Engine:
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
