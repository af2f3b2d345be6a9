"""Section 6, footprint: idle CPU and RSS of `renewald run`, and `run --once` start-up.

- Idle: one `renewald run` per backend on an empty (migrated) database, default config
  (poll every 1 s, heartbeat 20 s, rescue 15 s), both started together; after a settle
  time, CPU (user + system, from /proc via psutil) over the window, as % of one core,
  and RSS at its end.
- Start-up: `renewald run --once` on an empty database, spawn to exit (what cron pays),
  beside `python -c pass` and `renewald --version` for scale, and one run under
  `python -X importtime` for where the import time goes.
- RSS while draining: the peak RSS sampled during section 2 (reported there and here).
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from bench.common import (
    RENEWALD,
    importtime_top,
    registered,
    renewald_env,
    say,
    spawn,
    spread,
    wait_until,
)
from bench.context import Ctx
from bench.db import empty_db


def idle_cpu(
    ctx: Ctx, specs: list[tuple[str, str]], *, seconds: float, settle: float
) -> dict[str, Any]:
    """Start one `renewald run` per (label, backend) on an empty database, all at
    once; after `settle`, CPU over `seconds` (as % of one core) and memory at the end."""
    dbs = {label: empty_db(backend, ctx.sqlite, ctx.pg) for label, backend in specs}
    procs = {}
    try:
        for label, _backend in specs:
            run_dir = ctx.run_dir(f"idle-{label}")
            procs[label] = spawn(
                ["run"],
                env=renewald_env(dbs[label].url, ctx.config(run_dir)),
                cwd=run_dir,
                console=run_dir / "console.txt",
                sample_rss=False,
            )
        for label, db in dbs.items():
            wait_until(
                functools.partial(registered, db),
                timeout=30,
                what=f"the {label} daemon to register",
            )
        time.sleep(settle)
        ps = {b: psutil.Process(p.pid) for b, p in procs.items()}
        before = {b: p.cpu_times() for b, p in ps.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        out = {}
        for b, p in ps.items():
            after = p.cpu_times()
            cpu = (after.user - before[b].user) + (after.system - before[b].system)
            mem = p.memory_full_info()
            out[b] = {
                "window_s": elapsed,
                "cpu_s": cpu,
                "cpu_pct_of_core": cpu / elapsed * 100,
                "rss_mb": mem.rss / 2**20,
                "uss_mb": mem.uss / 2**20,
                "threads": p.num_threads(),
            }
            say(
                f"idle {b}: {out[b]['cpu_pct_of_core']:.2f}% of a core over {elapsed:.0f}s, "
                f"RSS {out[b]['rss_mb']:.1f} MB, {out[b]['threads']} threads"
            )
        for b, p in procs.items():
            out[b]["exit_code"] = p.stop()
        return out
    finally:
        for p in procs.values():
            if p.popen.poll() is None:
                p.stop()
        for db in dbs.values():
            db.discard(ctx.sqlite)


def _idle(ctx: Ctx) -> dict[str, Any]:
    return idle_cpu(
        ctx,
        [(b, b) for b in ctx.backends],
        seconds=ctx.pick(60.0, 5.0),
        settle=ctx.pick(5.0, 2.0),
    )


def _timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Any = None) -> tuple[float, Any]:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - t, out


def _startup(ctx: Ctx) -> dict[str, Any]:
    reps = ctx.pick(5, 2)
    out: dict[str, Any] = {}
    out["python_c_pass_s"] = spread(
        [_timed([sys.executable, "-c", "pass"])[0] for _ in range(reps)]
    )
    out["renewald_version_s"] = spread([_timed([RENEWALD, "--version"])[0] for _ in range(reps)])
    for backend in ctx.backends:
        db = empty_db(backend, ctx.sqlite, ctx.pg)
        run_dir = ctx.run_dir(f"startup-{backend}")
        env = renewald_env(db.url, ctx.config(run_dir))
        try:
            walls = []
            for _ in range(reps):
                wall, res = _timed([RENEWALD, "run", "--once"], env=env, cwd=run_dir)
                if res.returncode != 0:
                    raise RuntimeError(f"run --once exited {res.returncode}: {res.stderr[-500:]}")
                walls.append(wall)
            out[f"run_once_empty_{backend}_s"] = spread(walls)
            say(
                f"start-up {backend}: run --once on an empty database "
                f"{statistics.median(walls):.2f}s"
            )
            if backend == "sqlite":
                _, res = _timed(
                    [sys.executable, "-X", "importtime", RENEWALD, "run", "--once"],
                    env=env,
                    cwd=run_dir,
                )
                out["importtime_top"] = importtime_top(res.stderr)
        finally:
            db.discard(ctx.sqlite)
    return out


def run(ctx: Ctx, drain: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"idle": _idle(ctx), "startup": _startup(ctx)}
    if drain:
        out["rss_draining_mb"] = {
            key: s["rss_peak_mb"] for key, s in drain.get("summary", {}).items()
        }
    return out
