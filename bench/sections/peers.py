"""Section `peers`: renewald, the bare loops and other Python queues, same jobs, same run.

Every configuration drains N (10,000) no-op jobs from a fresh store, one repetition of
each in turn. jobs/s = N / wall time of the process, spawn to exit (import, connect and
start-up included, as for `renewald run --once`); each peer's jobs are enqueued before,
by a separate process, untimed. The bare loops (bench/bare.py) are timed inside the loop
(no start-up). What each peer does less than renewald is listed in PEERS.

The peers run in a child process: `python -m bench.sections.peers PEER PHASE TARGET N`
(PHASE is `setup` or `drain`; TARGET a SQLite path or a libpq conninfo whose
`search_path` is the bench's own schema). The child prints `{"done": …, "left": …}`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from bench import bare
from bench.common import BENCH_DIR, now_ms, say, spread
from bench.context import Ctx
from bench.db import DataSet
from bench.sections import drain, limit

# peer -> (backend, what it does per job compared with renewald)
PEERS = {
    "huey": (
        "sqlite",
        "SqliteHuey 1 worker thread: dequeue = DELETE of the message, no attempt record, "
        "no lease/fence, no per-conversation rule, no JSONL, result not stored (None)",
    ),
    "pgqueuer": (
        "postgresql",
        "default batch_size 10, asyncpg: job row deleted + one pgqueuer_log row (buffered), "
        "no fenced lease, no per-conversation rule, no JSONL",
    ),
    "procrastinate": (
        "postgresql",
        "concurrency 4, psycopg: job row updated (status + events), no per-conversation "
        "rule (no lock given), no JSONL",
    ),
}
COUNTED = {"done": 0}


def _noop() -> None:
    COUNTED["done"] += 1


# -- the peers, run in the child ----------------------------------------------------------


def _huey(phase: str, path: str, n: int) -> dict[str, Any]:
    from huey import SqliteHuey  # type: ignore[import-untyped]
    from huey.consumer import Consumer  # type: ignore[import-untyped]

    huey = SqliteHuey("bench", filename=path)
    task = huey.task()(_noop)
    if phase == "setup":
        for _ in range(n):
            task()
        return {"done": 0, "left": huey.pending_count()}
    consumer = Consumer(huey, workers=1, worker_type="thread", periodic=False)
    consumer.start()
    while COUNTED["done"] < n:
        time.sleep(0.002)
    consumer.stop(graceful=True)
    return {"done": COUNTED["done"], "left": huey.pending_count()}


async def _pgqueuer(phase: str, conninfo: str, n: int) -> dict[str, Any]:
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    dsn, schema = _dsn(conninfo)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    queries = Queries(AsyncpgDriver(conn))
    if phase == "setup":
        await queries.install()
        for start in range(0, n, 1000):
            k = min(1000, n - start)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
    else:
        qm = QueueManager(queries)

        @qm.entrypoint("noop")
        async def noop(job: Any) -> None:
            _noop()

        await qm.run(mode=QueueExecutionMode.drain)
    left = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        left_n = await left.fetchval("SELECT count(*) FROM pgqueuer")
        return {"done": COUNTED["done"], "left": left_n}
    finally:
        await left.close()


def _dsn(conninfo: str) -> tuple[str, str]:
    """A libpq conninfo as (postgresql:// URL, schema of its search_path): asyncpg reads URLs."""
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(conninfo)
    schema = str(d.get("options", "")).split("search_path=")[-1]
    url = f"postgresql://{d.get('user', 'postgres')}@{d.get('host', '127.0.0.1')}:"
    return f"{url}{d.get('port', 5432)}/{d.get('dbname', 'postgres')}", schema


async def _procrastinate(phase: str, conninfo: str, n: int) -> dict[str, Any]:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop")
    async def noop() -> None:
        _noop()

    async with app.open_async():
        if phase == "setup":
            await app.schema_manager.apply_schema_async()
            for start in range(0, n, 1000):
                await noop.batch_defer_async(*[{} for _ in range(min(1000, n - start))])
        else:
            await app.run_worker_async(concurrency=4, wait=False, install_signal_handlers=False)
        import psycopg

        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
            )
            (left,) = await cur.fetchone() or (None,)
    return {"done": COUNTED["done"], "left": left}


