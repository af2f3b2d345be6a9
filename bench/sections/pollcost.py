"""Section 4, poll cost at scale: the due query and the claim on 1,000,000 rows, 99% finished.

Rows: 990,000 done/failed (old), 9,000 pending and due, 1,000 pending in an hour; 10,000
conversations. Statements timed one by one from Python with the plain drivers
(`perf_counter` around execute + fetch), after warm-up:

- due query: the claim's candidate SELECT (window-ranked, scan limit 4 x 32, limit 32;
  on PostgreSQL with `FOR UPDATE SKIP LOCKED`, in autocommit: its own transaction), with
  a backlog (9,000 due: the scan reads its full 128 rows);
- due query, nothing due: the same with `now` just before the first due job (an idle
  poll: the index range is empty);
- next due: `min(next_attempt_at)` of future pending jobs (the wake-up query);
- claim (SQL): `BEGIN IMMEDIATE` (SQLite) or the advisory lock (PostgreSQL), the claim
  UPDATE … RETURNING of 32 jobs, COMMIT: the whole transaction;
- claim (renewald): `Store.claim_due_jobs(limit=32)`, renewald's own code path
  (SQLAlchemy, `load_targets`, the transaction), for the framework's share.

Claims commit, so they use up due jobs: the counts are sized to stay inside the 9,000.
SQLite is measured as renewald leaves it (no ANALYZE: neither renewald nor the tracker
runs it); PostgreSQL after ANALYZE (autovacuum would have run it on a table this size).
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

from bench.common import now_ms, percentiles, say, spread
from bench.context import Ctx
from bench.db import DataSet, sqlite_connect
from bench.statements import SCAN_FACTOR, statements
from renewald.store import Store

BATCH = 32
PLAN_INDEX = "idx_renewal_jobs_status_due"


def dataset(ctx: Ctx) -> DataSet:
    finished = ctx.pick(990_000, 90_000)
    return DataSet(jobs=9_000, conversations=10_000, finished=finished, future=1_000)


def _time(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Milliseconds per call; a function may time itself (returns its own ms) to leave
    clean-up out of the measurement."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        own = fn()
        out.append(own if own is not None else (time.perf_counter() - t) * 1000)
    return out


def _summarise(groups: list[list[float]]) -> dict[str, Any]:
    """Per group the median; the spread of the group medians; pooled percentiles."""
    pooled = [x for g in groups for x in g]
    return {
        "ms": spread([statistics.median(g) for g in groups]),
        "pooled": percentiles(pooled),
    }


def _plan_check(plan_text: str, backend: str) -> dict[str, Any]:
    lines = plan_text.splitlines()
    uses_index = PLAN_INDEX in plan_text
    if backend == "sqlite":
        full_scan = any(
            ("SCAN j" in ln or "SCAN renewal_jobs" in ln) and "USING" not in ln for ln in lines
        )
    else:
        full_scan = "Seq Scan on renewal_jobs" in plan_text
    out: dict[str, Any] = {"uses_status_due_index": uses_index, "full_scan": full_scan}
    m = re.search(r"Execution Time: ([0-9.]+) ms", plan_text)
    if m:
        out["execution_ms"] = float(m.group(1))
    m = re.search(r"Planning Time: ([0-9.]+) ms", plan_text)
    if m:
        out["planning_ms"] = float(m.group(1))
    return out


def _sqlite(ctx: Ctx, ds: DataSet, reps: int, n: dict[str, int]) -> dict[str, Any]:
    t = time.perf_counter()
    path = ctx.sqlite.loaded(ds, now_ms())
    load_s = time.perf_counter() - t
    say(f"poll: SQLite file with {ds.finished + ds.jobs + ds.future:,} rows in {load_s:.1f}s")
    conn = sqlite_connect(path)
    try:
        now = now_ms()
        sql = statements("sqlite")
        params = {
            "now": now,
            "owner": "bench",
            "lease_until": now + 60_000,
            "scan_limit": BATCH * SCAN_FACTOR,
            "limit": BATCH,
        }
        plans = {}
        for name, stmt in (("due", sql.due), ("claim", sql.claim), ("next_due", sql.next_due)):
            rows = conn.execute("EXPLAIN QUERY PLAN " + stmt.text, stmt.params(**params)).fetchall()
            text = "\n".join(f"{r[0]}|{r[1]}|{r[3]}" for r in rows)
            plans[name] = {"plan": text, **_plan_check(text, "sqlite")}

        def due() -> None:
            conn.execute(sql.due.text, sql.due.params(**params)).fetchall()

        (first_due,) = conn.execute(
            "SELECT min(next_attempt_at) FROM renewal_jobs WHERE status = 'pending'"
        ).fetchone()
        quiet = dict(params, now=first_due - 1)

        def due_empty() -> None:
            assert not conn.execute(sql.due.text, sql.due.params(**quiet)).fetchall()

        def next_due() -> None:
            conn.execute(sql.next_due.text, sql.next_due.params(**params)).fetchall()

        def claim() -> None:
            p = dict(params, now=now_ms())
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(sql.claim.text, sql.claim.params(**p)).fetchall()
            conn.execute("COMMIT")
            assert len(rows) == BATCH, len(rows)

        timings = _measure(due, due_empty, next_due, claim, reps, n)
        (size,) = conn.execute(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        ).fetchone()
    finally:
        conn.close()
    timings["claim_renewald"] = _renewald_claims(ctx.sqlite.url(path), reps, n["claim"])
    ctx.sqlite.discard(path)
    return {"load_s": load_s, "db_bytes": size, "plans": plans, "timings": timings}


def _pg(ctx: Ctx, ds: DataSet, reps: int, n: dict[str, int]) -> dict[str, Any]:
    assert ctx.pg is not None
    t = time.perf_counter()
    schema = ctx.pg.loaded(ds, now_ms(), analyze=True)
    load_s = time.perf_counter() - t
    say(f"poll: PostgreSQL schema with {ds.finished + ds.jobs + ds.future:,} rows in {load_s:.1f}s")
    conn = ctx.pg.connect(schema)  # transactions: EXPLAIN ANALYZE (rolled back), claims
    auto = ctx.pg.connect(schema, autocommit=True)  # one statement, no BEGIN round trip
    try:
        now = now_ms()
        sql = statements("postgresql")
        params = {
            "now": now,
            "owner": "bench",
            "lease_until": now + 60_000,
            "scan_limit": BATCH * SCAN_FACTOR,
            "limit": BATCH,
        }
        plans = {}
        for name, stmt in (("due", sql.due), ("claim", sql.claim), ("next_due", sql.next_due)):
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + stmt.text, stmt.params(**params)
            ).fetchall()
            conn.rollback()
            text = "\n".join(r[0] for r in rows)
            plans[name] = {"plan": text, **_plan_check(text, "postgresql")}

        def due() -> None:
            # FOR UPDATE SKIP LOCKED in its own implicit transaction: the locks go at its end
            auto.execute(sql.due.text, sql.due.params(**params)).fetchall()

        first_due = _one(
            auto.execute("SELECT min(next_attempt_at) FROM renewal_jobs WHERE status = 'pending'")
        )
        quiet = dict(params, now=first_due - 1)

        def due_empty() -> None:
            assert not auto.execute(sql.due.text, sql.due.params(**quiet)).fetchall()

        def next_due() -> None:
            auto.execute(sql.next_due.text, sql.next_due.params(**params)).fetchall()

        def claim() -> None:
            p = dict(params, now=now_ms())
            conn.execute("SELECT pg_advisory_xact_lock(1668047213)")
            rows = conn.execute(sql.claim.text, sql.claim.params(**p)).fetchall()
            conn.commit()
            assert len(rows) == BATCH, len(rows)

        timings = _measure(due, due_empty, next_due, claim, reps, n)
        size = _one(auto.execute("SELECT pg_total_relation_size('renewal_jobs')"))
    finally:
        conn.close()
        auto.close()
    timings["claim_renewald"] = _renewald_claims(ctx.pg.url(schema), reps, n["claim"])
    ctx.pg.drop(schema)
    return {"load_s": load_s, "db_bytes": size, "plans": plans, "timings": timings}


def _measure(due, due_empty, next_due, claim, reps: int, n: dict[str, int]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    for fn in (due, due_empty, next_due):
        _time(fn, 20)  # warm-up: caches, prepared statements
    _time(claim, 5)
    out: dict[str, list[list[float]]] = {
        "due": [],
        "due_empty": [],
        "next_due": [],
        "claim_sql": [],
    }
    for _ in range(reps):
        out["due"].append(_time(due, n["due"]))
        out["due_empty"].append(_time(due_empty, n["due"]))
        out["next_due"].append(_time(next_due, n["due"]))
        out["claim_sql"].append(_time(claim, n["claim"]))
    return {k: _summarise(v) for k, v in out.items()}


def _renewald_claims(url: str, reps: int, count: int) -> dict[str, Any]:
    store = Store.open(url, pool_size=2)
    try:

        def claim() -> None:
            got = store.claim_due_jobs(owner="bench", now=now_ms(), lease_ms=60_000, limit=BATCH)
            assert len(got) == BATCH, len(got)

        _time(claim, 5)
        return _summarise([_time(claim, count) for _ in range(reps)])
    finally:
        store.close()


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    reps = ctx.reps
    n = {"due": ctx.pick(300, 100), "claim": ctx.pick(40, 20)}
    out: dict[str, Any] = {"dataset": ds.__dict__, "rows": ds.finished + ds.jobs + ds.future}
    out["sqlite"] = _sqlite(ctx, ds, reps, n)
    if ctx.pg is not None:
        out["postgresql"] = _pg(ctx, ds, reps, n)
    for backend in ctx.backends:
        t = out[backend]["timings"]
        say(
            f"poll {backend}: due {t['due']['ms']['median']:.3f} ms, next_due "
            f"{t['next_due']['ms']['median']:.3f} ms, claim {t['claim_sql']['ms']['median']:.2f} ms"
            f", renewald claim {t['claim_renewald']['ms']['median']:.2f} ms"
        )
    return out


def _one(cursor: Any) -> Any:
    row = cursor.fetchone()
    assert row is not None
    return row[0]
