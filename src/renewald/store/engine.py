"""Where the engine is made, and with it the one choice of backend (`backend_for`).

Each backend module (`backend_sqlite.py`, `backend_postgresql.py`) settles its dialect's
settings; this module picks one from the URL, refuses any other (exit 2), and decides
from the backends' lists which errors mean "the database is not there right now"
(`is_unavailable`, `is_transient`): the store retries them, the command line turns them
into exit 69 instead of exit 2, and nowhere else guesses from error text.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from renewald.errors import DatabaseError
from renewald.store.backend import READ_ONLY, Backend

__all__ = [
    "BACKENDS",
    "READ_ONLY",
    "Backend",
    "backend_for",
    "backend_of",
    "describe",
    "is_transient",
    "is_unavailable",
    "make_engine",
    "sqlite_path",
]


class _Backends(Mapping[str, Backend]):
    """The backends by dialect name, each module imported on first use: a SQLite daemon
    never imports psycopg."""

    # name -> (module, attribute, the driver whose errors it classifies)
    _MODULES = {
        "sqlite": ("renewald.store.backend_sqlite", "SQLITE", "sqlite3"),
        "postgresql": ("renewald.store.backend_postgresql", "POSTGRESQL", "psycopg"),
    }

    def __init__(self) -> None:
        self._loaded: dict[str, Backend] = {}

    def __getitem__(self, name: str) -> Backend:
        if name not in self._loaded:
            module, attr, _driver = self._MODULES[name]
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._MODULES)

    def __len__(self) -> int:
        return len(self._MODULES)

    def loaded(self) -> list[Backend]:
        """The backends whose driver is imported: no other driver can have raised."""
        return [self[n] for n, (_m, _a, driver) in self._MODULES.items() if driver in sys.modules]


BACKENDS = _Backends()


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database url {url!r} is not a SQLAlchemy URL") from None


def backend_for(url: str) -> Backend:
    """The backend of a database URL; any other database is the user's error (exit 2)."""
    backend = BACKENDS.get(_parse(url).get_backend_name())
    if backend is None:
        raise DatabaseError(
            f"database url {url!r}: only sqlite:/// and postgresql+psycopg:// are supported"
        )
    return backend


def backend_of(bind: Engine | Connection) -> Backend:
    """The backend of an engine `make_engine` made (it refuses every other dialect)."""
    return BACKENDS[bind.dialect.name]


def make_engine(
    url: str,
    *,
    busy_timeout: float = 5.0,
    synchronous: str = "NORMAL",
    pool_size: int = 5,
) -> Engine:
    return backend_for(url).engine_create(
        _parse(url), busy_timeout=busy_timeout, synchronous=synchronous, pool_size=pool_size
    )


def _dbapi_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or used right now (refused, gone, locked, starting
    up): worth waiting for, and never the user's fault. A wrong database name, role or
    password is not unavailable: a person must fix it."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = _dbapi_error(exc)
    backends = BACKENDS.loaded()
    if any(getattr(orig, "sqlstate", None) in b.unavailable_states for b in backends):
        return True
    drivers = tuple(e for b in backends for e in b.driver_errors)
    if not isinstance(exc, DBAPIError) and not isinstance(orig, drivers):
        return False
    # Connection failures carry no SQLSTATE (psycopg, sqlite3): their text is all there is.
    message = str(orig).lower()
    return any(marker in message for b in backends for marker in b.unavailable_text)


def is_transient(exc: BaseException) -> bool:
    """Running the failed transaction again may succeed: the database is unavailable, or
    the transaction lost a serialization or deadlock race."""
    state = getattr(_dbapi_error(exc), "sqlstate", None)
    return is_unavailable(exc) or any(state in b.race_states for b in BACKENDS.loaded())


def describe(exc: BaseException) -> str:
    """The driver's first line about `exc`, for one-line messages."""
    orig = _dbapi_error(exc)
    lines = str(orig).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__
