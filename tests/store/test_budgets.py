"""Retry budgets: each store call retries an unavailable database for its own budget,
then raises; a daemon tick that ends in a database error still proves the loop alive."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, ProgrammingError

from renewald.store import Store
from tests.store.factories import locked

T0 = 1_800_000_000_000


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
