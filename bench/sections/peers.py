"""Section `peers`: renewald, the bare loops and other Python queues drain the same N no-op
jobs, one repetition of each in turn, every one in a child process timed spawn to exit:
`renewald run --once`, `python -m bench.bare`, `python -m bench.peer` (bench/peer.py; each
peer's jobs are enqueued before, untimed). What each peer does less is in PEERS.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any

from bench.common import PEER_PACKAGES, Ctx, bench_cmd, child_env, repeat, run_all, spawn, versions
from bench.db import DataSet
from bench.sections import drain, limit

# peer -> (backend, what it does per job compared with renewald)
PEERS = {
    "huey": ("sqlite", "SqliteHuey 1 worker thread: dequeue = DELETE of the message, no "
             "attempt record, no lease/fence, no per-conversation rule, no JSONL, result not "
             "stored (None)"),
    "pgqueuer": ("postgresql", "default batch_size 10, asyncpg: job row deleted + one "
                 "pgqueuer_log row (buffered), no fenced lease, no per-conversation rule, "
                 "no JSONL"),
    "procrastinate": ("postgresql", "concurrency 4, psycopg: job row updated (status + events), "
                      "no per-conversation rule (no lock given), no JSONL"),
}  # fmt: skip


def peer_once(ctx: Ctx, peer: str, n: int) -> dict[str, Any]:
    run_dir = ctx.run_dir(f"peer-{peer}")
    schema = ctx.dbs.schema(peer) if PEERS[peer][0] == "postgresql" else None
    target = ctx.dbs.conninfo(schema) if schema else str(run_dir / "huey.db")
    try:
        cmd = bench_cmd("peer", peer, "setup", target, n)
        subprocess.run(cmd, env=child_env(), check=True, capture_output=True, timeout=900)
        proc = spawn(bench_cmd("peer", peer, "drain", target, n), env=child_env(),
                     cwd=run_dir, sample=False)  # fmt: skip
        codes, wall = run_all([proc])
        if codes[0]:
            raise RuntimeError(f"{peer} exit {codes[0]}: {proc.tail(5)}")
        got = proc.last_json()
    finally:
        if schema is not None:
            ctx.dbs.drop(schema)
    out = {"peer": peer, "jobs": n, "wall_s": wall, "jobs_per_s": n / wall, **got}
    if got["done"] != n or got["left"]:
        out["error"] = f"{got['done']} of {n} ran, {got['left']} left"
    return out


def _one(ctx: Ctx, key: str, ds: DataSet) -> dict[str, Any]:
    if key.startswith("renewald-"):
        return drain.drain_once(ctx, key.split("-")[1], 1, ds)
    if key.startswith("bare-"):
        c = next(c for c in limit.configs(ctx) if f"bare-{c['key']}" == key)
        return limit.once(ctx, {**c, "max_jobs": ds.jobs}, ds)
    return peer_once(ctx, key, ds.jobs)


def run(ctx: Ctx) -> dict[str, Any]:
    n = ctx.pick(10_000, 1_000)
    ds = DataSet(jobs=n, conversations=n // 2)
    keys = ["renewald-sqlite", "bare-sqlite-job", "huey"]
    if "postgresql" in ctx.backends:
        keys += ["renewald-postgresql-1", "pgqueuer", "procrastinate", "bare-postgresql-job-1",
                 "bare-postgresql-100-1"]  # fmt: skip
    todo = {k: functools.partial(_one, ctx, k, ds) for k in keys}
    oban = {"oban": "not installed (oban 0.7 needs Python >= 3.12)"}
    return {
        "jobs": n, "versions": {**oban, **versions(PEER_PACKAGES)},
        "does_less": {k: v[1] for k, v in PEERS.items()},
        **repeat(ctx, "peers", todo, "jobs_per_s"),
    }  # fmt: skip
