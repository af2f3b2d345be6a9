"""Section 2, the renewald drain: N due `log` jobs, `renewald run --once` as real processes,
timed spawn to exit, with the steady rate from the database beside it. The console goes to
a file (part of the cost); the quiet variant sets its level to warning.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from bench.common import Ctx, repeat, run_all
from bench.db import DataSet

CONFIGS = (("sqlite", 1, None), ("sqlite", 1, "warning"), ("postgresql", 1, None),
           ("postgresql", 3, None))  # fmt: skip


def dataset(ctx: Ctx) -> DataSet:
    n = ctx.pick(20_000, 2_000)
    return DataSet(jobs=n, conversations=n // 2)


def drain_once(ctx: Ctx, backend: str, daemons: int, ds: DataSet, level: str | None = None,
               *, name: str = "drain", args: Sequence[str] = ("run", "--once"),
               **config: Any) -> dict[str, Any]:  # fmt: skip
    """`daemons` processes of `renewald ARGS` (default `run --once`) draining `ds`, spawned
    together; the section `io` reads its figures from this record too."""
    key = f"{backend}-{daemons}" + ("-quiet" if level else "")
    with ctx.dbs.get(backend, ds) as db:
        logging = {"level": level} if level else {}
        procs = [ctx.renewald(db, f"{name}-{key}", args, logging=logging, **config)
                 for _ in range(daemons)]  # fmt: skip
        codes, wall = run_all(procs)
        counts = db.status_counts()
        span_ms, attempts = db.query(
            "SELECT max(finished_at) - min(started_at), count(*) FROM renewal_job_attempts"
        )[0]
        console = [p.console_text() for p in procs]
        out = {
            "key": key, "backend": backend, "daemons": daemons, "jobs": ds.jobs,
            "exit_codes": codes, "wall_s": wall, "jobs_per_s": ds.jobs / wall,
            "steady_jobs_per_s": ds.jobs / (span_ms / 1000) if span_ms else None,
            "status_counts": counts, "attempt_rows": attempts,
            "rss_peak_mb": max(p.rss_peak for p in procs) / 2**20,
            "cpu_s_per_1k_jobs": sum(p.cpu_seconds for p in procs) / ds.jobs * 1000,
            "console_bytes_per_job": sum(len(c.encode()) for c in console) / ds.jobs,
        }  # fmt: skip
        if counts.get("done") != ds.jobs or any(codes):
            out["error"] = f"{counts}, exit codes {codes}: {procs[0].tail()}"
        return out


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    todo = {f"{b}-{d}" + "-quiet" * bool(level): functools.partial(drain_once, ctx, b, d, ds, level)
            for b, d, level in CONFIGS if b in ctx.backends}  # fmt: skip
    keys = ("jobs_per_s", "steady_jobs_per_s", "rss_peak_mb", "cpu_s_per_1k_jobs",
            "console_bytes_per_job")  # fmt: skip
    return {"dataset": ds.__dict__, **repeat(ctx, "drain", todo, *keys)}
