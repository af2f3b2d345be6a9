"""Databases for the bench: migrated by renewald itself, filled in bulk, cloned per run.

SQLite: one template file per data set, copied for every run (a file copy is cheaper
than a load). PostgreSQL: one schema per run (`search_path` in the URL, like the test
suite), cloned from a template schema with `CREATE TABLE … (LIKE … INCLUDING ALL)`;
every schema the bench creates is dropped when it ends.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from sqlalchemy.engine import make_url

from renewald.store import Store, migrate

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

JOB_COLUMNS = (
    "job_id",
    "local_conversation_id",
    "message_id",
    "status",
    "payload",
    "payload_kind",
    "target_snapshot",
    "attempt_count",
    "max_attempts",
    "next_attempt_at",
    "last_attempt_at",
    "log_path",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
    "terminal_reason",
    "target_kind",
)
CONV_COLUMNS = (
    "local_conversation_id",
    "platform",
    "automation_status",
    "created_at",
    "updated_at",
)
PAYLOAD = "Still there? This is a renewal message from the bench, about eighty characters."


@dataclass(frozen=True)
class DataSet:
    """`jobs` pending jobs over `conversations` conversations (job i -> conversation i % C),
    due from `due_at` on (1 ms apart, in job order), plus `finished` done/failed rows and
    `future` pending rows not yet due."""

    jobs: int
    conversations: int
    target_kind: str = "log"
    target_snapshot: str | None = None
    finished: int = 0
    future: int = 0

    def key(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def conversation_rows(n: int, now: int) -> Iterator[tuple[Any, ...]]:
    for c in range(n):
        yield (f"conv-{c:07d}", "bench", "auto", now, now)


def job_rows(ds: DataSet, now: int) -> Iterator[tuple[Any, ...]]:
    """Finished rows first (old), then due pending rows, then future pending rows."""
    due_at = now - ds.jobs - 60_000
    old = due_at - ds.finished - 86_400_000
    for i in range(ds.finished):
        t = old + i
        status, reason = ("failed", "exhausted") if i % 100 == 0 else ("done", "delivered")
        yield (
            f"done-{i:08d}",
            f"conv-{i % ds.conversations:07d}",
            f"bench:done:{i}",
            status,
            PAYLOAD,
            "text",
            ds.target_snapshot,
            1,
            3,
            t,
            t,
            None,
            t,
            t + 5,
            t,
            t + 5,
            reason,
            ds.target_kind,
        )
    for i in range(ds.jobs):
        t = due_at + i
        yield (
            f"job-{i:08d}",
            f"conv-{i % ds.conversations:07d}",
            f"bench:{i}",
            "pending",
            PAYLOAD,
            "text",
            ds.target_snapshot,
            0,
            3,
            t,
            None,
            None,
            None,
            None,
            t,
            t,
            None,
            ds.target_kind,
        )
    for i in range(ds.future):
        t = now + 3_600_000 + i
        yield (
            f"future-{i:08d}",
            f"conv-{i % ds.conversations:07d}",
            f"bench:future:{i}",
            "pending",
            PAYLOAD,
            "text",
            ds.target_snapshot,
            0,
            3,
            t,
            None,
            None,
            None,
            None,
            now,
            now,
            None,
            ds.target_kind,
        )


def _insert_sql(table: str, columns: Iterable[str], mark: str) -> str:
    cols = list(columns)
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"


def renewald_migrate(url: str) -> None:
    """The schema, made the way an operator makes it (renewald's own migration)."""
    store = Store.open(url, create=True)
    try:
        migrate(store.engine)
    finally:
        store.close()


# -- SQLite ------------------------------------------------------------------------------


class SqliteDBs:
    """Template files per data set; `fresh()` hands out a copy for one run."""

    def __init__(self, work: Path) -> None:
        self.work = work / "sqlite"
        self.work.mkdir(parents=True, exist_ok=True)
        self._templates: dict[str, Path] = {}
        self._n = 0

    @staticmethod
    def url(path: Path) -> str:
        return f"sqlite:///{path}"

    def empty(self) -> Path:
        self._n += 1
        path = self.work / f"empty-{self._n}.db"
        renewald_migrate(self.url(path))
        return path

    def fresh(self, ds: DataSet, now: int) -> Path:
        key = ds.key()
        if key not in self._templates:
            path = self.work / f"template-{len(self._templates)}.db"
            self.discard(path)
            renewald_migrate(self.url(path))
            load_sqlite(path, ds, now)
            self._templates[key] = path
        self._n += 1
        copy = self.work / f"run-{self._n}.db"
        self.discard(copy)
        shutil.copyfile(self._templates[key], copy)
        return copy

    def loaded(self, ds: DataSet, now: int) -> Path:
        """A file holding `ds`, built for one use (no template kept)."""
        self._n += 1
        path = self.work / f"loaded-{self._n}.db"
        self.discard(path)
        renewald_migrate(self.url(path))
        load_sqlite(path, ds, now)
        return path

    def discard(self, path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with renewald's settings (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def load_sqlite(path: Path, ds: DataSet, now: int) -> None:
    conn = sqlite_connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            _insert_sql("local_conversations", CONV_COLUMNS, "?"),
            conversation_rows(ds.conversations, now),
        )
        conn.executemany(_insert_sql("renewal_jobs", JOB_COLUMNS, "?"), job_rows(ds, now))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def insert_job_sqlite(
    conn: sqlite3.Connection, *, job_id: str, conversation: str, at: int, now: int, kind: str
) -> None:
    """One job the way the tracker writes one: its own transaction, explicit columns."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO renewal_jobs (job_id, local_conversation_id, message_id, status, payload,"
        " payload_kind, attempt_count, max_attempts, next_attempt_at, created_at, updated_at,"
        " target_kind) VALUES (?, ?, ?, 'pending', ?, 'text', 0, 3, ?, ?, ?, ?)",
        (job_id, conversation, f"bench:{job_id}", PAYLOAD, at, now, now, kind),
    )
    conn.execute("COMMIT")


# -- PostgreSQL --------------------------------------------------------------------------


class PgDBs:
    """Schemas of one PostgreSQL database; every one created here is dropped by `close()`."""

    def __init__(self, url: str) -> None:
        self.base_url = url
        parsed = make_url(url)
        self.base_conninfo = psycopg.conninfo.make_conninfo(
            host=parsed.host or "127.0.0.1",
            port=str(parsed.port or 5432),
            user=parsed.username or "postgres",
            dbname=parsed.database or "postgres",
            **({"password": parsed.password} if parsed.password else {}),
        )
        self.run_id = uuid.uuid4().hex[:8]
        self._n = 0
        self._schemas: list[str] = []
        self._templates: dict[str, str] = {}
        self._admin = psycopg.connect(self.base_conninfo, autocommit=True)

    def url(self, schema: str) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}options={quote(f'-csearch_path={schema}')}"

    def conninfo(self, schema: str) -> str:
        return psycopg.conninfo.make_conninfo(self.base_conninfo, options=f"-csearch_path={schema}")

    def connect(self, schema: str, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(schema), **kwargs)

    def _new_schema(self, what: str) -> str:
        self._n += 1
        schema = f"bench_{self.run_id}_{what}_{self._n}"
        self._admin.execute(f'CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        return schema

    def empty(self) -> str:
        schema = self._new_schema("empty")
        renewald_migrate(self.url(schema))
        return schema

    def loaded(self, ds: DataSet, now: int, *, analyze: bool = True) -> str:
        """A migrated schema holding `ds` (bulk-loaded with COPY), not shared with any run."""
        schema = self.empty()
        load_pg(self.conninfo(schema), ds, now)
        if analyze:
            self._admin.execute(f'ANALYZE "{schema}".renewal_jobs')
            self._admin.execute(f'ANALYZE "{schema}".local_conversations')
        return schema

    def fresh(self, ds: DataSet, now: int) -> str:
        key = ds.key()
        if key not in self._templates:
            self._templates[key] = self.loaded(ds, now, analyze=False)
        template = self._templates[key]
        schema = self._new_schema("run")
        tables = [
            r[0]
            for r in self._admin.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (template,),
            )
        ]
        with self._admin.transaction():
            for t in tables:
                self._admin.execute(
                    f'CREATE TABLE "{schema}"."{t}" (LIKE "{template}"."{t}" INCLUDING ALL)'
                )
                self._admin.execute(
                    f'INSERT INTO "{schema}"."{t}" SELECT * FROM "{template}"."{t}"'
                )
            # LIKE … INCLUDING ALL copies no triggers: step the clone back to before the
            # NOTIFY trigger (migration 0003) and let renewald migrate put it in place.
            self._admin.execute(
                f'UPDATE "{schema}".renewald_schema_version SET version_num = %s', ("0002",)
            )
        renewald_migrate(self.url(schema))
        for t in tables:
            self._admin.execute(f'ANALYZE "{schema}"."{t}"')
        return schema

    def drop(self, schema: str) -> None:
        self._admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if schema in self._schemas:
            self._schemas.remove(schema)

    def close(self) -> None:
        for schema in list(self._schemas):
            with contextlib.suppress(psycopg.Error):
                self.drop(schema)
        self._admin.close()


def load_pg(conninfo: str, ds: DataSet, now: int) -> None:
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                f"COPY local_conversations ({', '.join(CONV_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in conversation_rows(ds.conversations, now):
                    copy.write_row(row)
            with cur.copy(f"COPY renewal_jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
                for row in job_rows(ds, now):
                    copy.write_row(row)
        conn.commit()


def insert_job_pg(
    conn: psycopg.Connection[Any], *, job_id: str, conversation: str, at: int, now: int, kind: str
) -> None:
    conn.execute(
        "INSERT INTO renewal_jobs (job_id, local_conversation_id, message_id, status, payload,"
        " payload_kind, attempt_count, max_attempts, next_attempt_at, created_at, updated_at,"
        " target_kind) VALUES (%s, %s, %s, 'pending', %s, 'text', 0, 3, %s, %s, %s, %s)",
        (job_id, conversation, f"bench:{job_id}", PAYLOAD, at, now, now, kind),
    )
    conn.commit()


# -- results read back from the database -------------------------------------------------


def job_times_sql(where: str = "") -> str:
    return "SELECT job_id, status, next_attempt_at, started_at, finished_at FROM renewal_jobs" + (
        f" WHERE {where}" if where else ""
    )


def status_counts(rows: Iterable[tuple[Any, ...]]) -> dict[str, int]:
    return {str(s): int(n) for s, n in rows}


@dataclass
class RunDB:
    """The database of one run, whichever the backend: its URL and a way to read it back."""

    backend: str
    url: str
    path: Path | None = None
    schema: str | None = None
    pg: PgDBs | None = None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            assert self.path is not None
            lite = sqlite_connect(self.path)
            try:
                return lite.execute(sql, params).fetchall()
            finally:
                lite.close()
        assert self.pg is not None and self.schema is not None
        with self.pg.connect(self.schema) as pg:
            return pg.execute(sql.replace("?", "%s"), params).fetchall()

    def status_counts(self) -> dict[str, int]:
        return status_counts(self.query("SELECT status, count(*) FROM renewal_jobs GROUP BY 1"))

    def discard(self, sqlite: SqliteDBs | None = None) -> None:
        if self.backend == "sqlite" and sqlite is not None and self.path is not None:
            sqlite.discard(self.path)
        elif self.pg is not None and self.schema is not None:
            self.pg.drop(self.schema)


def fresh_db(backend: str, ds: DataSet, now: int, sqlite: SqliteDBs, pg: PgDBs | None) -> RunDB:
    if backend == "sqlite":
        path = sqlite.fresh(ds, now)
        return RunDB("sqlite", SqliteDBs.url(path), path=path)
    assert pg is not None
    schema = pg.fresh(ds, now)
    return RunDB("postgresql", pg.url(schema), schema=schema, pg=pg)


def empty_db(backend: str, sqlite: SqliteDBs, pg: PgDBs | None) -> RunDB:
    if backend == "sqlite":
        path = sqlite.empty()
        return RunDB("sqlite", SqliteDBs.url(path), path=path)
    assert pg is not None
    schema = pg.empty()
    return RunDB("postgresql", pg.url(schema), schema=schema, pg=pg)
