"""Section 2, the renewald drain: N due `log` jobs, `renewald run --once` as real processes.

jobs/s = N / wall time of the process(es), spawn to exit (start-up included, as cron sees
it). The steady rate, N / (last finished_at - first started_at) read from the database,
is reported beside it. The console (one JSON line per delivery from the `log` adapter,
plus the daemon's own lines) goes to a file: that output is part of the cost measured.
"""

from __future__ import annotations

from typing import Any

from bench.common import now_ms, renewald_env, say, spawn, spread
from bench.context import Ctx
from bench.db import DataSet, fresh_db

# (backend, daemons, console level): the quiet variant prices the console output (the
# `log` adapter's one info line per delivery) by turning it off.
CONFIGS = (
    ("sqlite", 1, None),
    ("sqlite", 1, "warning"),
    ("postgresql", 1, None),
    ("postgresql", 3, None),
)


def _key(backend: str, daemons: int, level: str | None) -> str:
    return f"{backend}-{daemons}" + ("-quiet" if level else "")


def dataset(ctx: Ctx) -> DataSet:
    n = ctx.pick(20_000, 2_000)
    return DataSet(jobs=n, conversations=n // 2)


def drain_once(
    ctx: Ctx, backend: str, daemons: int, ds: DataSet, *, level: str | None = None
) -> dict[str, Any]:
    db = fresh_db(backend, ds, now_ms(), ctx.sqlite, ctx.pg)
    run_dir = ctx.run_dir(f"drain-{_key(backend, daemons, level)}")
    config = ctx.config(run_dir, log_level=level)
    env = renewald_env(db.url, config)
    try:
        procs = [
            spawn(["run", "--once"], env=env, cwd=run_dir, console=run_dir / f"console-{i}.txt")
            for i in range(daemons)
        ]
        codes = [p.wait(timeout=900) for p in procs]
        wall = max(p.ended or p.started for p in procs) - min(p.started for p in procs)
        counts = db.status_counts()
        (span_ms, attempts) = db.query(
            "SELECT max(finished_at) - min(started_at), count(*) FROM renewal_job_attempts"
        )[0]
        consoles = [p.console_stats() for p in procs]
        result = {
            "backend": backend,
            "daemons": daemons,
            "jobs": ds.jobs,
            "exit_codes": codes,
            "wall_s": wall,
            "jobs_per_s": ds.jobs / wall,
            "db_span_s": (span_ms or 0) / 1000,
            "steady_jobs_per_s": ds.jobs / (span_ms / 1000) if span_ms else None,
            "status_counts": counts,
            "attempt_rows": attempts,
            "rss_peak_mb": [round(p.rss_peak / 2**20, 1) for p in procs],
            "cpu_s": [round(p.cpu_seconds, 2) for p in procs],
            "console_bytes": sum(c["bytes"] for c in consoles),
            "console_lines": sum(c["lines"] for c in consoles),
        }
        if counts.get("done") != ds.jobs or any(codes):
            result["error"] = (
                f"not every job was delivered: {counts}, exit codes {codes}: "
                + procs[0].console_tail(3)
            )
        return result
    finally:
        db.discard(ctx.sqlite)


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    configs = [c for c in CONFIGS if c[0] in ctx.backends]
    runs: dict[str, list[dict[str, Any]]] = {_key(*c): [] for c in configs}
    for rep in range(ctx.reps):
        for backend, daemons, level in configs:
            r = drain_once(ctx, backend, daemons, ds, level=level)
            r["console_level"] = level or "info"
            say(
                f"drain {_key(backend, daemons, level)} rep {rep + 1}: "
                f"{r['jobs_per_s']:.0f} jobs/s "
                f"(wall {r['wall_s']:.1f}s, steady {r['steady_jobs_per_s'] or 0:.0f}/s)"
                + (f" ERROR {r['error']}" if "error" in r else "")
            )
            runs[_key(backend, daemons, level)].append(r)
    summary = {}
    for key, rs in runs.items():
        summary[key] = {
            "jobs_per_s": spread([r["jobs_per_s"] for r in rs]),
            "steady_jobs_per_s": spread([r["steady_jobs_per_s"] or 0 for r in rs]),
            "wall_s": spread([r["wall_s"] for r in rs]),
            "rss_peak_mb": spread([max(r["rss_peak_mb"]) for r in rs]),
            "cpu_s_per_1k_jobs": spread([sum(r["cpu_s"]) / r["jobs"] * 1000 for r in rs]),
            "console_bytes_per_job": rs[0]["console_bytes"] / rs[0]["jobs"],
            "console_lines": rs[0]["console_lines"],
            "errors": [r["error"] for r in rs if "error" in r],
        }
    return {"dataset": ds.__dict__, "runs": runs, "summary": summary}
