"""The bare-SQL loop: claim -> no-op -> fenced job update + attempt row -> JSONL line, in
plain `sqlite3` (WAL, BEGIN IMMEDIATE) or psycopg (SKIP LOCKED, no advisory lock), two
transactions per claim: renewald's statements (bench/statements.py) without a framework.

`python -m bench.bare BACKEND TARGET STATEMENTS.json BATCH MAX_JOBS JSONL` (TARGET: a SQLite
path or a libpq conninfo) prints `{"jobs", "t0", "t1"}` (the loop's start and end). It
imports no SQLAlchemy: its start-up, timed like renewald's, is a plain driver's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sql:
    """A statement's text and the values of the parameters it fixes (literals, IN lists)."""

    text: str
    fixed: dict[str, Any]

    def params(self, **values: Any) -> dict[str, Any]:
        return {**self.fixed, **values}


@dataclass(frozen=True)
class Statements:
    """What the loop runs, as bench/statements.py compiles it from renewald's store; plain
    text and JSON here, so that the loop's process never imports SQLAlchemy."""

    claim: Sql
    due: Sql
    next_due: Sql
    finish: Sql
    attempt: Sql
    scan_factor: int

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> Statements:
        d = json.loads(text)
        return cls(scan_factor=d.pop("scan_factor"), **{k: Sql(**v) for k, v in d.items()})


def connect(backend: str, target: str, **kwargs: Any) -> Any:
    """A plain driver's connection; SQLite with renewald's settings (WAL, synchronous=NORMAL)."""
    if backend == "postgresql":
        import psycopg  # not on SQLite: the loop's start-up is timed

        return psycopg.connect(target, **kwargs)
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


@contextmanager
def transaction(conn: Any, backend: str) -> Iterator[Any]:
    """One write transaction, committed when the block ends: BEGIN IMMEDIATE on SQLite (the
    write lock up front, as renewald takes it), a cursor in psycopg's own on PostgreSQL."""
    if backend == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    else:
        with conn.cursor() as cur:
            yield cur
    conn.commit()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(sql: Statements, row: dict[str, Any], owner: str, log: str, started: int) -> tuple:  # type: ignore[type-arg]
    """The fenced update's row of a claimed job, its attempt row, and its JSONL line."""
    end = now_ms()
    job, attempt_no, token = row["job_id"], row["attempt_count"], row["lease_token"]
    update = dict(
        job_id=job, lease_token=token, owner=owner, status="done", log_path=log, ends=1,
        finished_at=end, terminal_reason="delivered", attempt_count=attempt_no, delivered_at=end,
    )  # fmt: skip
    attempt = dict(
        attempt_id=uuid.uuid4().hex, job_id=job, attempt_no=attempt_no, lease_owner=owner,
        lease_token=token, adapter="log", target=None, started_at=started, finished_at=end,
        duration_ms=end - started, outcome="delivered", error_class=None, error_message=None,
        response_summary="no-op", next_attempt_at=None, decision="done", decision_reason=None,
    )  # fmt: skip
    stamp = datetime.fromtimestamp(end / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    line = json.dumps({
        "ts": stamp + "Z", "event": "attempt.finished", "job_id": job,
        "attempt_id": attempt["attempt_id"], "attempt": attempt_no,
        "conversation": row["local_conversation_id"], "adapter": "log", "outcome": "delivered",
        "duration_ms": end - started, "status": "done", "decision": "done", "owner": owner,
    })  # fmt: skip
    return update, attempt, line


def drain(
    backend: str, target: str, sql: Statements, *, batch: int, jsonl: Path, max_jobs: int
) -> dict[str, Any]:
    """Claim and record until a claim comes back empty or `max_jobs` are done."""
    conn = connect(backend, target)
    owner, done = f"bare-{backend}:{os.getpid()}", 0
    t0 = time.time()
    with open(jsonl, "a", encoding="utf-8") as log:
        while done < max_jobs:
            now = now_ms()
            params = sql.claim.params(now=now, owner=owner, lease_until=now + 60_000,
                                      scan_limit=batch * sql.scan_factor, limit=batch)  # fmt: skip
            with transaction(conn, backend) as c:
                rows = _rows(c.execute(sql.claim.text, params))
            if not rows:
                break
            records = [_record(sql, r, owner, str(jsonl), now) for r in rows]
            # renewald's finish: one statement per batch, its rows as one JSON parameter.
            updates = json.dumps([r[0] for r in records])
            with transaction(conn, backend) as c:
                finish = sql.finish.params(p_rows=updates, p_now=now_ms())
                finished = {row[0] for row in c.execute(sql.finish.text, finish).fetchall()}
                kept = [r for r in records if r[0]["job_id"] in finished]
                c.executemany(sql.attempt.text, [r[1] for r in kept])
            log.writelines(r[2] + "\n" for r in kept)
            log.flush()
            done += len(kept)
    t1 = time.time()
    conn.close()
    return {"jobs": done, "t0": t0, "t1": t1}


def _rows(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


if __name__ == "__main__":
    backend, target, statements, batch, max_jobs, jsonl = sys.argv[1:]
    sql = Statements.loads(Path(statements).read_text())
    done = drain(backend, target, sql, batch=int(batch), jsonl=Path(jsonl), max_jobs=int(max_jobs))
    print(json.dumps(done))
