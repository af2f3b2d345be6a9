"""Section 1, the bare-SQL limit: claim -> no-op -> job update + attempt row -> JSONL line.

The statements are renewald's, written out by hand (store/claim.py, store/attempts.py):
the due predicate with the conversation gate and the one-running-job-per-conversation
check, the window-ranked candidates, `UPDATE … WHERE job_id IN (…) RETURNING`, the fenced
update (`job_id`, `status='running'`, `lease_token`) and the attempt insert. No SQLAlchemy,
no threads, no framework: plain `sqlite3` (WAL, synchronous=NORMAL, BEGIN IMMEDIATE) and
plain psycopg (`FOR UPDATE SKIP LOCKED`; no advisory lock: this is the limit SKIP LOCKED
alone allows). Two transactions per claim: the claim, then the record.
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

_CLAIM = """
UPDATE renewal_jobs SET status = 'running', attempt_count = attempt_count + 1,
  last_attempt_at = {now}, started_at = {now}, updated_at = {now},
  lease_owner = {owner}, lease_expires_at = {lease_until}, lease_token = lease_token + 1
WHERE job_id IN (
  SELECT job_id FROM (
    SELECT scan.job_id, scan.next_attempt_at, scan.created_at,
      row_number() OVER (PARTITION BY scan.local_conversation_id
                         ORDER BY scan.next_attempt_at, scan.created_at) AS rn
    FROM (
      SELECT j.job_id, j.local_conversation_id, j.next_attempt_at, j.created_at
      FROM renewal_jobs AS j
      WHERE j.status = 'pending' AND j.next_attempt_at <= {now}
        AND NOT EXISTS (SELECT 1 FROM local_conversations AS gate
                        WHERE gate.local_conversation_id = j.local_conversation_id
                          AND (gate.automation_status NOT IN ('auto')
                               OR gate.cooldown_until > {now}))
        AND NOT EXISTS (SELECT 1 FROM renewal_jobs AS running
                        WHERE running.local_conversation_id = j.local_conversation_id
                          AND running.status = 'running')
      ORDER BY j.next_attempt_at, j.created_at
      LIMIT {scan}{lock}
    ) AS scan
  ) AS ranked
  WHERE rn = 1
  ORDER BY next_attempt_at, created_at
  LIMIT {limit}
) AND status = 'pending'
RETURNING job_id, local_conversation_id, attempt_count, lease_token, payload
"""

_DUE_SELECT = """
SELECT job_id FROM (
  SELECT scan.job_id, scan.next_attempt_at, scan.created_at,
    row_number() OVER (PARTITION BY scan.local_conversation_id
                       ORDER BY scan.next_attempt_at, scan.created_at) AS rn
  FROM (
    SELECT j.job_id, j.local_conversation_id, j.next_attempt_at, j.created_at
    FROM renewal_jobs AS j
    WHERE j.status = 'pending' AND j.next_attempt_at <= {now}
      AND NOT EXISTS (SELECT 1 FROM local_conversations AS gate
                      WHERE gate.local_conversation_id = j.local_conversation_id
                        AND (gate.automation_status NOT IN ('auto')
                             OR gate.cooldown_until > {now}))
      AND NOT EXISTS (SELECT 1 FROM renewal_jobs AS running
                      WHERE running.local_conversation_id = j.local_conversation_id
                        AND running.status = 'running')
    ORDER BY j.next_attempt_at, j.created_at
    LIMIT {scan}{lock}
  ) AS scan
) AS ranked
WHERE rn = 1
ORDER BY next_attempt_at, created_at
LIMIT {limit}
"""

_NEXT_DUE = (
    "SELECT min(next_attempt_at) FROM renewal_jobs"
    " WHERE status = 'pending' AND next_attempt_at > {now}"
)

_FENCED = """
UPDATE renewal_jobs SET status = {status}, lease_owner = NULL, lease_expires_at = NULL,
  last_error = NULL, updated_at = {now}, log_path = {log_path}, finished_at = {finished},
  terminal_reason = {reason}
