"""Section 1, the bare-SQL limit: claim -> no-op -> job update + attempt row -> JSONL line.

The statements are renewald's own, compiled to SQL text (bench/statements.py): the claim
with its due candidates, the fenced write of the result and the attempt insert. No
SQLAlchemy at run time, no threads, no framework: plain `sqlite3` (WAL,
synchronous=NORMAL, BEGIN IMMEDIATE) and plain psycopg (`FOR UPDATE SKIP LOCKED`; no
advisory lock: this is the limit SKIP LOCKED alone allows). Two transactions per claim:
the claim, then the record.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.statements import JOB_COLUMNS, SCAN_FACTOR, Statements, statements

_COL = {name: i for i, name in enumerate(JOB_COLUMNS)}


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class _Loop:
    """claim -> no-op -> record, until a claim comes back empty."""

    def __init__(self, sql: Statements, batch: int, jsonl: Path, owner: str) -> None:
        self.sql = sql
        self.batch = batch
        self.owner = owner
        self.jsonl = open(jsonl, "a", encoding="utf-8")  # noqa: SIM115
        self.log_path = str(jsonl)

    def claim_params(self, now: int) -> dict[str, Any]:
        return self.sql.claim.params(
            now=now,
            owner=self.owner,
            lease_until=now + 60_000,
            scan_limit=self.batch * SCAN_FACTOR,
            limit=self.batch,
        )

    def results(self, rows: list[tuple[Any, ...]], started: int) -> tuple[dict, list]:
        """The batch's fenced finish (one statement, its rows as JSON) and attempt rows."""
        finished = _ms()
        updates = []
        attempts = []
        for row in rows:
            job_id, conv = row[_COL["job_id"]], row[_COL["local_conversation_id"]]
            attempt_no, token = row[_COL["attempt_count"]], row[_COL["lease_token"]]
            attempt_id = uuid.uuid4().hex
            updates.append(
                {
                    "job_id": job_id,
                    "lease_token": token,
                    "owner": self.owner,
                    "status": "done",
                    "log_path": self.log_path,
                    "ends": 1,
                    "finished_at": finished,
                    "terminal_reason": "delivered",
                    "attempt_count": attempt_no,
                    "delivered_at": finished,
                }
            )
            attempts.append(
                {
                    "attempt_id": attempt_id,
                    "job_id": job_id,
                    "attempt_no": attempt_no,
                    "lease_owner": self.owner,
                    "lease_token": token,
                    "adapter": "log",
                    "target": None,
                    "started_at": started,
                    "finished_at": finished,
                    "duration_ms": finished - started,
                    "outcome": "delivered",
                    "error_class": None,
                    "error_message": None,
                    "response_summary": "no-op",
                    "next_attempt_at": None,
                    "decision": "done",
                    "decision_reason": None,
                    "_conv": conv,
                }
            )
        finish = self.sql.finish.params(p_rows=json.dumps(updates), p_now=finished)
        return finish, attempts

    def log(self, attempts: list[dict[str, Any]]) -> None:
        for a in attempts:
            self.jsonl.write(
                json.dumps(
                    {
                        "ts": _iso(a["finished_at"]),
                        "event": "attempt.finished",
                        "job_id": a["job_id"],
                        "attempt_id": a["attempt_id"],
                        "attempt": a["attempt_no"],
                        "conversation": a["_conv"],
                        "adapter": "log",
                        "outcome": "delivered",
                        "duration_ms": a["duration_ms"],
                        "status": "done",
                        "decision": "done",
                        "owner": self.owner,
                    }
                )
                + "\n"
            )
        self.jsonl.flush()


def run_sqlite(path: Path, *, batch: int, jsonl: Path, max_jobs: int) -> dict[str, Any]:
    sql = statements("sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    loop = _Loop(sql, batch, jsonl, f"bare-sqlite:{os.getpid()}")
    done = 0
    t0 = time.monotonic()
    while done < max_jobs:
        now = _ms()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(sql.claim.text, loop.claim_params(now)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            break
        finish, attempts = loop.results(rows, now)
        conn.execute("BEGIN IMMEDIATE")
        done_ids = {r[0] for r in conn.execute(sql.finish.text, finish).fetchall()}
        kept = [a for a in attempts if a["job_id"] in done_ids]
        conn.executemany(sql.attempt.text, kept)
        conn.execute("COMMIT")
        loop.log(kept)
        done += len(kept)
    t1 = time.monotonic()
    conn.close()
    loop.jsonl.close()
    return {"jobs": done, "t0": t0, "t1": t1}


def run_pg(
    conninfo: str,
    *,
    batch: int,
    jsonl: Path,
    max_jobs: int,
    ready: Any = None,
    go: Any = None,
    claimed: Any = None,
) -> dict[str, Any]:
    import psycopg

    sql = statements("postgresql")
    conn = psycopg.connect(conninfo)
    loop = _Loop(sql, batch, jsonl, f"bare-pg:{os.getpid()}")
    conn.execute("SELECT 1")
    conn.commit()
    if ready is not None:
        ready.set()
        go.wait()
    done = 0
    t0 = time.monotonic()
    with conn.cursor() as cur:
        while _take(claimed, max_jobs, done):
            now = _ms()
            rows = cur.execute(sql.claim.text, loop.claim_params(now)).fetchall()
            conn.commit()
            if not rows:
                break
            if claimed is not None:
                with claimed.get_lock():
                    claimed.value += len(rows)
            finish, attempts = loop.results(rows, now)
            done_ids = {r[0] for r in cur.execute(sql.finish.text, finish).fetchall()}
            kept = [a for a in attempts if a["job_id"] in done_ids]
            cur.executemany(sql.attempt.text, kept)
            conn.commit()
            loop.log(kept)
            done += len(kept)
    t1 = time.monotonic()
    conn.close()
    loop.jsonl.close()
    return {"jobs": done, "t0": t0, "t1": t1}


def _take(claimed: Any, max_jobs: int, done: int) -> bool:
    """Whether to claim again: processes share one budget of `max_jobs` claims."""
    if claimed is None:
        return done < max_jobs
    return bool(claimed.value < max_jobs)


def _pg_child(
    conninfo: str,
    batch: int,
    jsonl: str,
    max_jobs: int,
    ready: Any,
    go: Any,
    claimed: Any,
    out: Any,
) -> None:
    out.put(
        run_pg(
            conninfo,
            batch=batch,
            jsonl=Path(jsonl),
            max_jobs=max_jobs,
            ready=ready,
            go=go,
            claimed=claimed,
        )
    )


def run_pg_procs(
    conninfo: str, *, procs: int, batch: int, work: Path, max_jobs: int
) -> dict[str, Any]:
    """`procs` processes, started together (the clock starts when all are connected)."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    out = ctx.Queue()
    claimed = ctx.Value("q", 0)
    readies = []
    children = []
    for n in range(procs):
        ready = ctx.Event()
        child = ctx.Process(
            target=_pg_child,
            args=(
                conninfo,
                batch,
                str(work / f"bare-pg-{n}.jsonl"),
                max_jobs,
                ready,
                go,
                claimed,
                out,
            ),
        )
        child.start()
        readies.append(ready)
        children.append(child)
    for ready in readies:
        ready.wait(60)
    go.set()
    parts = [out.get(timeout=600) for _ in children]
    for child in children:
        child.join(30)
    return {
        "jobs": sum(p["jobs"] for p in parts),
        "t0": min(p["t0"] for p in parts),
        "t1": max(p["t1"] for p in parts),
        "per_process": [p["jobs"] for p in parts],
    }
