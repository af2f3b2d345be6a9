"""A peer queue draining no-op jobs, the child process of the `peers` section.

`python -m bench.peer PEER PHASE TARGET N`: PHASE `setup` enqueues N jobs, `drain` runs
them to the end; TARGET is a SQLite path (huey) or a libpq conninfo whose `search_path`
is the bench's own schema (pgqueuer, procrastinate). Prints `{"done": …, "left": …}`.
Imports only the peer: its start-up is timed (bench/sections/peers.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

DONE = [0]


def _noop() -> None:
    DONE[0] += 1


def _huey(phase: str, path: str, n: int) -> dict[str, Any]:
    from huey import SqliteHuey  # type: ignore[import-untyped]
    from huey.consumer import Consumer  # type: ignore[import-untyped]

    huey = SqliteHuey("bench", filename=path)
    task = huey.task()(_noop)
    if phase == "setup":
        for _ in range(n):
            task()
    else:
        consumer = Consumer(huey, workers=1, worker_type="thread", periodic=False)
        consumer.start()
        while DONE[0] < n:
            time.sleep(0.002)
        consumer.stop(graceful=True)
    return {"done": DONE[0], "left": huey.pending_count()}


async def _pgqueuer(phase: str, conninfo: str, n: int) -> dict[str, Any]:
    import asyncpg  # type: ignore[import-untyped]
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(conninfo)  # asyncpg reads URLs
    dsn = f"postgresql://{d.get('user')}@{d.get('host')}:{d.get('port', 5432)}/{d.get('dbname')}"
    settings = {"search_path": str(d.get("options", "")).split("search_path=")[-1]}
    conn = await asyncpg.connect(dsn, server_settings=settings)
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
    other = await asyncpg.connect(dsn, server_settings=settings)
    left = await other.fetchval("SELECT count(*) FROM pgqueuer")
    await other.close()
    return {"done": DONE[0], "left": left}


async def _procrastinate(phase: str, conninfo: str, n: int) -> dict[str, Any]:
    import procrastinate
    import psycopg

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
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            sql = "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
            (left,) = await (await conn.execute(sql)).fetchone() or (None,)
    return {"done": DONE[0], "left": left}


def child(peer: str, phase: str, target: str, n: int) -> dict[str, Any]:
    if peer == "huey":
        return _huey(phase, target, n)
    run = {"pgqueuer": _pgqueuer, "procrastinate": _procrastinate}[peer]
    return asyncio.run(run(phase, target, n))


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
