"""`python -m bench --profile`: py-spy profiles of the real daemon, summarised as markdown.

Each profile runs `renewald` under `py-spy record --format raw --threads` (collapsed
stacks, thread names as the root frame) and writes a summary to
`bench/results/profiles/<stamp>/<name>.md`: samples per thread, per area (the leaf frame's
library), the top functions by self time and the renewald functions by inclusive time.

py-spy's default mode samples every thread that is not idle: a thread waiting for the GIL
counts as active. `gil` profiles sample only the thread holding the GIL, i.e. where the
process's one core of Python time goes.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import (
    BENCH_DIR,
    RENEWALD,
    now_ms,
    registered,
    renewald_env,
    say,
    spawn,
    wait_until,
)
from bench.context import Ctx
from bench.db import DataSet, empty_db, fresh_db
from bench.sections.iobound import WORKERS, Target

PY_SPY = str(Path(sys.executable).parent / "py-spy")
RATE = 250

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")

# Leaf frames whose self time is really time in a C driver call or a wait.
_DRIVER_LEAVES = {
    "do_execute",
    "do_executemany",
    "do_commit",
    "do_rollback",
    "_do_commit",
    "execute",
    "executemany",
    "commit",
    "fetchall",
    "wait",
    "_wait",
    "wait_epoll",
    "connect",
}


# Leaf frames where a thread waits (blocked in C: a lock, a socket, the server) rather than
# works. py-spy does not always see these as idle, so they are split out here.
_WAITS = (
    (
        "threading.py",
        (
            "wait",
            "Condition.wait",
            "Event.wait",
            "Thread.join",
            "Thread._wait_for_tstate_lock",
            "Semaphore.acquire",
        ),
    ),
    ("queue.py", ("get", "Queue.get")),
    ("concurrent/futures/thread.py", ("_worker",)),
    ("psycopg/connection.py", ("Connection.wait", "wait")),
    ("psycopg/waiting.py", ("wait", "wait_c", "wait_epoll", "wait_select")),
    ("httpcore/_backends/sync.py", ("SyncStream.read", "SyncStream.write")),
    ("selectors.py", ("EpollSelector.select", "select")),
    ("socket.py", ("socket.accept", "SocketIO.readinto")),
    ("subprocess.py", ("Popen._wait", "Popen.wait", "Popen._try_wait")),
)


def _wait_kind(file: str, func: str) -> str | None:
    for prefix, funcs in _WAITS:
        if file.startswith(prefix) and func in funcs:
            if prefix.startswith("psycopg"):
                return "waiting on PostgreSQL"
            if prefix.startswith(("httpcore", "socket", "selectors")):
                return "waiting on the network"
            return "waiting on a lock/queue"
    return None


def _area(file: str, func: str) -> str:
    if file.startswith("renewald/"):
        return "renewald"
    if file.startswith("sqlalchemy/"):
        if func.rsplit(".", 1)[-1] in _DRIVER_LEAVES or "dialects/" in file:
            return "database driver (C call, reached through SQLAlchemy)"
        return "sqlalchemy"
    if file.startswith("psycopg/") or file.startswith("psycopg_binary/"):
        return "database driver (psycopg)"
    if file.startswith(("structlog/",)):
        return "structlog"
    if file.startswith(("json/",)):
        return "json"
    if file.startswith(("httpx/", "httpcore/", "h11/", "anyio/", "ssl")):
        return "httpx/httpcore/h11"
    if file.startswith(("apscheduler/", "tzlocal/")):
        return "apscheduler"
    if file.startswith(("click/",)):
        return "click"
    if file.startswith(("alembic/", "mako/")):
        return "alembic"
    if file.startswith(("threading.py", "queue.py")):
        return "threading/queue"
    if file.startswith("<frozen") or file.startswith("importlib"):
        return "imports"
    return "other (stdlib: " + file.split("/")[0].split(".")[0] + ")"


def _parse_frame(frame: str) -> tuple[str, str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, "?", ""
    return m.group("func"), m.group("file"), m.group("line") or ""


def summarise(raw: Path, *, title: str, rate: int, wall_s: float | None, note: str = "") -> str:
    total = 0
    busy_total = 0
    waits: Counter[str] = Counter()
    thread_busy: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    imports = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith("thread ("):
            thread = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
            frames = frames[1:]
        thread = re.sub(r"renewald-worker-\d+", "renewald-worker-*", thread)
        thread = re.sub(r"ThreadPoolExecutor-\d+_\d+", "ThreadPoolExecutor-*", thread)
        thread = re.sub(r"Thread-\d+.*", "Thread-* (e.g. APScheduler)", thread)
        total += count
        threads[thread] += count
        parsed = [_parse_frame(f) for f in frames]
        wait = _wait_kind(parsed[-1][1], parsed[-1][0]) if parsed else None
        if wait:
            waits[wait] += count
            continue
        busy_total += count
        thread_busy[thread] += count
        if any(fl.startswith("<frozen importlib") for _, fl, _ in parsed):
            imports += count
        if parsed:
            func, file, _ = parsed[-1]
            self_fn[f"{func} ({file})"] += count
            areas[_area(file, func)] += count
        seen = set()
        for func, file, _ in parsed:
            key = f"{func} ({file})"
            if key not in seen:
                seen.add(key)
                incl_fn[key] += count
    L = [f"# Profile: {title}", ""]
    if note:
        L += [note, ""]
    L.append(
        f"{total:,} samples at {rate} Hz ({total / rate:.1f} thread-seconds)"
        + (f" over {wall_s:.1f} s wall" if wall_s else "")
        + f"; {busy_total:,} busy ({busy_total / rate:.1f} thread-seconds), the rest "
        + ", ".join(f"{k} {v:,}" for k, v in waits.most_common())
        + (
            f"; {imports / max(busy_total, 1):.0%} of busy samples inside imports"
            if imports
            else ""
        )
        + ". Shares below are of busy samples."
    )
    L.append("")

    def table(head: list[str], rows: list[list[str]]) -> None:
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "|".join("---" for _ in head) + "|")
        L.extend("| " + " | ".join(r) + " |" for r in rows)
        L.append("")

    def pct(n: int) -> str:
        return f"{n / max(busy_total, 1):.1%}"

    table(
        ["thread", "samples", "busy", "share of busy"],
        [
            [t, f"{n:,}", f"{thread_busy[t]:,}", pct(thread_busy[t])]
            for t, n in threads.most_common(12)
        ],
    )
    table(
        ["area of the leaf frame", "samples", "share"],
        [[a, f"{n:,}", pct(n)] for a, n in areas.most_common(15)],
    )
    table(
        ["function (self time)", "samples", "share"],
        [[f"`{f}`", f"{n:,}", pct(n)] for f, n in self_fn.most_common(30)],
    )
    rn = [(f, n) for f, n in incl_fn.most_common() if "(renewald/" in f][:35]
    table(
        ["renewald function (inclusive)", "samples", "share"],
        [[f"`{f}`", f"{n:,}", pct(n)] for f, n in rn],
    )
    lib = [
        (f, n)
        for f, n in incl_fn.most_common()
        if "(renewald/" not in f
        and "threading.py" not in f
        and "(renewald:" not in f
        and "click/" not in f
    ][:25]
    table(
        ["other function (inclusive)", "samples", "share"],
        [[f"`{f}`", f"{n:,}", pct(n)] for f, n in lib],
    )
    return "\n".join(L)


def _record(
    args: list[str],
    out: Path,
    *,
    env: dict[str, str],
    cwd: Path,
    gil: bool = False,
    rate: int = RATE,
    console: Path,
) -> float:
    cmd = [
        PY_SPY,
        "record",
        "--nonblocking",
        "-r",
        str(rate),
        "-f",
        "raw",
        "--threads",
        "-o",
        str(out),
    ]
    if gil:
        cmd.append("--gil")
    t = time.perf_counter()
    with open(console, "wb") as fh:
        subprocess.run(
            [*cmd, "--", RENEWALD, *args],
            env=env,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=900,
        )
    return time.perf_counter() - t


def run(ctx: Ctx, stamp: str) -> None:
    out_dir = BENCH_DIR / "results" / "profiles" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    index: list[str] = []
    n = ctx.pick(20_000, 3_000)
    ds = DataSet(jobs=n, conversations=n // 2)

    def save(name: str, text: str) -> None:
        (out_dir / f"{name}.md").write_text(text + "\n")
        index.append(name)
        say(f"profile {name} written")

    # 1-3: drains
    for backend, gil in (("sqlite", False), ("sqlite", True), ("postgresql", False)):
        if backend not in ctx.backends:
            continue
        db = fresh_db(backend, ds, now_ms(), ctx.sqlite, ctx.pg)
        run_dir = ctx.run_dir(f"prof-drain-{backend}")
        raw = run_dir / "raw.txt"
        wall = _record(
            ["run", "--once"],
            raw,
            env=renewald_env(db.url, ctx.config(run_dir)),
            cwd=run_dir,
            gil=gil,
            console=run_dir / "console.txt",
        )
        counts = db.status_counts()
        db.discard(ctx.sqlite)
        name = f"drain-{backend}" + ("-gil" if gil else "")
        save(
            name,
            summarise(
                raw,
                title=f"`run --once`, {n:,} log jobs, {backend}"
                + (" (GIL holder only)" if gil else ""),
                rate=RATE,
                wall_s=wall,
                note=f"Data set as section 2; default config; console to a file. Result: {counts}. "
                f"Wall time includes py-spy's own overhead.",
            ),
        )

    # 4: I/O-bound, GIL view
    target = Target()
    try:
        m = ctx.pick(3_200, 640)
        ds_io = DataSet(
            jobs=m,
            conversations=m,
            target_kind="http.webhook",
            target_snapshot=json.dumps({"url": target.url}),
        )
        for gil in (False, True):
            db = fresh_db("sqlite", ds_io, now_ms(), ctx.sqlite, ctx.pg)
            run_dir = ctx.run_dir("prof-io")
            config = ctx.config(
                run_dir,
                daemon={"workers": WORKERS},
                extra='[adapters."http.webhook"]\nmax_in_flight_per_target = 16',
            )
            raw = run_dir / "raw.txt"
            wall = _record(
                ["run", "--once", "--workers", str(WORKERS)],
                raw,
                env=renewald_env(db.url, config),
                cwd=run_dir,
                gil=gil,
                console=run_dir / "console.txt",
            )
            db.discard(ctx.sqlite)
            save(
                "io-sqlite" + ("-gil" if gil else ""),
                summarise(
                    raw,
                    title=f"I/O-bound `run --once --workers 16`, {m:,} webhook jobs, 50 ms "
                    f"target, SQLite" + (" (GIL holder only)" if gil else ""),
                    rate=RATE,
                    wall_s=wall,
                ),
            )
    finally:
        target.stop()

    # 5: start-up, run --once on an empty database
    for backend in ctx.backends:
        db = empty_db(backend, ctx.sqlite, ctx.pg)
        run_dir = ctx.run_dir(f"prof-startup-{backend}")
        env = renewald_env(db.url, ctx.config(run_dir))
        raws = []
        walls = []
        for i in range(ctx.pick(5, 2)):
            raw = run_dir / f"raw-{i}.txt"
            walls.append(
                _record(
                    ["run", "--once"],
                    raw,
                    env=env,
                    cwd=run_dir,
                    rate=1000,
                    console=run_dir / "console.txt",
                )
            )
            raws.append(raw.read_text())
        merged = run_dir / "raw.txt"
        merged.write_text("\n".join(raws))
        db.discard(ctx.sqlite)
        save(
            f"startup-{backend}",
            summarise(
                merged,
                title=f"`run --once` on an empty database, {backend} ({len(walls)} runs merged)",
                rate=1000,
                wall_s=sum(walls),
                note="1000 Hz. Wall time includes py-spy's own start.",
            ),
        )

    # 6: idle daemon, by pid
    for backend in ctx.backends:
        db = empty_db(backend, ctx.sqlite, ctx.pg)
        run_dir = ctx.run_dir(f"prof-idle-{backend}")
        proc = spawn(
            ["run"],
            env=renewald_env(db.url, ctx.config(run_dir)),
            cwd=run_dir,
            console=run_dir / "console.txt",
            sample_rss=False,
        )
        try:
            wait_until(
                functools.partial(registered, db),
                timeout=30,
                what="the daemon to register",
            )
            time.sleep(3)
            seconds = ctx.pick(30, 8)
            raw = run_dir / "raw.txt"
            subprocess.run(
                [
                    PY_SPY,
                    "record",
                    "-r",
                    "1000",
                    "-f",
                    "raw",
                    "--threads",
                    "-o",
                    str(raw),
                    "-d",
                    str(seconds),
                    "--pid",
                    str(proc.pid),
                ],
                check=True,
                capture_output=True,
                timeout=seconds + 60,
            )
        finally:
            proc.stop()
            db.discard(ctx.sqlite)
        save(
            f"idle-{backend}",
            summarise(
                raw,
                title=f"idle `renewald run`, {backend}, {seconds} s",
                rate=1000,
                wall_s=seconds,
                note="1000 Hz, attached by pid after start-up.",
            ),
        )

    (out_dir / "README.md").write_text(
        "# Profiles\n\n" + "\n".join(f"- [{n}]({n}.md)" for n in index) + "\n"
    )
    say(f"profiles in {out_dir.relative_to(BENCH_DIR.parent)}")
