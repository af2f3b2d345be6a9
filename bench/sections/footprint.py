"""Section 6, footprint: idle CPU and RSS of `renewald run` (one per backend, empty database,
after a settle time), `run --once` start-up on an empty database (spawn to exit, beside
`python -c pass` and `renewald --version`, and one `-X importtime` run); peak RSS: section 2's.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

from bench.common import RENEWALD, Ctx, importtime_top, renewald_env, say, spread


def _idle(ctx: Ctx) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        dbs = {b: stack.enter_context(ctx.dbs.get(b, None)) for b in ctx.backends}
        procs = {
            b: stack.enter_context(ctx.daemon(db, f"idle-{b}", sample=False))
            for b, db in dbs.items()
        }
        time.sleep(ctx.pick(5.0, 2.0))
        ps = {b: psutil.Process(p.popen.pid) for b, p in procs.items()}
        before = {b: p.cpu_times() for b, p in ps.items()}
        t0 = time.monotonic()
        time.sleep(ctx.pick(60.0, 5.0))
        elapsed = time.monotonic() - t0
        out = {}
        for b, p in ps.items():
            cpu = sum(p.cpu_times()[:2]) - sum(before[b][:2])
            mem = p.memory_full_info()
            out[b] = {"window_s": elapsed, "cpu_pct_of_core": cpu / elapsed * 100,
                      "rss_mb": mem.rss / 2**20, "uss_mb": mem.uss / 2**20,
                      "threads": p.num_threads()}  # fmt: skip
            say(f"idle {b}: {out[b]['cpu_pct_of_core']:.2f}% of a core, {out[b]['rss_mb']:.1f} MB")
        return out


def _timed(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - t, out


def _startup(ctx: Ctx) -> dict[str, Any]:
    reps = ctx.pick(5, 2)
    out: dict[str, Any] = {
        "python_c_pass_s": spread(_timed([sys.executable, "-c", "pass"])[0] for _ in range(reps)),
        "renewald_version_s": spread(_timed([RENEWALD, "--version"])[0] for _ in range(reps)),
    }
    for backend in ctx.backends:
        with ctx.dbs.get(backend, None) as db:
            env = renewald_env(db.url, ctx.config(ctx.run_dir(f"startup-{backend}")))
            walls = []
            for _ in range(reps):
                wall, res = _timed([RENEWALD, "run", "--once"], env)
                if res.returncode:
                    raise RuntimeError(f"run --once exited {res.returncode}: {res.stderr[-500:]}")
                walls.append(wall)
            out[f"run_once_empty_{backend}_s"] = spread(walls)
            say(f"start-up {backend}: run --once, empty database, {statistics.median(walls):.3f}s")
            _, res = _timed([sys.executable, "-X", "importtime", RENEWALD, "run", "--once"], env)
            out[f"importtime_top_{backend}"] = importtime_top(res.stderr)
    return out


def run(ctx: Ctx) -> dict[str, Any]:
    return {"idle": _idle(ctx), "startup": _startup(ctx)}
