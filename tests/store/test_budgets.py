"""Retry budgets: each store call retries an unavailable database for its own budget,
then raises; a daemon tick that ends in a database error still proves the loop alive."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, ProgrammingError

from renewald.config import Config, LoggingConfig
from renewald.daemon.service import Service
from renewald.store import Store

T0 = 1_800_000_000_000


def locked(conn: Connection) -> None:
    raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, conn: Connection) -> None:
        self.calls += 1
        locked(conn)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_each_store_has_its_own_budget(store: Store) -> None:
    quick = store.with_budget(0.2)
    assert quick.engine is store.engine and store.retry_for != 0.2
    fn = Counter()
    started = time.monotonic()
    with pytest.raises(OperationalError):
        quick.read(fn)
    assert fn.calls > 1  # retried
    assert time.monotonic() - started < 5  # generous: it gave up, it did not wait 30s


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_error_a_person_must_fix_is_not_retried(store: Store) -> None:
    calls = []

    def broken(conn: Connection) -> None:
        calls.append(1)
        raise ProgrammingError("SELECT", {}, sqlite3.ProgrammingError("no such table: x"))

    with pytest.raises(ProgrammingError):
        store.read(broken)
    assert calls == [1]


class Clock:
    def now_ms(self) -> int:
        return T0

    def monotonic(self) -> float:
        return 1000.0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_tick_ending_in_a_database_error_still_marks_the_watchdog(store: Store, tmp_path) -> None:
    service = Service(Config(logging=LoggingConfig(dir=tmp_path / "logs")), store, clock=Clock())

    def poll_tick() -> None:
        store.with_budget(0.05).read(locked)

    service._guarded(poll_tick)()  # logged, not raised
    assert service.gate.last("poll") == 1000.0
    assert service.polled_ok_at is None  # /healthz still sees no successful poll

    def rescue_tick() -> None:
        raise RuntimeError("a bug in the duty")

    with pytest.raises(RuntimeError):
        service._guarded(rescue_tick)()  # a bug still ends the duty (and the process)
