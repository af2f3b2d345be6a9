"""Engines for SQLite and PostgreSQL, with every dialect setting settled here once.

SQLite: WAL, `busy_timeout`, `synchronous`, foreign keys left off (renewald's own jobs
carry a synthetic `message_id` with no row in the tracker's `messages`), and the
driver's implicit transactions replaced by explicit ones (SQLAlchemy's documented
recipe): writes open with `BEGIN IMMEDIATE` so the write lock is taken up front and a
busy database shows up at BEGIN, never halfway through a transaction; read-only
connections open with a deferred `BEGIN` so they never block the tracker's writers.

Which errors mean "the database is not there right now" is decided here too
(`is_unavailable`, `is_transient`): the store retries them, the command line turns them
into exit 69 instead of exit 2, and nowhere else guesses from error text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from renewald.errors import DatabaseError
from renewald.store.decode import sqlite_text

READ_ONLY = "renewald_read_only"

# SQLSTATEs of a server that is going away, starting up, full or unreachable.
_UNAVAILABLE_STATES = frozenset(
    {"57P01", "57P02", "57P03", "53300", "08000", "08001", "08003", "08004", "08006"}
)
# A transaction that lost a race: running it again is safe and usually succeeds.
_RACE_STATES = frozenset({"40001", "40P01"})
# Connection failures carry no SQLSTATE (psycopg, sqlite3): their text is all there is.
_UNAVAILABLE_TEXT = (
    "database is locked",
    "database is busy",
    "database table is locked",
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "connection is lost",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "no route to host",
    "network is unreachable",
    "consuming input failed",
    "ssl connection has been closed",
    "the database system is",  # starting up, shutting down, in recovery mode
    "too many clients",
    "temporary failure in name resolution",  # DNS not up yet at boot; a typo is EAI_NONAME
)


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


def _dbapi_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or used right now (refused, gone, locked, starting
    up): worth waiting for, and never the user's fault. A wrong database name, role or
    password is not unavailable: a person must fix it."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = _dbapi_error(exc)
    if getattr(orig, "sqlstate", None) in _UNAVAILABLE_STATES:
        return True
    if not isinstance(exc, DBAPIError) and not _is_driver_error(orig):
        return False
    message = str(orig).lower()
    return any(marker in message for marker in _UNAVAILABLE_TEXT)


def is_transient(exc: BaseException) -> bool:
    """Running the failed transaction again may succeed: the database is unavailable, or
    the transaction lost a serialization or deadlock race."""
    return is_unavailable(exc) or getattr(_dbapi_error(exc), "sqlstate", None) in _RACE_STATES


def describe(exc: BaseException) -> str:
    """The driver's first line about `exc`, for one-line messages."""
    orig = _dbapi_error(exc)
    lines = str(orig).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__


def _is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error | psycopg.Error)
