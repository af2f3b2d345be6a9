"""`python -m bench.whatif --patch A,B -- <renewald args>`: renewald with proposed fixes.

The bench may not change src/renewald, so the fixes proposed in results.md are measured
by patching them in at start-up, in this process only, then running renewald's own CLI.
Each patch is the smallest version of the change that shows its effect; it is not the
code to merge (it keeps the contract on the paths the bench exercises: fenced writes, one
running job per conversation, the same columns written).

Patches:
- `prebuilt`: build the claim statement once per (limit, dispatch statuses) with bind
  parameters for now/owner/lease (store/claim.py), and the fenced update once per shape
  (store/attempts.py): no statement construction or cache-key walk per poll or per row.
- `pkclaim` (implies `prebuilt`): on SQLite, the claim's re-check written
  `+status = 'pending'`, so the UPDATE finds its 32 rows by primary key instead of walking
  every pending row of idx_renewal_jobs_status_due (store/claim.py `_claim_update`).
- `sqlitelock`: on SQLite, a process-wide lock around write transactions (store/store.py
  `_run`): the poller and the recorder queue on a Python lock instead of sleeping in
  SQLite's busy handler (1, 2, 5, 10 ms …) while the other holds the write lock.
- `hysteresis`: `run --once` claims again only when at least half a batch fits
  (daemon/dispatcher.py `wait_for_capacity`), instead of one-job claims as each result
  is recorded.
- `batchupdate`: record a batch with one `UPDATE … FROM (VALUES …) RETURNING job_id`
  (plus the attempt insert) instead of one UPDATE per result (store/attempts.py).
- `datawatch`: wake the poller when another process commits, instead of waiting for
  `poll_interval` (daemon/service.py): SQLite reads `PRAGMA data_version` every 50 ms on
  a connection of its own; PostgreSQL LISTENs on a channel that a statement-level
  AFTER INSERT OR UPDATE trigger on renewal_jobs notifies (the patch creates the trigger;
  it never rejects a write, so the tracker is unaffected).
"""

from __future__ import annotations

import sys
import threading
from functools import lru_cache
from typing import Any

PATCHES = ("prebuilt", "pkclaim", "sqlitelock", "hysteresis", "batchupdate", "datawatch")
_PK_CLAIM = False


def _prebuilt() -> None:
    from sqlalchemy import bindparam, text, update

    from renewald.store import attempts, claim
    from renewald.store.models import Job
    from renewald.store.schema import Millis, renewal_jobs

    jobs = renewal_jobs

    @lru_cache(maxsize=128)
    def claim_stmt(limit: int, statuses: tuple[str, ...], skip_locked: bool):  # type: ignore[no-untyped-def]
        now = bindparam("now", type_=Millis)
        candidates = claim._candidates(now, limit, statuses, skip_locked=skip_locked)  # type: ignore[arg-type]
        recheck = (
            text("+renewal_jobs.status = 'pending'")
            if _PK_CLAIM and not skip_locked
            else jobs.c.status == "pending"
        )
        return (
            update(jobs)
            .where(jobs.c.job_id.in_(candidates), recheck)
            .values(
                status="running",
                lease_owner=bindparam("owner"),
                lease_expires_at=bindparam("lease_expires", type_=Millis),
                lease_token=jobs.c.lease_token + 1,
                attempt_count=jobs.c.attempt_count + 1,
                started_at=now,
                last_attempt_at=now,
                updated_at=now,
            )
            .returning(*jobs.c)
        )

    def params(owner: str, now: int, lease_ms: int) -> dict[str, Any]:
        return {"now": now, "owner": owner, "lease_expires": now + lease_ms}

    def claim_sqlite(conn, *, owner, now, lease_ms, limit, dispatch_statuses):  # type: ignore[no-untyped-def]
        stmt = claim_stmt(limit, tuple(dispatch_statuses), False)
        rows = conn.execute(stmt, params(owner, now, lease_ms))
        return [Job.from_row(r) for r in rows.mappings()]

    def claim_pg(conn, *, owner, now, lease_ms, limit, dispatch_statuses):  # type: ignore[no-untyped-def]
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": claim._PG_CLAIM_LOCK})
        stmt = claim_stmt(limit, tuple(dispatch_statuses), True)
        rows = conn.execute(stmt, params(owner, now, lease_ms))
        return [Job.from_row(r) for r in rows.mappings()]

    claim.claim_due_jobs_sqlite = claim_sqlite  # type: ignore[assignment]
    claim.claim_due_jobs_postgresql = claim_pg  # type: ignore[assignment]

    @lru_cache(maxsize=32)
    def fenced_stmt(status: str, has_log_path: bool, refund: bool):  # type: ignore[no-untyped-def]
        values: dict[str, Any] = {
            "status": status,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": bindparam("v_error"),
            "updated_at": bindparam("v_now", type_=Millis),
        }
        if status == "pending":
            values["next_attempt_at"] = bindparam("v_next", type_=Millis)
        if has_log_path:
            values["log_path"] = bindparam("v_log_path")
        if status in ("done", "failed"):
            values["finished_at"] = bindparam("v_finished", type_=Millis)
            values["terminal_reason"] = bindparam("v_reason")
        if refund:
            values["attempt_count"] = jobs.c.attempt_count - 1
        return (
            update(jobs)
            .where(
                jobs.c.job_id == bindparam("f_job_id"),
                jobs.c.status == "running",
                jobs.c.lease_token == bindparam("f_token"),
            )
            .values(**values)
        )

    original = attempts.record_results

    def record_results(conn, results, *, now):  # type: ignore[no-untyped-def]
        if any(r.cooldown_until is not None for r in results):
            return original(conn, results, now=now)
        applied = []
        rows = []
        for r in results:
            stmt = fenced_stmt(r.status, r.log_path is not None, r.refund_attempt)
            matched = conn.execute(
                stmt,
                {
                    "f_job_id": r.job_id,
                    "f_token": r.lease_token,
                    "v_error": r.error_message,
                    "v_now": now,
                    "v_next": r.next_attempt_at,
                    "v_log_path": r.log_path,
                    "v_finished": r.finished_at,
                    "v_reason": r.terminal_reason,
                },
            ).rowcount
            applied.append(matched == 1)
            if matched == 1:
                rows.append(_attempt_row(r))
        if rows:
            conn.execute(_attempt_insert(), rows)
        return applied

    attempts.record_results = record_results  # type: ignore[assignment]


