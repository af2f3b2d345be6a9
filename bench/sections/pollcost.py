"""Section 4, poll cost at scale: the due query and the claim on 1,000,000 rows, 99% finished.

Each statement timed from Python with the plain drivers (execute + fetch), after warm-up:
`due` (the claim's candidate SELECT, with a backlog), `due_empty` (an idle poll),
`next_due` (the wake-up query), `claim_sql` (the claim UPDATE … RETURNING 32 and COMMIT;
on PostgreSQL without the per-conversation try-locks renewald's claim takes first) and
`claim_renewald` (`Store.claim_due_jobs`: the whole claim, and the framework's share). Claims use up
due jobs: the counts stay inside the 9,000. SQLite as renewald leaves it (no ANALYZE).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.bare import transaction
from bench.common import Ctx, now_ms, say, spread
from bench.db import DataSet, RunDB
from bench.statements import statements
from renewald.store import Store

BATCH = 32
PLAN_INDEX = "idx_renewal_jobs_status_due"
EXPLAIN = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN (ANALYZE, BUFFERS) "}


def dataset(ctx: Ctx) -> DataSet:
    return DataSet(
        jobs=9_000, conversations=10_000, finished=ctx.pick(990_000, 90_000), future=1_000
    )


def loaded(ctx: Ctx, backend: str, ds: DataSet, section: str) -> tuple[RunDB, float]:
    """`ds` loaded in a new database, and the seconds that took."""
    t = time.perf_counter()
    db = ctx.dbs.get(backend, ds, fresh=False)
    load_s = time.perf_counter() - t
    say(f"{section}: {backend} with {ds.finished + ds.jobs + ds.future:,} rows in {load_s:.1f}s")
    return db, load_s


def time_ms(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _plan(rows: list[tuple[Any, ...]], backend: str) -> dict[str, Any]:
    text = "\n".join(f"{r[0]}|{r[1]}|{r[3]}" if backend == "sqlite" else r[0] for r in rows)
    scan = re.search(r"^.*SCAN (j|renewal_jobs)(?!.*USING)|Seq Scan on renewal_jobs", text, re.M)
    m = re.search(r"Execution Time: ([0-9.]+) ms", text)
    return {"plan": text, "uses_status_due_index": PLAN_INDEX in text, "full_scan": bool(scan),
            "execution_ms": float(m[1]) if m else None}  # fmt: skip


def _backend(ctx: Ctx, backend: str, ds: DataSet, n: dict[str, int]) -> dict[str, Any]:
    db, load_s = loaded(ctx, backend, ds, "poll")
    sql, now = statements(backend), now_ms()
    params = {"now": now, "owner": "bench", "lease_until": now + 60_000,
              "scan_limit": BATCH * sql.scan_factor, "limit": BATCH}  # fmt: skip
    quiet = dict(params, now=db.one("SELECT min(next_attempt_at) FROM renewal_jobs "
                                    "WHERE status = 'pending'") - 1)  # fmt: skip
    with (
        db,
        contextlib.closing(db.connect()) as conn,
        contextlib.closing(db.connect(autocommit=True)) as auto,  # auto: no BEGIN round trip
        contextlib.closing(Store.open(db.url, pool_size=2)) as store,
    ):
        plans = {}
        for name in ("due", "claim", "next_due"):
            stmt = getattr(sql, name)
            rows = conn.execute(EXPLAIN[backend] + stmt.text, stmt.params(**params)).fetchall()
            plans[name] = _plan(rows, backend)
            conn.rollback()

        def query(stmt: Any, values: dict[str, Any]) -> Callable[[], Any]:
            return lambda: auto.execute(stmt.text, stmt.params(**values)).fetchall()

        def claim() -> None:
            values = sql.claim.params(**dict(params, now=now_ms()))
            with transaction(conn, backend) as cur:
                rows = cur.execute(sql.claim.text, values).fetchall()
            assert len(rows) == BATCH, len(rows)

        def claim_renewald() -> None:
            got = store.claim_due_jobs(owner="bench", now=now_ms(), lease_ms=60_000, limit=BATCH)
            assert len(got) == BATCH, len(got)

        fns = {"due": query(sql.due, params), "due_empty": query(sql.due, quiet),
               "next_due": query(sql.next_due, params), "claim_sql": claim,
               "claim_renewald": claim_renewald}  # fmt: skip
        timings = _measure(fns, ctx.reps, n)
    return {"load_s": load_s, "plans": plans, "timings": timings}


def _measure(fns: dict[str, Callable[[], Any]], reps: int, n: dict[str, int]) -> dict[str, Any]:
    """Per statement the spread of per-repetition medians (ms), after a warm-up."""
    for name, fn in fns.items():
        time_ms(fn, 5 if name.startswith("claim") else 20)
    groups = {name: [time_ms(fn, n[name]) for _ in range(reps)] for name, fn in fns.items()}
    return {name: {"ms": spread(statistics.median(g) for g in gs)} for name, gs in groups.items()}


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    due = ctx.pick(300, 100)
    claims = ctx.pick(40, 20)
    n = {**dict.fromkeys(("due", "due_empty", "next_due"), due),
         **dict.fromkeys(("claim_sql", "claim_renewald"), claims)}  # fmt: skip
    out: dict[str, Any] = {"dataset": ds.__dict__, "rows": ds.finished + ds.jobs + ds.future}
    for backend in ctx.backends:
        out[backend] = _backend(ctx, backend, ds, n)
        t = {k: v["ms"]["median"] for k, v in out[backend]["timings"].items()}
        say(f"poll {backend}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in t.items()))
    return out
