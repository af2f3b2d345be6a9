"""Section 3, pickup latency with a running daemon (`renewald run`, default config).

The bench process plays the tracker: it inserts jobs one transaction each at a steady
50/s, every job in a conversation of its own, either scheduled `lead` ahead
("scheduled": the daemon has seen them in an earlier poll and wakes for them) or already
due at insert ("due": nothing tells the daemon; it finds them at its next poll, so the
latency is bounded by `poll_interval`, 1 s by default). Latency per job =
`started_at - next_attempt_at`, read back from the database.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from bench.common import now_ms, percentiles, renewald_env, say, spawn, spread, wait_until
from bench.context import Ctx
from bench.db import DataSet, fresh_db, insert_job_pg, insert_job_sqlite, sqlite_connect

RATE = 50
LEAD_MS = 2_000
KINDS = ("scheduled", "due")


def _done_at_least(db: Any, like: str, n: int) -> bool:
    done = db.query(
        "SELECT count(*) FROM renewal_jobs WHERE job_id LIKE ? AND status = 'done'", (like,)
    )
    return bool(done[0][0] >= n)


def _inserter(ctx: Ctx, db: Any):  # type: ignore[no-untyped-def]
    if db.backend == "sqlite":
        lite = sqlite_connect(db.path)
        return lite, lambda **kw: insert_job_sqlite(lite, kind="log", **kw)
    assert ctx.pg is not None
    pg = ctx.pg.connect(db.schema)
    return pg, lambda **kw: insert_job_pg(pg, kind="log", **kw)


def _window(insert, *, kind: str, prefix: str, seconds: float, first_conv: int) -> dict:  # type: ignore[no-untyped-def]
    n = int(RATE * seconds)
    start = time.monotonic()
    late = 0.0
    for k in range(n):
        slot = start + k / RATE
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
        now = now_ms()
        at = now + LEAD_MS if kind == "scheduled" else now
        insert(job_id=f"{prefix}{k:05d}", conversation=f"conv-{first_conv + k:07d}", at=at, now=now)
    return {"inserted": n, "insert_seconds": time.monotonic() - start, "max_insert_lag_s": late}


def pickup_backend(
    ctx: Ctx,
    backend: str,
    *,
    kinds: tuple[str, ...] = KINDS,
    windows: int | None = None,
) -> dict[str, Any]:
    windows = windows or ctx.reps
    seconds = ctx.pick(6.0, 2.0)
    per_window = int(RATE * seconds)
    ds = DataSet(jobs=0, conversations=windows * len(kinds) * per_window)
    db = fresh_db(backend, ds, now_ms(), ctx.sqlite, ctx.pg)
    run_dir = ctx.run_dir(f"pickup-{backend}")
    config = ctx.config(run_dir)
    proc = spawn(
        ["run"],
        env=renewald_env(db.url, config),
        cwd=run_dir,
        console=run_dir / "console.txt",
    )
    conn = None
    try:
        wait_until(
            lambda: (
                db.query("SELECT count(*) FROM renewald_daemons")[0][0] > 0
                or proc.popen.poll() is not None
            ),
            timeout=30,
            what="the daemon to register",
        )
        if proc.popen.poll() is not None:
            raise RuntimeError(f"renewald run exited: {proc.console_tail()}")
        time.sleep(1.5)  # past the first poll
        conn, insert = _inserter(ctx, db)
        per_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        pooled: dict[str, list[int]] = {k: [] for k in kinds}
        conv = 0
        for w in range(windows):
            for kind in kinds:
                prefix = f"{kind}-{w}-"
                info = _window(insert, kind=kind, prefix=prefix, seconds=seconds, first_conv=conv)
                conv += per_window
                like = prefix + "%"
                wait_until(
                    functools.partial(_done_at_least, db, like, per_window),
                    timeout=LEAD_MS / 1000 + 30,
                    what=f"{kind} window {w} to be delivered",
                    every=0.1,
                )
                lat = [
                    r[0]
                    for r in db.query(
                        "SELECT started_at - next_attempt_at FROM renewal_jobs WHERE job_id LIKE ?",
                        (like,),
                    )
                ]
                pct = percentiles(lat)
                per_kind[kind].append({**pct, **info})
                pooled[kind].extend(lat)
                say(
                    f"pickup {backend} {kind} window {w + 1}: p50 {pct['p50']} ms, "
                    f"p95 {pct['p95']} ms, p99 {pct['p99']} ms, max {pct['max']} ms"
                )
        code = proc.stop()
        summary = {
            kind: {
                **{
                    p: spread([win[p] for win in per_kind[kind]])
                    for p in ("p50", "p95", "p99", "max")
                },
                "pooled": percentiles(pooled[kind]),
            }
            for kind in kinds
        }
        return {
            "rate_per_s": RATE,
            "lead_ms": LEAD_MS,
            "window_s": seconds,
            "windows": per_kind,
            "summary": summary,
            "exit_code": code,
            "rss_peak_mb": round(proc.rss_peak / 2**20, 1),
        }
    finally:
        if conn is not None:
            conn.close()
        if proc.popen.poll() is None:
            proc.stop()
        db.discard(ctx.sqlite)


def run(ctx: Ctx) -> dict[str, Any]:
    return {backend: pickup_backend(ctx, backend) for backend in ctx.backends}