def _attempt_row(r: Any) -> dict[str, Any]:
    return {
        "attempt_id": r.attempt_id,
        "job_id": r.job_id,
        "attempt_no": r.attempt_no,
        "lease_owner": r.lease_owner,
        "lease_token": r.lease_token,
        "adapter": r.adapter,
        "target": r.target,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_ms": max(0, r.finished_at - r.started_at),
        "outcome": r.outcome,
        "error_class": r.error_class,
        "error_message": r.error_message,
        "response_summary": r.response_summary,
        "next_attempt_at": r.next_attempt_at,
        "decision": r.decision,
        "decision_reason": r.decision_reason,
    }


@lru_cache(maxsize=1)
def _attempt_insert():  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from renewald.store.schema import renewal_job_attempts

    return insert(renewal_job_attempts)


def _batchupdate() -> None:
    """One UPDATE … FROM (VALUES …) RETURNING per batch; VALUES columns are column1..N on
    both SQLite (>= 3.33 for UPDATE FROM, 3.35 for RETURNING) and PostgreSQL."""
    from sqlalchemy import text

    from renewald.store import attempts

    original = attempts.record_results
    cols = (
        "job_id",
        "lease_token",
        "status",
        "next_attempt_at",
        "log_path",
        "finished_at",
        "terminal_reason",
        "last_error",
    )

    def record_results(conn, results, *, now):  # type: ignore[no-untyped-def]
        if not results or any(r.cooldown_until is not None or r.refund_attempt for r in results):
            return original(conn, results, now=now)
        pg = conn.dialect.name == "postgresql"
        casts = ("text", "integer", "text", "bigint", "text", "bigint", "text", "text")
        params: dict[str, Any] = {"now": now}
        tuples = []
        for i, r in enumerate(results):
            marks = []
            values = (
                r.job_id,
                r.lease_token,
                r.status,
                r.next_attempt_at if r.status == "pending" else None,
                r.log_path,
                r.finished_at if r.status in ("done", "failed") else None,
                r.terminal_reason if r.status in ("done", "failed") else None,
                r.error_message,
            )
            for c, cast, v in zip(cols, casts, values, strict=True):
                params[f"{c}_{i}"] = v
                marks.append(f"CAST(:{c}_{i} AS {cast})" if pg and i == 0 else f":{c}_{i}")
            tuples.append("(" + ", ".join(marks) + ")")
        v = {c: f"v.column{n + 1}" for n, c in enumerate(cols)}
        sql = (
            "UPDATE renewal_jobs SET status = {status}, lease_owner = NULL, "
            "lease_expires_at = NULL, last_error = {last_error}, updated_at = :now, "
            "next_attempt_at = CASE WHEN {status} = 'pending' THEN {next_attempt_at} "
            "ELSE renewal_jobs.next_attempt_at END, "
            "log_path = COALESCE({log_path}, renewal_jobs.log_path), "
            "finished_at = CASE WHEN {status} IN ('done', 'failed') THEN {finished_at} "
            "ELSE renewal_jobs.finished_at END, "
            "terminal_reason = CASE WHEN {status} IN ('done', 'failed') THEN {terminal_reason} "
            "ELSE renewal_jobs.terminal_reason END "
            "FROM (VALUES " + ", ".join(tuples) + ") AS v "
            "WHERE renewal_jobs.job_id = {job_id} AND renewal_jobs.status = 'running' "
            "AND renewal_jobs.lease_token = {lease_token} RETURNING renewal_jobs.job_id"
        ).format(**v)
        matched = {row[0] for row in conn.execute(text(sql), params)}
        applied = [r.job_id in matched for r in results]
        rows = [_attempt_row(r) for r, ok in zip(results, applied, strict=True) if ok]
        if rows:
            conn.execute(_attempt_insert(), rows)
        return applied

    attempts.record_results = record_results  # type: ignore[assignment]


