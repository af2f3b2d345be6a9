"""Section 1, the bare-SQL limit: `python -m bench.bare` processes (bench/bare.py) on a copy
of the drain's data set, each stopping after its share of `max_jobs`; the rate in the
loop and spawn to exit (start-up included, as renewald and the peers are timed).
"""

from __future__ import annotations

import functools
from typing import Any

from bench.common import Ctx, bench_cmd, child_env, repeat, run_all, spawn
from bench.db import DataSet
from bench.sections.drain import dataset
from bench.statements import statements


def configs(ctx: Ctx) -> list[dict[str, Any]]:
    """key -> backend, claim batch, processes, jobs per run."""
    n = dataset(ctx).jobs
    rows = [("sqlite", 1, 1, ctx.pick(10_000, 1_000)), ("sqlite", 100, 1, n)]
    if "postgresql" in ctx.backends:
        per_job = ctx.pick(3_000, 300)
        rows += [("postgresql", b, p, per_job if b == 1 else n) for b in (1, 100) for p in (1, 3)]
    return [
        {"key": f"{b}-{'job' if batch == 1 else batch}" + (f"-{p}" if b != "sqlite" else ""),
         "backend": b, "batch": batch, "procs": p, "max_jobs": m}
        for b, batch, p, m in rows
    ]  # fmt: skip


def once(ctx: Ctx, c: dict[str, Any], ds: DataSet) -> dict[str, Any]:
    """One run of `c`: its processes spawned together, each timed spawn to exit."""
    run_dir = ctx.run_dir(f"bare-{c['key']}")
    sql = run_dir / "statements.json"
    sql.write_text(statements(c["backend"]).dumps())
    share = -(-c["max_jobs"] // c["procs"])
    with ctx.dbs.get(c["backend"], ds) as db:
        cmd = bench_cmd("bare", c["backend"], db.target, sql, c["batch"], share)
        jsonl = [run_dir / f"bare-{i}.jsonl" for i in range(c["procs"])]
        procs = [spawn([*cmd, str(j)], env=child_env(), cwd=run_dir) for j in jsonl]
        codes, wall = run_all(procs)
        if any(codes):
            raise RuntimeError(f"bare loop exit {codes}: {procs[0].tail()}")
        parts = [p.last_json() for p in procs]
        jobs = sum(p["jobs"] for p in parts)
        loop = max(p["t1"] for p in parts) - min(p["t0"] for p in parts)
        lines = sum(p.read_bytes().count(b"\n") for p in jsonl)
        attempts = db.one("SELECT count(*) FROM renewal_job_attempts")
        out = {**c, "jobs": jobs, "wall_s": wall, "jobs_per_s": jobs / wall,
               "loop_jobs_per_s": jobs / loop}  # fmt: skip
        if not attempts == lines == jobs:
            out["error"] = f"jobs {jobs}, attempt rows {attempts}, JSONL lines {lines}"
        return out


def run(ctx: Ctx) -> dict[str, Any]:
    cs, ds = configs(ctx), dataset(ctx)
    todo = {c["key"]: functools.partial(once, ctx, c, ds) for c in cs}
    return {"configs": cs, **repeat(ctx, "bare", todo, "jobs_per_s", "loop_jobs_per_s")}
