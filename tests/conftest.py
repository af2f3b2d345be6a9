"""Shared fixtures: one database fixture parametrised over SQLite and PostgreSQL.

PostgreSQL comes from RENEWALD_TEST_PG_URL; each test gets a fresh schema of its own
(named in the URL's search_path, so subprocesses given the URL land in it too). Without a
reachable server the PostgreSQL cases are skipped — except under CI, where that fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from renewald.store import Store, migrate
from tests.store.factories import checked_out

PG_URL = os.environ.get("RENEWALD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_pg_error: str | None = None
_pg_checked = False


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    global _pg_checked, _pg_error
    if not _pg_checked:
        _pg_checked = True
        try:
            engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            _pg_error = f"PostgreSQL at {PG_URL} is not reachable: {str(exc).splitlines()[0]}"
    return _pg_error


def require_pg() -> None:
    reason = _pg_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: PostgreSQL cases must run)")
        pytest.skip(reason)


@contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped on leaving; the URL selects it through
    search_path. Skips (fails under CI) without a PostgreSQL server."""
    require_pg()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'artifact.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url, create=True)
    migrate(s.engine)
    yield s
    assert checked_out(s) == 0, "a connection was left checked out"
    s.close()


# -- slow tests run only when asked for ------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` tests (long crash runs) run with `-m slow` or RENEWALD_SLOW=1, not by default."""
    wanted = "slow" in (config.getoption("markexpr") or "").replace("not slow", "")
    if wanted or os.environ.get("RENEWALD_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or RENEWALD_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)
