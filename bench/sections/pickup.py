"""Section 3, pickup latency of `renewald run` (default config): the bench plays the tracker,
inserting jobs one transaction each at 50/s, one conversation each, scheduled `LEAD_MS`
ahead or already due; latency = `started_at - next_attempt_at` from the database.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench.common import Ctx, now_ms, percentiles, say, spread, wait_until
from bench.db import DataSet, RunDB

RATE = 50
LEAD_MS = 2_000
KINDS = ("scheduled", "due")


def _window(
    db: RunDB, conn: Any, ds: DataSet, kind: str, prefix: str, seconds: float, conv: int
) -> None:
    """Insert RATE jobs a second for `seconds`, one transaction each."""
    start = time.monotonic()
    for k in range(int(RATE * seconds)):
        time.sleep(max(0.0, start + k / RATE - time.monotonic()))
        now = now_ms()
        at = now + LEAD_MS if kind == "scheduled" else now
        db.insert_job(conn, ds.job(f"{prefix}{k:05d}", conv + k, at, now))


def pickup_backend(ctx: Ctx, backend: str) -> dict[str, Any]:
    seconds = ctx.pick(6.0, 2.0)
    per_window = int(RATE * seconds)
    ds = DataSet(jobs=0, conversations=ctx.reps * len(KINDS) * per_window)
    with (
        ctx.dbs.get(backend, ds) as db,
        ctx.daemon(db, f"pickup-{backend}") as proc,
        contextlib.closing(db.connect()) as conn,
    ):
        time.sleep(1.5)  # past the first poll
        windows: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        pooled: dict[str, list[int]] = {k: [] for k in KINDS}
        for w in range(ctx.reps):
            for i, kind in enumerate(KINDS):
                prefix = f"{kind}-{w}-"
                _window(db, conn, ds, kind, prefix, seconds, (w * len(KINDS) + i) * per_window)
                done = "SELECT count(*) FROM renewal_jobs WHERE job_id LIKE ? AND status = 'done'"
                wait_until(lambda: db.one(done, (prefix + "%",)) >= per_window,  # noqa: B023
                           timeout=30 + LEAD_MS / 1000, what=f"{kind} window {w}")  # fmt: skip
                late = "SELECT started_at - next_attempt_at FROM renewal_jobs WHERE job_id LIKE ?"
                lat = [r[0] for r in db.query(late, (prefix + "%",))]
                windows[kind].append(percentiles(lat))
                pooled[kind] += lat
                say(f"pickup {backend} {kind} window {w + 1}: {windows[kind][-1]}")
        summary = {
            kind: {
                **{p: spread(x[p] for x in windows[kind]) for p in ("p50", "p95", "p99", "max")},
                "pooled": percentiles(pooled[kind]),
            }
            for kind in KINDS
        }
        return {"rate_per_s": RATE, "lead_ms": LEAD_MS, "window_s": seconds,
                "windows": windows, "summary": summary, "exit_code": proc.stop()}  # fmt: skip


def run(ctx: Ctx) -> dict[str, Any]:
    return {backend: pickup_backend(ctx, backend) for backend in ctx.backends}
