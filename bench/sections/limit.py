"""Section 1, the bare-SQL limit (see bench/bare.py for the loop and its statements).

Every run starts on a fresh copy of the drain's data set (N due jobs, two per
conversation) and stops after `max_jobs` jobs: rates, not totals, are compared, and the
per-job loops on PostgreSQL are too slow to take through all N inside the time budget.
"""

from __future__ import annotations

import time
from typing import Any

from bench import bare
from bench.common import now_ms, say, spread
from bench.context import Ctx
from bench.db import DataSet, fresh_db
from bench.sections.drain import dataset


def configs(ctx: Ctx) -> list[dict[str, Any]]:
    n = dataset(ctx).jobs
    out = [
        {
            "key": "sqlite-job",
            "backend": "sqlite",
            "batch": 1,
            "procs": 1,
            "max_jobs": ctx.pick(10_000, 1_000),
        },
        {"key": "sqlite-100", "backend": "sqlite", "batch": 100, "procs": 1, "max_jobs": n},
    ]
    if ctx.pg is not None:
        out += [
            {
                "key": "postgresql-job-1",
                "backend": "postgresql",
                "batch": 1,
                "procs": 1,
                "max_jobs": ctx.pick(3_000, 300),
            },
            {
                "key": "postgresql-job-3",
                "backend": "postgresql",
                "batch": 1,
                "procs": 3,
                "max_jobs": ctx.pick(3_000, 300),
            },
            {
                "key": "postgresql-100-1",
                "backend": "postgresql",
                "batch": 100,
                "procs": 1,
                "max_jobs": n,
            },
            {
                "key": "postgresql-100-3",
                "backend": "postgresql",
                "batch": 100,
                "procs": 3,
                "max_jobs": n,
            },
        ]
    return out


def once(ctx: Ctx, c: dict[str, Any], ds: DataSet | None = None) -> dict[str, Any]:
    ds = ds or dataset(ctx)
    db = fresh_db(c["backend"], ds, now_ms(), ctx.sqlite, ctx.pg)
    run_dir = ctx.run_dir(f"bare-{c['key']}")
    try:
        if c["backend"] == "sqlite":
            assert db.path is not None
            r = bare.run_sqlite(
                db.path,
                batch=c["batch"],
                jsonl=run_dir / "bare.jsonl",
                max_jobs=c["max_jobs"],
            )
        elif c["procs"] == 1:
            assert ctx.pg is not None and db.schema is not None
            r = bare.run_pg(
                ctx.pg.conninfo(db.schema),
                batch=c["batch"],
                jsonl=run_dir / "bare.jsonl",
                max_jobs=c["max_jobs"],
            )
        else:
            assert ctx.pg is not None and db.schema is not None
            r = bare.run_pg_procs(
                ctx.pg.conninfo(db.schema),
                procs=c["procs"],
                batch=c["batch"],
                work=run_dir,
                max_jobs=c["max_jobs"],
            )
        seconds = r["t1"] - r["t0"]
        lines = sum(p.read_bytes().count(b"\n") for p in run_dir.glob("*.jsonl"))
        (attempts,) = db.query("SELECT count(*) FROM renewal_job_attempts")[0]
        out = {
            **c,
            "jobs": r["jobs"],
            "seconds": seconds,
            "jobs_per_s": r["jobs"] / seconds,
            "jsonl_lines": lines,
            "attempt_rows": attempts,
        }
        if "per_process" in r:
            out["per_process"] = r["per_process"]
        if not (attempts == lines == r["jobs"]):
            out["error"] = f"jobs {r['jobs']}, attempt rows {attempts}, JSONL lines {lines}"
        return out
    finally:
        db.discard(ctx.sqlite)


def run(ctx: Ctx) -> dict[str, Any]:
    cs = configs(ctx)
    runs: dict[str, list[dict[str, Any]]] = {c["key"]: [] for c in cs}
    for rep in range(ctx.reps):
        for c in cs:
            r = once(ctx, c)
            runs[c["key"]].append(r)
            say(
                f"bare {c['key']} rep {rep + 1}: {r['jobs_per_s']:.0f} jobs/s "
                f"({r['jobs']} jobs in {r['seconds']:.2f}s)"
                + (f" ERROR {r['error']}" if "error" in r else "")
            )
            time.sleep(0.2)
    summary = {
        key: {
            "jobs_per_s": spread([r["jobs_per_s"] for r in rs]),
            "jobs": rs[0]["jobs"],
            "errors": [r["error"] for r in rs if "error" in r],
        }
        for key, rs in runs.items()
    }
    return {"configs": cs, "runs": runs, "summary": summary}
