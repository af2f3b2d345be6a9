"""Databases for the bench: migrated by renewald itself, filled in bulk, one per run.

SQLite: one template file per data set, copied for every run. PostgreSQL: one schema per
run (`search_path` in the URL, like the test suite), migrated and loaded with COPY; every
schema the bench creates is dropped when it ends. Column names and INSERT statements come
from renewald's schema (bench/statements.py), not from a copy of it.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy.engine import make_url

from bench.common import now_ms
from bench.statements import insert_sql
from renewald.store import Store, migrate
from renewald.store.schema import local_conversations, renewal_jobs

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PAYLOAD = "Still there? This is a renewal message from the bench, about eighty characters."


@dataclass(frozen=True)
class DataSet:
    """`jobs` pending jobs over `conversations` conversations (job i -> conversation i % C),
    due 1 ms apart in job order, plus `finished` old done/failed rows and `future` pending
    rows due in an hour."""

    jobs: int
    conversations: int
    target_kind: str = "log"
    target_snapshot: str | None = None
    finished: int = 0
    future: int = 0

    def rows(self, now: int) -> Iterator[dict[str, Any]]:
        due_at = now - self.jobs - 60_000
        old = due_at - self.finished - 86_400_000
        for i in range(self.finished):
            t = old + i
            end = {"status": "done", "terminal_reason": "delivered", "finished_at": t + 5}
            if i % 100 == 0:
                end.update(status="failed", terminal_reason="exhausted")
            yield self.job(f"done-{i:08d}", i, t, t, attempt_count=1, last_attempt_at=t,
                           started_at=t, updated_at=t + 5, **end)  # fmt: skip
        for i in range(self.jobs):
            yield self.job(f"job-{i:08d}", i, due_at + i, due_at + i)
        for i in range(self.future):
            yield self.job(f"future-{i:08d}", i, now + 3_600_000 + i, now)

    def job(self, job_id: str, conv: int, at: int, now: int, **values: Any) -> dict[str, Any]:
        row = dict(
            job_id=job_id, local_conversation_id=f"conv-{conv % max(self.conversations, 1):07d}",
            message_id=f"bench:{job_id}", status="pending", payload=PAYLOAD, payload_kind="text",
            target_snapshot=self.target_snapshot, target_kind=self.target_kind, attempt_count=0,
            max_attempts=3, next_attempt_at=at, created_at=now, updated_at=now,
            last_attempt_at=None, started_at=None, finished_at=None, terminal_reason=None,
        )  # fmt: skip
        return {**row, **values}

    def conversation_rows(self, now: int) -> Iterator[dict[str, Any]]:
        for c in range(self.conversations):
            yield dict(local_conversation_id=f"conv-{c:07d}", platform="bench",
                       automation_status="auto", created_at=now, updated_at=now)  # fmt: skip


def renewald_migrate(url: str) -> None:
    """The schema, made the way an operator makes it (renewald's own migration)."""
    store = Store.open(url, create=True)
    try:
        migrate(store.engine)
    finally:
        store.close()


def sqlite_connect(path: Path | str) -> sqlite3.Connection:
    """A plain sqlite3 connection with renewald's settings (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def load(backend: str, target: str | Path, ds: DataSet, now: int) -> None:
    """Bulk-load `ds`: one executemany transaction on SQLite, COPY on PostgreSQL."""
    tables = ((local_conversations, ds.conversation_rows(now)), (renewal_jobs, ds.rows(now)))
    conn: Any = sqlite_connect(target) if backend == "sqlite" else psycopg.connect(str(target))
    if backend == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
    for table, rows in tables:
        first = next(rows, None)
        if first is None:
            continue
        cols, rows = list(first), itertools.chain([first], rows)
        if backend == "sqlite":
            conn.executemany(insert_sql(table, cols, "sqlite"), rows)
            continue
        with conn.cursor().copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(list(row.values()))
    conn.commit()
    conn.close()


class SqliteDBs:
    """Template files per data set; `fresh()` hands out a copy for one run."""

    def __init__(self, work: Path) -> None:
        self.work = work / "sqlite"
        self.work.mkdir(parents=True, exist_ok=True)
        self._templates: dict[DataSet, Path] = {}
        self._n = 0

    def _path(self, what: str) -> Path:
        self._n += 1
        return self.work / f"{what}-{self._n}.db"

    def loaded(self, ds: DataSet | None, now: int) -> Path:
        """A migrated file holding `ds` (or nothing), not shared with any run."""
        path = self._path("loaded")
        renewald_migrate(f"sqlite:///{path}")
        if ds is not None:
            load("sqlite", path, ds, now)
        return path

    def fresh(self, ds: DataSet, now: int) -> Path:
        if ds not in self._templates:
            self._templates[ds] = self.loaded(ds, now)
        copy = self._path("run")
        shutil.copyfile(self._templates[ds], copy)
        return copy

    @staticmethod
    def discard(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


class PgDBs:
    """Schemas of one PostgreSQL database; every one created here is dropped by `close()`."""

    def __init__(self, url: str) -> None:
        self.base_url = url
        u = make_url(url)
        self.base_conninfo = psycopg.conninfo.make_conninfo(
            host=u.host or "127.0.0.1", port=str(u.port or 5432), user=u.username or "postgres",
            dbname=u.database or "postgres", **({"password": u.password} if u.password else {}),
        )  # fmt: skip
        self.run_id = uuid.uuid4().hex[:8]
        self._n = 0
        self._schemas: list[str] = []
        self._admin = psycopg.connect(self.base_conninfo, autocommit=True)

    def url(self, schema: str) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}options={quote(f'-csearch_path={schema}')}"

    def conninfo(self, schema: str) -> str:
        return psycopg.conninfo.make_conninfo(self.base_conninfo, options=f"-csearch_path={schema}")

    def schema(self, what: str) -> str:
        """A new empty schema (no tables), dropped at the end of the run."""
        self._n += 1
        schema = f"bench_{self.run_id}_{what}_{self._n}"
        self._admin.execute(f'CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        return schema

    def loaded(self, ds: DataSet | None, now: int) -> str:
        """A migrated schema holding `ds` (or nothing), analyzed as autovacuum would."""
        schema = self.schema("run")
        renewald_migrate(self.url(schema))
        if ds is not None:
            load("postgresql", self.conninfo(schema), ds, now)
            for table in ("renewal_jobs", "local_conversations"):
                self._admin.execute(f'ANALYZE "{schema}".{table}')
        return schema

    def drop(self, schema: str) -> None:
        self._admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        with contextlib.suppress(ValueError):
            self._schemas.remove(schema)

    def close(self) -> None:
        for schema in list(self._schemas):
            with contextlib.suppress(psycopg.Error):
                self.drop(schema)
        self._admin.close()


@dataclass
class RunDB:
    """The database of one run, whichever the backend: its URL and a way to read it back."""

    backend: str
    url: str
    target: str  # the SQLite path or the libpq conninfo, for the plain drivers
    sqlite: SqliteDBs
    pg: PgDBs | None
    schema: str | None = None

    def connect(self, **kwargs: Any) -> Any:
        if self.backend == "sqlite":
            return sqlite_connect(self.target)
        return psycopg.connect(self.target, **kwargs)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            mark = "?" if self.backend == "sqlite" else "%s"
            return list(conn.execute(sql.replace("?", mark), params).fetchall())
        finally:
            conn.close()

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.query(sql, params)[0][0]

    def status_counts(self) -> dict[str, int]:
        rows = self.query("SELECT status, count(*) FROM renewal_jobs GROUP BY 1")
        return {str(s): int(n) for s, n in rows}

    def insert_job(self, conn: Any, row: dict[str, Any]) -> None:
        """One job the way the tracker writes one: its own transaction."""
        if self.backend == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert_sql(renewal_jobs, list(row), self.backend), row)
        if self.backend == "sqlite":
            conn.execute("COMMIT")
        else:
            conn.commit()

    def discard(self) -> None:
        if self.schema is None:
            self.sqlite.discard(Path(self.target))
        elif self.pg is not None:
            self.pg.drop(self.schema)


def run_db(
    backend: str, ds: DataSet | None, sqlite: SqliteDBs, pg: PgDBs | None, *, fresh: bool = True
) -> RunDB:
    """A database for one run: `ds` loaded (a copy of a template on SQLite), or empty."""
    now = now_ms()
    if backend == "sqlite":
        path = sqlite.fresh(ds, now) if ds is not None and fresh else sqlite.loaded(ds, now)
        return RunDB("sqlite", f"sqlite:///{path}", str(path), sqlite, pg)
    assert pg is not None
    schema = pg.loaded(ds, now)
    return RunDB("postgresql", pg.url(schema), pg.conninfo(schema), sqlite, pg, schema)
