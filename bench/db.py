"""Databases for the bench: migrated by renewald itself, filled in bulk, one per run.

Rows are built here; INSERT statements come from renewald's schema (bench/statements.py).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from bench.bare import connect, transaction
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
    with contextlib.closing(Store.open(url, create=True)) as store:
        migrate(store.engine)


def load(backend: str, target: str | Path, ds: DataSet, now: int) -> None:
    """Bulk-load `ds`: one executemany transaction on SQLite, COPY on PostgreSQL."""
    tables = ((local_conversations, ds.conversation_rows(now)), (renewal_jobs, ds.rows(now)))
    conn = connect(backend, str(target))
    with transaction(conn, backend) as cur:
        for table, rows in tables:
            first = next(rows, None)
            if first is None:
                continue
            cols, rows = list(first), itertools.chain([first], rows)
            if backend == "sqlite":
                cur.executemany(insert_sql(table, cols, "sqlite"), rows)
                continue
            with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(list(row.values()))
    conn.close()


class DBs:
    """The run's databases: SQLite files under `work` (one template per data set, copied
    for each run) and schemas of one PostgreSQL database, every one dropped by `close()`."""

    def __init__(self, work: Path, pg_url: str | None) -> None:
        self.work, self.pg_url, self.prefix = work / "sqlite", pg_url, uuid.uuid4().hex[:8]
        self.work.mkdir(parents=True, exist_ok=True)
        self.templates: dict[DataSet, Path] = {}
        self.schemas: list[str] = []
        self.conninfo_base, self.admin, self._n = "", None, 0
        if pg_url:
            u = make_url(pg_url)
            self.conninfo_base = make_conninfo(
                host=u.host or "127.0.0.1", port=str(u.port or 5432), user=u.username or "postgres",
                dbname=u.database or "postgres", **({"password": u.password} if u.password else {}),
            )  # fmt: skip
            self.admin = psycopg.connect(self.conninfo_base, autocommit=True)

    def schema(self, what: str) -> str:
        """A new empty PostgreSQL schema, selected through `search_path` like the test suite."""
        assert self.admin is not None
        self._n += 1
        self.schemas.append(f"bench_{self.prefix}_{what}_{self._n}")
        self.admin.execute(f'CREATE SCHEMA "{self.schemas[-1]}"')
        return self.schemas[-1]

    def url(self, schema: str) -> str:
        sep = "&" if "?" in str(self.pg_url) else "?"
        return f"{self.pg_url}{sep}options={quote(f'-csearch_path={schema}')}"

    def conninfo(self, schema: str) -> str:
        return make_conninfo(self.conninfo_base, options=f"-csearch_path={schema}")

    def get(self, backend: str, ds: DataSet | None, *, fresh: bool = True) -> RunDB:
        """A migrated database for one run holding `ds` (or nothing); `fresh`: on SQLite, a
        copy of the data set's template file, loaded once."""
        now = now_ms()
        if backend == "postgresql":
            schema = self.schema("run")
            renewald_migrate(self.url(schema))
            if ds is not None:
                load(backend, self.conninfo(schema), ds, now)
                for table in ("renewal_jobs", "local_conversations"):
                    self.admin.execute(f'ANALYZE "{schema}".{table}')  # type: ignore[union-attr]
            return RunDB(self, backend, self.url(schema), self.conninfo(schema), schema)
        self._n += 1
        path = self.work / f"run-{self._n}.db"
        if fresh and ds is not None:
            if ds not in self.templates:
                self.templates[ds] = Path(self.get(backend, ds, fresh=False).target)
            shutil.copyfile(self.templates[ds], path)
        else:
            renewald_migrate(f"sqlite:///{path}")
            if ds is not None:
                load(backend, path, ds, now)
        return RunDB(self, backend, f"sqlite:///{path}", str(path))

    def drop(self, schema: str) -> None:
        self.admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[union-attr]
        with contextlib.suppress(ValueError):
            self.schemas.remove(schema)

    def close(self) -> None:
        for schema in list(self.schemas):
            with contextlib.suppress(psycopg.Error):
                self.drop(schema)
        if self.admin is not None:
            self.admin.close()


@dataclass
class RunDB(contextlib.AbstractContextManager["RunDB"]):
    """The database of one run, whichever the backend: its URL and a way to read it back;
    discarded when a `with` block on it ends."""

    dbs: DBs
    backend: str
    url: str
    target: str  # the SQLite path or the libpq conninfo, for the plain drivers
    schema: str | None = None

    def connect(self, **kwargs: Any) -> Any:
        return connect(self.backend, self.target, **kwargs)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        mark = "?" if self.backend == "sqlite" else "%s"
        with contextlib.closing(self.connect()) as conn:
            return list(conn.execute(sql.replace("?", mark), params).fetchall())

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.query(sql, params)[0][0]

    def status_counts(self) -> dict[str, int]:
        rows = self.query("SELECT status, count(*) FROM renewal_jobs GROUP BY 1")
        return {str(s): int(n) for s, n in rows}

    def insert_job(self, conn: Any, row: dict[str, Any]) -> None:
        """One job the way the tracker writes one: its own transaction."""
        with transaction(conn, self.backend) as cur:
            cur.execute(insert_sql(renewal_jobs, list(row), self.backend), row)

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def discard(self) -> None:
        if self.schema is not None:
            self.dbs.drop(self.schema)
            return
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.target}{suffix}").unlink(missing_ok=True)