def child(peer: str, phase: str, target: str, n: int) -> dict[str, Any]:
    if peer == "huey":
        return _huey(phase, target, n)
    if peer == "pgqueuer":
        return asyncio.run(_pgqueuer(phase, target, n))
    if peer == "procrastinate":
        return asyncio.run(_procrastinate(phase, target, n))
    raise ValueError(peer)


# -- the parent ---------------------------------------------------------------------------


def _spawn(peer: str, phase: str, target: str, n: int) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench.sections.peers", peer, phase, target, str(n)],
        cwd=BENCH_DIR.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{peer} {phase} exit {out.returncode}: {out.stderr[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def peer_once(ctx: Ctx, peer: str, n: int) -> dict[str, Any]:
    backend = PEERS[peer][0]
    if backend == "sqlite":
        target = str(ctx.run_dir(f"peer-{peer}") / "huey.db")
        schema = None
    else:
        assert ctx.pg is not None
        schema = ctx.pg._new_schema(peer)
        target = ctx.pg.conninfo(schema)
    try:
        _spawn(peer, "setup", target, n)
        got, wall = _spawn(peer, "drain", target, n)
    finally:
        if schema is not None and ctx.pg is not None:
            ctx.pg.drop(schema)
    out = {"peer": peer, "jobs": n, "wall_s": wall, "jobs_per_s": n / wall, **got}
    if got["done"] != n or got["left"]:
        out["error"] = f"{got['done']} of {n} ran, {got['left']} left"
    return out


def _configs(ctx: Ctx) -> list[str]:
    keys = ["renewald-sqlite", "bare-sqlite-job", "huey"]
    if ctx.pg is not None:
        keys += ["renewald-postgresql-1", "pgqueuer", "procrastinate"]
        keys += ["bare-postgresql-job-1", "bare-postgresql-100-1"]
    return keys


def _one(ctx: Ctx, key: str, ds: DataSet) -> dict[str, Any]:
    if key.startswith("renewald-"):
        backend = key.split("-")[1]
        return drain.drain_once(ctx, backend, 1, ds)
    if key.startswith("bare-"):
        c = next(c for c in limit.configs(ctx) if f"bare-{c['key']}" == key)
        cap = ctx.pick(3_000, 300) if c["batch"] == 1 and c["backend"] == "postgresql" else ds.jobs
        return limit.once(ctx, {**c, "max_jobs": cap}, ds)
    return peer_once(ctx, key, ds.jobs)


def run(ctx: Ctx) -> dict[str, Any]:
    n = ctx.pick(10_000, 1_000)
    ds = DataSet(jobs=n, conversations=n // 2)
    keys = _configs(ctx)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for rep in range(ctx.reps):
        for key in keys:
            try:
                r = _one(ctx, key, ds)
            except Exception as exc:
                r = {"jobs_per_s": None, "error": f"{type(exc).__name__}: {exc}"}
            runs[key].append(r)
            rate = r.get("jobs_per_s")
            say(
                f"peers {key} rep {rep + 1}: "
                + (f"{rate:.0f} jobs/s" if rate else "-")
                + (f" ERROR {r['error']}" if "error" in r else "")
            )
    summary = {
        k: {
            "jobs_per_s": spread([r["jobs_per_s"] for r in rs if r.get("jobs_per_s")]),
            "errors": [r["error"] for r in rs if "error" in r],
        }
        for k, rs in runs.items()
    }
    return {
        "jobs": n,
        "started_ms": now_ms(),
        "versions": _versions(),
        "does_less": {k: v[1] for k, v in PEERS.items()},
        "runs": runs,
        "summary": summary,
        "bare_note": bare.__doc__.splitlines()[0] if bare.__doc__ else "",
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("pgqueuer", "asyncpg", "huey", "procrastinate", "oban"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed (oban 0.7 needs Python >= 3.12)" if name == "oban" else "-"
    return out


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
