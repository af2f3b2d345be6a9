"""One backend per dialect, chosen from the URL; anything else is refused (exit 2)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from renewald.errors import EX_USAGE, DatabaseError
from renewald.store.attempts import _plain_insert
from renewald.store.engine import BACKENDS, backend_for
from renewald.store.schema import renewal_job_attempts

_table = Table("t", MetaData(), Column("k", Integer, primary_key=True), Column("v", Integer))


@pytest.mark.parametrize(
    ("url", "name", "skip_locked"),
    [
        ("sqlite:///x.db", "sqlite", False),
        ("sqlite+pysqlite:///x.db", "sqlite", False),
        ("postgresql://u@h/d", "postgresql", True),
        ("postgresql+psycopg://u@h/d", "postgresql", True),
    ],
)
def test_the_url_chooses_the_backend(url: str, name: str, skip_locked: bool) -> None:
    backend = backend_for(url)
    assert backend is BACKENDS[name]
    assert (backend.name, backend.skip_locked) == (name, skip_locked)


@pytest.mark.parametrize("url", ["mysql://x/y", "mssql+pyodbc://x/y", "oracle://x"])
def test_an_unknown_dialect_is_the_users_error(url: str) -> None:
    with pytest.raises(DatabaseError, match="only sqlite:/// and postgresql") as caught:
        backend_for(url)
    assert caught.value.exit_code == EX_USAGE


def test_not_a_url() -> None:
    with pytest.raises(DatabaseError, match="is not a SQLAlchemy URL"):
        backend_for("no url at all")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_insert_ignoring_conflicts(name: str) -> None:
    backend = BACKENDS[name]
    stmt = backend.insert_ignoring_conflicts(_table, {"k": 1, "v": 2}, key=["k"])
    sql = str(stmt.compile(dialect=_dialect(name)))
    assert "ON CONFLICT (k) DO NOTHING" in sql
    anywhere = backend.insert_ignoring_conflicts(_table, [{"k": 1, "v": 2}], key=())
    assert "ON CONFLICT DO NOTHING" in str(anywhere.compile(dialect=_dialect(name)))


def _dialect(name: str) -> Dialect:
    return {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[name]


class _Captured(Exception):
    def __str__(self) -> str:
        return "captured"


def test_a_pooler_url_turns_off_prepared_statements_and_listen() -> None:
    from sqlalchemy.engine import make_url

    from renewald.store.backend import Stop
    from renewald.store.backend_postgresql import POSTGRESQL, pooler_of
    from renewald.store.engine import make_engine

    url = "postgresql+psycopg://u@127.0.0.1:1/d?pooler=pgbouncer"
    assert pooler_of(make_url(url)) == "pgbouncer"
    assert pooler_of(make_url("postgresql+psycopg://u@h/d")) is None
    engine = make_engine(url)
    assert engine.url.query["pooler"] == "pgbouncer", "the watcher reads it from here"
    seen: dict[str, object] = {}

    @event.listens_for(engine, "do_connect")
    def _capture(_dialect, _record, _cargs, cparams):  # type: ignore[no-untyped-def]
        seen.update(cparams)
        raise _Captured

    with pytest.raises(Exception, match="captured"):
        engine.connect()
    engine.dispose()
    assert "pooler" not in seen, "libpq refuses unknown keys"
    assert seen["prepare_threshold"] is None
    calls: list[int] = []
    stop = Stop()
    stop.set()
    # Nothing listens through a transaction pooler (port 1 would refuse a connection):
    # one call for the first poll, then the regular polls are all there is.
    POSTGRESQL.changes_watch(url, lambda: calls.append(1), stop=stop, interval=0.01)
    stop.close()
    assert calls == [1]


@pytest.mark.parametrize("value", ["pgpool", "PgBouncer", "none"])
def test_an_unknown_pooler_is_the_users_error(value: str) -> None:
    from renewald.store.engine import make_engine

    with pytest.raises(DatabaseError, match="pooler=pgbouncer") as caught:
        make_engine(f"postgresql+psycopg://u@h/d?pooler={value}")
    assert caught.value.exit_code == EX_USAGE


def test_rows_go_to_the_driver_as_they_are_only_where_no_column_converts_them() -> None:
    dialect = sqlite.dialect()
    names = ("attempt_id", "job_id", "started_at")
    assert _plain_insert(dialect, renewal_job_attempts, names) == (
        "INSERT INTO renewal_job_attempts (attempt_id, job_id, started_at) VALUES (?, ?, ?)",
        names,
    )
    dated = Table(
        "dated", MetaData(), Column("k", Integer, primary_key=True), Column("at", DateTime)
    )
    assert _plain_insert(dialect, dated, ("k", "at")) is None
