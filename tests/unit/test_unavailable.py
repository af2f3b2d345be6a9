"""Which database errors mean "down, wait" (exit 69) and which mean "fix it" (exit 2);
`[database] startup_wait`; the start-up wait loop, on a fake clock."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from renewald.cli.startup import wait_for_database
from renewald.config import load_config
from renewald.daemon.sdnotify import Notifier
from renewald.errors import (
    EX_UNAVAILABLE,
    EX_USAGE,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
)
from renewald.store.engine import describe, is_transient, is_unavailable


def wrapped(orig: BaseException, cls: type[DBAPIError] = OperationalError) -> DBAPIError:
    return cls("SELECT 1", {}, orig)


def _pg(message: str, sqlstate: str) -> psycopg.Error:
    error: psycopg.Error = psycopg.errors.lookup(sqlstate)(message)
    return error


@pytest.mark.parametrize(
    "orig",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database table is locked"),
        psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
            "Connection refused\n\tIs the server running on that host?"
        ),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.OperationalError("connection timeout expired"),
        psycopg.OperationalError(
            "failed to resolve host 'db': Temporary failure in name resolution"
        ),
        _pg("the database system is starting up", "57P03"),
        _pg("terminating connection due to administrator command", "57P01"),
        _pg("sorry, too many clients already", "53300"),
    ],
    ids=lambda e: str(e)[:40],
)
def test_unavailable(orig: BaseException) -> None:
    exc = wrapped(orig)
    assert is_unavailable(exc)
    assert is_transient(exc)
    assert "\n" not in describe(exc)


@pytest.mark.parametrize(
    "orig",
    [
        psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  database "nope" does not exist'
        ),
        psycopg.OperationalError('FATAL:  password authentication failed for user "x"'),
        psycopg.OperationalError("failed to resolve host 'dbb': Name or service not known"),
        sqlite3.OperationalError("unable to open database file"),
        sqlite3.OperationalError("no such table: renewal_jobs"),
    ],
    ids=lambda e: str(e)[:40],
)
def test_a_person_must_fix_it(orig: BaseException) -> None:
    exc = wrapped(orig)
    assert not is_unavailable(exc)
    assert not is_transient(exc)


def test_lost_races_are_transient_but_not_unavailable() -> None:
    for state in ("40001", "40P01"):
        exc = wrapped(_pg("could not serialize access", state))
        assert is_transient(exc)
        assert not is_unavailable(exc)


def test_an_invalidated_connection_is_unavailable() -> None:
    exc = DBAPIError("SELECT 1", {}, Exception("boom"), connection_invalidated=True)
    assert is_unavailable(exc) and is_transient(exc)


def test_only_driver_errors_are_judged_by_their_text() -> None:
    assert not is_unavailable(ValueError("connection refused"))
    assert not is_unavailable(wrapped(sqlite3.ProgrammingError("x"), ProgrammingError))


def test_exit_codes() -> None:
    assert DatabaseUnavailable().exit_code == EX_UNAVAILABLE == 69
    assert isinstance(DatabaseUnavailable(), DatabaseError)
    assert DatabaseError().exit_code == ConfigError().exit_code == EX_USAGE == 2


# -- [database] startup_wait ----------------------------------------------------------


def test_startup_wait_default_and_values() -> None:
    assert load_config(env={}).database.startup_wait == 90.0
    env = {"RENEWALD_DATABASE_STARTUP_WAIT": "2m"}
    assert load_config(env=env).database.startup_wait == 120.0
    assert load_config(env={"RENEWALD_DATABASE_STARTUP_WAIT": "0s"}).database.startup_wait == 0


@pytest.mark.parametrize("value", ["soon", "-5s", "90"])
def test_startup_wait_bad_values_are_one_line(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={"RENEWALD_DATABASE_STARTUP_WAIT": value})
    message = str(err.value)
    assert "RENEWALD_DATABASE_STARTUP_WAIT" in message and "\n" not in message


def test_startup_wait_in_a_file(tmp_path: Any) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[database]\nstartup_wait = 30\n")
    with pytest.raises(ConfigError, match=r"\[database\] startup_wait: 30 has no unit"):
        load_config(path, env={})


# -- the wait loop ----------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[dict[str, object]] = []

    def notify(self, **fields: object) -> bool:
        self.sent.append(fields)
        return True


def flaky(clock: FakeTime, *, down_until: float, cost: float = 0.5) -> Any:
    budgets: list[float] = []

    def attempt(budget: float) -> str:
        budgets.append(budget)
        clock.now += min(cost, budget)
        if clock.now < down_until:
            raise DatabaseUnavailable("database unavailable: connection refused")
        return "store"

    attempt.budgets = budgets  # type: ignore[attr-defined]
    return attempt


def test_waits_until_the_database_answers() -> None:
    clock, notifier = FakeTime(), Recorder()
    attempt = flaky(clock, down_until=10.0)
    got = wait_for_database(
        attempt, wait=90, notifier=notifier, what="run", monotonic=clock.monotonic,
        sleep=clock.sleep,
    )  # fmt: skip
    assert got == "store"
    assert 10.0 <= clock.now < 16.0
    assert max(clock.sleeps) <= 5.0
    assert all(b <= 3.0 for b in attempt.budgets)
    assert notifier.sent and all("EXTEND_TIMEOUT_USEC" in m for m in notifier.sent)
    first = notifier.sent[0]["EXTEND_TIMEOUT_USEC"]
    assert isinstance(first, int) and first > 89 * 1_000_000  # the rest of the wait + margin


def test_gives_up_after_startup_wait() -> None:
    clock = FakeTime()
    with pytest.raises(DatabaseUnavailable, match=r"after waiting 5s.*startup_wait = 5s"):
        wait_for_database(
            flaky(clock, down_until=1e9), wait=5, notifier=Recorder(), what="migrate",
            monotonic=clock.monotonic, sleep=clock.sleep,
        )  # fmt: skip
    assert 5.0 <= clock.now < 6.0


def test_other_errors_are_not_waited_for() -> None:
    clock = FakeTime()

    def attempt(budget: float) -> str:
        raise DatabaseError("database url 'x': only sqlite:/// and postgresql are supported")

    with pytest.raises(DatabaseError) as err:
        wait_for_database(
            attempt, wait=90, notifier=Recorder(), what="run", monotonic=clock.monotonic,
            sleep=clock.sleep,
        )  # fmt: skip
    assert not isinstance(err.value, DatabaseUnavailable)
    assert clock.now == 0


def test_no_wait_fails_at_the_first_attempt() -> None:
    clock = FakeTime()
    with pytest.raises(DatabaseUnavailable):
        wait_for_database(
            flaky(clock, down_until=1e9), wait=0, notifier=Recorder(), what="run",
            monotonic=clock.monotonic, sleep=clock.sleep,
        )  # fmt: skip
    assert clock.sleeps == []
