"""Transactions: every store method is one, retried while the database is busy or away.

Writes on SQLite open with `BEGIN IMMEDIATE` (see backend_sqlite.py); a busy database (the
tracker writing) or a dropped PostgreSQL connection is retried with short jittered
backoff, because a transaction here is all or nothing and running it again is safe.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from renewald.errors import DatabaseError, DatabaseUnavailable
from renewald.store.due import AUTO_ONLY, DueGate
from renewald.store.engine import (
    READ_ONLY,
    Backend,
    backend_of,
    describe,
    is_transient,
    is_unavailable,
)
from renewald.store.migrate import check_schema

T = TypeVar("T")
_log = structlog.get_logger("renewald.store")

# How long a transaction keeps retrying a busy/locked database or a lost connection,
# unless the caller gives its own budget (`Store(retry_for=...)`, `with_budget`): the
# daemon's duties, the command line and the metrics reader each choose theirs.
RETRY_FOR = 30.0
SLOW_RETRY = 1.0

_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_LOCK = threading.Lock()


def _write_lock(engine: Engine) -> threading.RLock:
    """The process's one lock per engine, shared by every `Store` made over it."""
    with _WRITE_LOCKS_LOCK:
        return _WRITE_LOCKS.setdefault(engine, threading.RLock())


class Transactions:
    """The engine, its backend and the retrying transaction every store method runs in."""

    def __init__(
        self,
        engine: Engine,
        *,
        retry_for: float = RETRY_FOR,
        sleep: Callable[[float], None] = time.sleep,
        backend: Backend | None = None,
        due: DueGate = AUTO_ONLY,
    ) -> None:
        self.engine = engine
        self.due = due
        self.backend = backend or backend_of(engine)
        self.dialect = self.backend.name
        self.retry_for = retry_for
        self._sleep = sleep
        lock = _write_lock(engine) if self.backend.serial_writes else None
        self._writing: Callable[[], AbstractContextManager[object]] = (
            (lambda: lock) if lock is not None else nullcontext
        )

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ----------------------------------------------------------------

    def _run(self, fn: Callable[[Connection], T], *, write: bool, alone: bool = False) -> T:
        started = time.monotonic()
        delay = 0.005
        tries = 0
        while True:
            tries += 1
            try:
                if alone:
                    with self.engine.connect() as conn:
                        result = fn(conn.execution_options(isolation_level="AUTOCOMMIT"))
                elif write:
                    with self._writing(), self.engine.begin() as conn:
                        result = fn(conn)
                else:
                    with self.engine.connect() as conn:
                        conn = conn.execution_options(**{READ_ONLY: True})
                        with conn.begin():
                            result = fn(conn)
                waited = time.monotonic() - started
                if tries > 1 and waited >= SLOW_RETRY:
                    _log.warning("database.busy", tries=tries, waited=f"{waited:.1f}s")
                return result
            except DBAPIError as exc:
                pause = delay * random.uniform(0.5, 1.5)
                if not is_transient(exc) or time.monotonic() - started + pause > self.retry_for:
                    raise
                self._sleep(pause)
                delay = min(delay * 2, 0.5)

    def write(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=True)

    def write_statement(self, fn: Callable[[Connection], T]) -> T:
        """`write` for `fn` that runs one statement, whose running twice changes nothing
        more than once. Where a statement is a transaction of its own and a round trip
        (`Backend.bare_statements`), it is sent without BEGIN and COMMIT: one round trip,
        not three."""
        return self._run(fn, write=True, alone=self.backend.bare_statements)

    def read(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=False)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A raw write transaction, for callers composing several store functions at once."""
        with self._writing(), self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        """Raise `DatabaseUnavailable` when the database stays unreachable for the retry
        budget, `DatabaseError` when it answers with something a person must fix."""
        try:
            self.read(lambda conn: conn.execute(text("SELECT 1")).scalar())
        except DBAPIError as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from None
            raise DatabaseError(f"cannot use the database: {describe(exc)}") from None

    def check_schema(self) -> None:
        self.read(check_schema)
