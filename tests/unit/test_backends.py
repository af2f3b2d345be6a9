"""One backend per dialect, chosen from the URL; anything else is refused (exit 2)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from renewald.errors import EX_USAGE, DatabaseError
from renewald.store.engine import BACKENDS, backend_for

_table = Table("t", MetaData(), Column("k", Integer, primary_key=True), Column("v", Integer))


@pytest.mark.parametrize(
    ("url", "name", "skip_locked", "listen_notify"),
    [
        ("sqlite:///x.db", "sqlite", False, False),
        ("sqlite+pysqlite:///x.db", "sqlite", False, False),
        ("postgresql://u@h/d", "postgresql", True, True),
        ("postgresql+psycopg://u@h/d", "postgresql", True, True),
    ],
)
def test_the_url_chooses_the_backend(
    url: str, name: str, skip_locked: bool, listen_notify: bool
) -> None:
    backend = backend_for(url)
    assert backend is BACKENDS[name]
    assert (backend.name, backend.skip_locked, backend.listen_notify) == (
        name,
        skip_locked,
        listen_notify,
    )


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