WHERE job_id = {job_id} AND status = 'running' AND lease_token = {token}
"""

_ATTEMPT_COLUMNS = (
    "attempt_id",
    "job_id",
    "attempt_no",
    "lease_owner",
    "lease_token",
    "adapter",
    "target",
    "started_at",
    "finished_at",
    "duration_ms",
    "outcome",
    "error_class",
    "error_message",
    "response_summary",
    "next_attempt_at",
    "decision",
    "decision_reason",
)

SCAN_FACTOR = 4  # renewald's claim.SCAN_FACTOR


def _names(sql: str, style: str) -> str:
    """`{name}` -> `:name` (sqlite3) or `%(name)s` (psycopg); `{lock}` handled apart."""
    import re

    return re.sub(
        r"\{(\w+)\}",
        lambda m: (
            ""
            if m.group(1) == "lock"
            else (f":{m.group(1)}" if style == "qmark" else f"%({m.group(1)})s")
        ),
        sql,
    )


SQLITE_CLAIM = _names(_CLAIM, "qmark")
# The same claim with the re-check written `+status`: SQLite then finds the UPDATE's rows
# by primary key instead of walking every pending row of idx_renewal_jobs_status_due.
SQLITE_CLAIM_PK = SQLITE_CLAIM.replace(
    ") AND status = 'pending'\nRETURNING", ") AND +status = 'pending'\nRETURNING"
)
assert SQLITE_CLAIM_PK != SQLITE_CLAIM
PG_CLAIM = _names(_CLAIM.replace("{lock}", " FOR UPDATE SKIP LOCKED"), "pyformat")
SQLITE_DUE = _names(_DUE_SELECT, "qmark")
PG_DUE = _names(_DUE_SELECT.replace("{lock}", " FOR UPDATE SKIP LOCKED"), "pyformat")
SQLITE_NEXT_DUE = _names(_NEXT_DUE, "qmark")
PG_NEXT_DUE = _names(_NEXT_DUE, "pyformat")
SQLITE_FENCED = _names(_FENCED, "qmark")
PG_FENCED = _names(_FENCED, "pyformat")
SQLITE_ATTEMPT = (
    f"INSERT INTO renewal_job_attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _ATTEMPT_COLUMNS)})"
)
PG_ATTEMPT = (
    f"INSERT INTO renewal_job_attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
    f"VALUES ({', '.join(f'%({c})s' for c in _ATTEMPT_COLUMNS)})"
)


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class _Loop:
    """claim -> no-op -> record, until a claim comes back empty."""

    def __init__(self, batch: int, jsonl: Path, owner: str) -> None:
        self.batch = batch
        self.owner = owner
        self.jsonl = open(jsonl, "a", encoding="utf-8")  # noqa: SIM115
        self.log_path = str(jsonl)

    def claim_params(self, now: int) -> dict[str, Any]:
        return {
            "now": now,
            "owner": self.owner,
            "lease_until": now + 60_000,
            "scan": self.batch * SCAN_FACTOR,
            "limit": self.batch,
        }

    def results(self, rows: list[tuple[Any, ...]], started: int) -> tuple[list, list]:
        finished = _ms()
        updates = []
        attempts = []
        for job_id, conv, attempt_no, token, _payload in rows:
            attempt_id = uuid.uuid4().hex
            updates.append(
                {
                    "status": "done",
                    "now": finished,
                    "log_path": self.log_path,
                    "finished": finished,
                    "reason": "delivered",
                    "job_id": job_id,
                    "token": token,
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
        return updates, attempts

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


def run_sqlite(
    path: Path, *, batch: int, jsonl: Path, max_jobs: int, pk_claim: bool = False
) -> dict[str, Any]:
    claim_sql = SQLITE_CLAIM_PK if pk_claim else SQLITE_CLAIM
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    loop = _Loop(batch, jsonl, f"bare-sqlite:{os.getpid()}")
    done = 0
    t0 = time.monotonic()
    while done < max_jobs:
        now = _ms()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(claim_sql, loop.claim_params(now)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            break
        updates, attempts = loop.results(rows, now)
        conn.execute("BEGIN IMMEDIATE")
        kept = []
        for u, a in zip(updates, attempts, strict=True):
            if conn.execute(SQLITE_FENCED, u).rowcount == 1:
                kept.append(a)
        conn.executemany(SQLITE_ATTEMPT, kept)
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

    conn = psycopg.connect(conninfo)
    loop = _Loop(batch, jsonl, f"bare-pg:{os.getpid()}")
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
            rows = cur.execute(PG_CLAIM, loop.claim_params(now)).fetchall()
            conn.commit()
            if not rows:
                break
            if claimed is not None:
                with claimed.get_lock():
                    claimed.value += len(rows)
            updates, attempts = loop.results(rows, now)
            kept = []
            for u, a in zip(updates, attempts, strict=True):
                if cur.execute(PG_FENCED, u).rowcount == 1:
                    kept.append(a)
            cur.executemany(PG_ATTEMPT, kept)
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