def _sqlitelock() -> None:
    from renewald.store.store import Store

    original = Store._run
    lock = threading.RLock()

    def _run(self, fn, *, write):  # type: ignore[no-untyped-def]
        if write and self.dialect == "sqlite":
            with lock:
                return original(self, fn, write=write)
        return original(self, fn, write=write)

    Store._run = _run  # type: ignore[method-assign]


def _hysteresis() -> None:
    from renewald.daemon.dispatcher import Dispatcher

    def wait_for_capacity(self, timeout: float) -> None:  # type: ignore[no-untyped-def]
        room = max(1, self.settings.batch // 2)
        with self._held_lock:
            self._held_lock.wait_for(
                lambda: len(self._held) <= self.capacity - room or self.fatal is not None,
                timeout,
            )

    Dispatcher.wait_for_capacity = wait_for_capacity  # type: ignore[method-assign]


def _datawatch() -> None:
    from renewald.daemon.service import Service

    original = Service.run

    def run(self):  # type: ignore[no-untyped-def]
        if not self.options.once:
            stop = threading.Event()
            target = _watch_sqlite if self.store.dialect == "sqlite" else _watch_pg
            threading.Thread(
                target=target, args=(self, stop), name="renewald-datawatch", daemon=True
            ).start()
            try:
                return original(self)
            finally:
                stop.set()
        return original(self)

    Service.run = run  # type: ignore[method-assign]


def _watch_sqlite(service: Any, stop: threading.Event) -> None:
    import sqlite3

    conn = sqlite3.connect(service.store.engine.url.database, isolation_level=None)
    last = conn.execute("PRAGMA data_version").fetchone()[0]
    while not stop.wait(0.05):
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != last:
            last = version
            service.wake_at(service.clock.now_ms())


# Row-level, only for rows that end up pending: the daemon's own claims (-> running) and
# records (-> done/failed) notify nobody, so a daemon never wakes itself in a loop (a
# statement-level trigger fires even for an UPDATE of zero rows: every idle poll would
# notify every listener). One channel per schema; duplicates within one transaction are
# folded by PostgreSQL.
_PG_TRIGGER = """
CREATE OR REPLACE FUNCTION renewald_notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('renewald_due_' || TG_TABLE_SCHEMA, ''); RETURN NULL; END $$;
CREATE OR REPLACE TRIGGER renewald_notify_due AFTER INSERT OR UPDATE OF status, next_attempt_at
  ON renewal_jobs FOR EACH ROW WHEN (NEW.status = 'pending')
  EXECUTE FUNCTION renewald_notify_due();
"""


def _watch_pg(service: Any, stop: threading.Event) -> None:
    raw = service.store.engine.raw_connection()
    conn = raw.driver_connection
    raw.detach()
    conn.autocommit = True
    conn.execute(_PG_TRIGGER)
    (schema,) = conn.execute("SELECT current_schema()").fetchone()
    conn.execute(f'LISTEN "renewald_due_{schema}"')
    while not stop.is_set():
        woke = False
        for _ in conn.notifies(timeout=1.0):
            woke = True
            break
        if woke:
            service.wake_at(service.clock.now_ms())


def main(argv: list[str]) -> None:
    patches: list[str] = []
    if argv[:1] == ["--patch"]:
        patches = [p for p in argv[1].split(",") if p]
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    for p in patches:
        if p not in PATCHES:
            raise SystemExit(f"unknown patch {p!r} (known: {', '.join(PATCHES)})")
    # batchupdate replaces record_results after prebuilt's version so it wins
    if "pkclaim" in patches:
        global _PK_CLAIM
        _PK_CLAIM = True
        patches.append("prebuilt")
    for p in ("prebuilt", "sqlitelock", "hysteresis", "batchupdate", "datawatch"):
        if p in patches:
            globals()[f"_{p}"]()
    from renewald.cli import main as renewald_main

    renewald_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
