"""Variants of the due query on the 1,000,000-row data set, to size proposed fixes.

Each variant is renewald's candidate SELECT (bench/bare.py) with one change; all return
the same 32 jobs on this data (checked). Timed like section 4: client side, median of
per-repetition medians, after warm-up.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import bare
from bench.common import now_ms, say
from bench.context import Ctx
from bench.db import sqlite_connect
from bench.sections.pollcost import BATCH, dataset

_GATE_SCALAR = """      AND COALESCE((SELECT gate.automation_status IN ('auto')
                              AND (gate.cooldown_until IS NULL OR gate.cooldown_until <= {now})
                       FROM local_conversations AS gate
                       WHERE gate.local_conversation_id = j.local_conversation_id), TRUE)
"""

COVER_SQLITE = (
    "CREATE INDEX bench_due_cover ON renewal_jobs"
    "(next_attempt_at, created_at, local_conversation_id, job_id) WHERE status = 'pending'"
)
COVER_PG = (
    "CREATE INDEX bench_due_cover ON renewal_jobs (next_attempt_at, created_at) "
    "INCLUDE (local_conversation_id, job_id) WHERE status = 'pending'"
)


def _variants() -> list[dict[str, Any]]:
    base = bare._DUE_SELECT
    gate = base[
        base.index("      AND NOT EXISTS (SELECT 1 FROM local_conversations") : base.index(
            "      AND NOT EXISTS (SELECT 1 FROM renewal_jobs AS running"
        )
    ]
    scalar = base.replace(gate, _GATE_SCALAR)
    return [
        {"name": "renewald today (scan 4 x 32, NOT EXISTS gate)", "sql": base},
        {"name": "gate as a correlated scalar subquery", "sql": scalar},
        {"name": "scan 2 x 32", "sql": base, "scan": 2 * BATCH},
        {"name": "scan 1 x 32", "sql": base, "scan": BATCH},
        {"name": "partial covering index on pending jobs", "sql": base, "index": True},
        {"name": "partial covering index + scalar gate", "sql": scalar, "index": True},
        {"name": "scalar gate + scan 2 x 32", "sql": scalar, "scan": 2 * BATCH},
    ]


def _time(fn, n: int, reps: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    for _ in range(20):
        fn()
    meds = []
    for _ in range(reps):
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            xs.append((time.perf_counter() - t) * 1000)
        meds.append(statistics.median(xs))
    return {"median_ms": statistics.median(meds), "min_ms": min(meds), "max_ms": max(meds)}


def _sqlite(ctx: Ctx, n: int) -> list[dict[str, Any]]:
    path = ctx.sqlite.loaded(dataset(ctx), now_ms())
    conn = sqlite_connect(path)
    out = []
    try:
        now = now_ms()
        expected = None
        for v in _variants():
            sql = bare._names(v["sql"], "qmark")
            params = {"now": now, "scan": v.get("scan", BATCH * bare.SCAN_FACTOR), "limit": BATCH}
            if v.get("index"):
                conn.execute(COVER_SQLITE)
            rows = conn.execute(sql, params).fetchall()
            expected = expected or rows
            plan = "\n".join(
                r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            )
            t = _time(
                lambda sql=sql, params=params: conn.execute(sql, params).fetchall(), n, ctx.reps
            )
            if v.get("index"):
                conn.execute("DROP INDEX bench_due_cover")
            out.append(
                {
                    "backend": "sqlite",
                    "variant": v["name"],
                    **t,
                    "same_rows": rows == expected,
                    "plan": plan,
                }
            )
            say(f"variant sqlite / {v['name']}: {t['median_ms']:.3f} ms")
        out += _sqlite_claims(conn, n, ctx.reps)
    finally:
        conn.close()
        ctx.sqlite.discard(path)
    return out


def _sqlite_claims(conn: Any, n: int, reps: int) -> list[dict[str, Any]]:
    """The claim UPDATE (rolled back, so every run sees the same rows): renewald's re-check
    `AND status = 'pending'` lets SQLite drive the UPDATE from idx_renewal_jobs_status_due
    (every pending row) instead of the primary key (32 lookups); `+status` keeps the
    re-check but takes the column out of index selection."""
    today = bare.SQLITE_CLAIM
    marker = ") AND status = 'pending'\nRETURNING"
    assert marker in today
    variants = [
        ("claim today (... AND status = 'pending')", today),
        (
            "claim with AND +status = 'pending'",
            today.replace(marker, marker.replace("AND status", "AND +status")),
        ),
    ]
    out = []
    expected = None
    for name, sql in variants:
        now = now_ms()
        params = {
            "now": now,
            "owner": "bench",
            "lease_until": now + 60_000,
            "scan": BATCH * bare.SCAN_FACTOR,
            "limit": BATCH,
        }

        def once(sql: str = sql, params: dict[str, Any] = params) -> list[Any]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.execute("ROLLBACK")

        rows = sorted(r[0] for r in once())
        expected = expected or rows
        plan = "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        t = _time(once, n, reps)
        out.append(
            {"backend": "sqlite", "variant": name, **t, "same_rows": rows == expected, "plan": plan}
        )
        say(f"variant sqlite / {name}: {t['median_ms']:.3f} ms")
    return out


def _pg(ctx: Ctx, n: int) -> list[dict[str, Any]]:
    assert ctx.pg is not None
    schema = ctx.pg.loaded(dataset(ctx), now_ms(), analyze=True)
    conn = ctx.pg.connect(schema, autocommit=True)
    out = []
    try:
        now = now_ms()
        expected = None
        for v in _variants():
            sql = bare._names(v["sql"].replace("{lock}", " FOR UPDATE SKIP LOCKED"), "pyformat")
            params = {"now": now, "scan": v.get("scan", BATCH * bare.SCAN_FACTOR), "limit": BATCH}
            if v.get("index"):
                conn.execute(COVER_PG)
                conn.execute("ANALYZE renewal_jobs")
            rows = conn.execute(sql, params).fetchall()
            expected = expected or rows
            plan_rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
            plan = "\n".join(r[0] for r in plan_rows)
            t = _time(
                lambda sql=sql, params=params: conn.execute(sql, params).fetchall(), n, ctx.reps
            )
            if v.get("index"):
                conn.execute("DROP INDEX bench_due_cover")
            server = next((ln for ln in plan.splitlines() if "Execution Time" in ln), "")
            out.append(
                {
                    "backend": "postgresql",
                    "variant": v["name"],
                    **t,
                    "same_rows": rows == expected,
                    "server": server.strip(),
                    "plan": plan,
                }
            )
            say(f"variant postgresql / {v['name']}: {t['median_ms']:.3f} ms ({server.strip()})")
    finally:
        conn.close()
        ctx.pg.drop(schema)
    return out


def run(ctx: Ctx) -> str:
    n = ctx.pick(300, 50)
    results = _sqlite(ctx, n)
    if ctx.pg is not None:
        results += _pg(ctx, n)
    ds = dataset(ctx)
    rows = ds.finished + ds.jobs + ds.future
    L = [
        f"# Due-query variants on {rows:,} rows",
        "",
        "Client-side ms per execution (median of per-repetition medians, min-max); "
        "PostgreSQL with FOR UPDATE SKIP LOCKED in autocommit; 'same rows' compares the "
        "returned job ids with the first variant's.",
        "",
        "| backend | variant | ms | min-max | same rows | server (EXPLAIN ANALYZE) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        L.append(
            f"| {r['backend']} | {r['variant']} | {r['median_ms']:.3f} | "
            f"{r['min_ms']:.3f}-{r['max_ms']:.3f} | {'yes' if r['same_rows'] else 'NO'} | "
            f"{r.get('server', '')} |"
        )
    L.append("")
    for r in results:
        L += [
            f"<details><summary>{r['backend']}: {r['variant']}</summary>",
            "",
            "```",
            r["plan"],
            "```",
            "</details>",
            "",
        ]
    return "\n".join(L)
