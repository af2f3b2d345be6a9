"""Section 2, the renewald drain: N due `log` jobs, `renewald run --once` as real processes.

jobs/s = N / wall time of the process(es), spawn to exit (start-up included, as cron sees
it); the steady rate, N / (last finished_at - first started_at) from the database, beside
it. The console (one JSON line per delivery from the `log` adapter, plus the daemon's own)
goes to a file: that output is part of the cost measured; the quiet variant prices it by
setting the console level to warning.
"""

from __future__ import annotations

from typing import Any

from bench.common import RENEWALD, Ctx, error, renewald_env, run_all, say, spawn, summarise
from bench.db import DataSet, RunDB, run_db

CONFIGS = (("sqlite", 1, None), ("sqlite", 1, "warning"), ("postgresql", 1, None),
           ("postgresql", 3, None))  # fmt: skip


def dataset(ctx: Ctx) -> DataSet:
    n = ctx.pick(20_000, 2_000)
    return DataSet(jobs=n, conversations=n // 2)


def spawn_renewald(
    ctx: Ctx, db: RunDB, name: str, daemons: int, args: list[str], **config: Any
) -> tuple[list[int], float, list[Any]]:
    """`renewald ARGS` in `daemons` processes on `db`, spawned together, waited for."""
    run_dir = ctx.run_dir(name)
    env = renewald_env(db.url, ctx.config(run_dir, **config))
    procs = [spawn([RENEWALD, *args], env=env, cwd=run_dir) for _ in range(daemons)]
    codes, wall = run_all(procs)
    return codes, wall, procs


def drain_once(
    ctx: Ctx, backend: str, daemons: int, ds: DataSet, level: str | None = None
) -> dict[str, Any]:
    db = run_db(backend, ds, ctx.sqlite, ctx.pg)
    key = f"{backend}-{daemons}" + ("-quiet" if level else "")
    try:
        logging = {"level": level} if level else {}
        codes, wall, procs = spawn_renewald(ctx, db, f"drain-{key}", daemons, ["run", "--once"],
                                            logging=logging)  # fmt: skip
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
    finally:
        db.discard()


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    configs = [c for c in CONFIGS if c[0] in ctx.backends]
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(ctx.reps):
        for backend, daemons, level in configs:
            r = drain_once(ctx, backend, daemons, ds, level)
            runs.setdefault(r["key"], []).append(r)
            say(f"drain {r['key']} rep {rep + 1}: {r['jobs_per_s']:.0f} jobs/s (wall "
                f"{r['wall_s']:.1f}s, steady {r['steady_jobs_per_s'] or 0:.0f}/s)"
                + error(r))  # fmt: skip
    keys = ("jobs_per_s", "steady_jobs_per_s", "rss_peak_mb", "cpu_s_per_1k_jobs",
            "console_bytes_per_job")  # fmt: skip
    summary = {key: summarise(rs, *keys) for key, rs in runs.items()}
    return {"dataset": ds.__dict__, "runs": runs, "summary": summary}
