"""`python -m bench --profile`: py-spy profiles of the real daemon, summarised as markdown in
bench/results/profiles/<stamp>/: samples per thread, per area (the leaf frame's library),
top functions by self and inclusive time. `-gil` profiles sample only the GIL holder; leaf
frames blocked in C (a lock, a socket, the server) count as waits, apart from busy samples.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, Ctx, say
from bench.db import DataSet, RunDB
from bench.report import table
from bench.sections import iobound

PY_SPY = str(Path(sys.executable).parent / "py-spy")
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")
# (file prefix, leaf functions, what the thread waits on)
_WAITS = (
    ("threading.py", "wait Condition.wait Event.wait Thread.join Thread._wait_for_tstate_lock "
     "Semaphore.acquire", "a lock/queue"),
    ("queue.py", "get Queue.get", "a lock/queue"),
    ("concurrent/futures/thread.py", "_worker", "a lock/queue"),
    ("psycopg/", "Connection.wait wait wait_c wait_epoll wait_select", "PostgreSQL"),
    ("httpcore/_backends/sync.py", "SyncStream.read SyncStream.write", "the network"),
    ("selectors.py", "EpollSelector.select select", "the network"),
    ("socket.py", "socket.accept SocketIO.readinto", "the network"),
    ("subprocess.py", "Popen._wait Popen.wait Popen._try_wait", "a lock/queue"),
)  # fmt: skip
# (file prefixes, area): the first match names a leaf frame's area
_AREAS = (
    (("renewald/",), "renewald"), (("sqlalchemy/",), "sqlalchemy"),
    (("psycopg/", "psycopg_binary/"), "database driver (psycopg)"), (("structlog/",), "structlog"),
    (("json/",), "json"), (("httpx/", "httpcore/", "h11/", "anyio/", "ssl"), "httpx/httpcore/h11"),
    (("apscheduler/", "tzlocal/"), "apscheduler"), (("click/",), "click"),
    (("alembic/", "mako/"), "alembic"), (("threading.py", "queue.py"), "threading/queue"),
    (("<frozen", "importlib"), "imports"),
)  # fmt: skip

_DRIVER_CALLS = {"do_execute", "do_executemany", "do_commit", "do_rollback", "_do_commit"}


def _area(file: str, func: str) -> str:
    if file.startswith("sqlalchemy/") and func.rsplit(".", 1)[-1] in _DRIVER_CALLS:
        return "database driver (C call, reached through SQLAlchemy)"
    return next(
        (a for prefixes, a in _AREAS if file.startswith(prefixes)), f"stdlib: {file.split('/')[0]}"
    )


def _wait(file: str, func: str) -> str | None:
    return next(
        (f"waiting on {w}" for p, fs, w in _WAITS if file.startswith(p) and func in fs.split()),
        None,
    )


def summarise(raw: Path, *, title: str, rate: int, wall_s: float, note: str = "") -> str:
    """A markdown summary of py-spy's raw (collapsed) output."""
    c: dict[str, Counter[str]] = {
        k: Counter() for k in ("threads", "busy", "waits", "self", "incl", "areas")
    }
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():  # not a "stack count" line (seen on PostgreSQL)
            continue
        n, frames = int(count_s), stack.split(";")
        thread = frames.pop(0).split(": ", 1)[-1] if frames[0].startswith("thread (") else "?"
        thread = re.sub(r"(renewald-worker-|ThreadPoolExecutor-|Thread-)[\d_]+.*", r"\1*", thread)
        c["threads"][thread] += n
        parsed = [m.group("func", "file") if (m := _FRAME.match(f)) else (f, "?") for f in frames]
        leaf = parsed[-1] if parsed else ("?", "?")
        if wait := _wait(leaf[1], leaf[0]):
            c["waits"][wait] += n
            continue
        c["busy"][thread] += n
        c["self"][f"{leaf[0]} ({leaf[1]})"] += n
        c["areas"][_area(leaf[1], leaf[0])] += n
        for key in {f"{f} ({fl})" for f, fl in parsed}:
            c["incl"][key] += n
    total, busy = sum(c["threads"].values()), max(sum(c["busy"].values()), 1)
    waits = ", ".join(f"{k} {v:,}" for k, v in c["waits"].most_common())
    L = [f"# Profile: {title}", "", *([note, ""] if note else []),
         f"{total:,} samples at {rate} Hz ({total / rate:.1f} thread-seconds) over {wall_s:.1f} s "
         f"wall; {busy:,} busy, the rest {waits or 'none'}. Shares: of busy samples.",
         ""]  # fmt: skip

    def samples(head: str, rows: list[tuple[str, int]], share: Counter[str] | None = None) -> None:
        of = dict(rows) if share is None else share
        cells = [[k, f"{v:,}", f"{of[k] / busy:.1%}"] for k, v in rows]
        L.extend(table([head, "samples", "share"], cells))

    samples("thread (share: its busy samples)", c["threads"].most_common(12), c["busy"])
    samples("area of the leaf frame", c["areas"].most_common(15))
    samples("function (self time)", [(f"`{k}`", v) for k, v in c["self"].most_common(30)])
    ours = [(f"`{k}`", v) for k, v in c["incl"].most_common() if "(renewald/" in k]
    samples("renewald function (inclusive)", ours[:35])
    return "\n".join(L)


def _record(args: list[str], name: str, db: RunDB, ctx: Ctx, *, gil: bool = False,
            rate: int = 250, **config: Any) -> tuple[Path, float]:  # fmt: skip
    """py-spy's raw profile of `renewald ARGS` (in its run directory) and the seconds it ran."""
    spy = f"record --nonblocking -r {rate} -f raw --threads -o raw.txt" + " --gil" * gil
    proc = ctx.renewald(db, name, args, sample=False, under=[PY_SPY, *spy.split(), "--"], **config)
    if code := proc.wait(timeout=900):
        raise RuntimeError(f"py-spy record exited {code}: {proc.tail()}")
    return proc.console.parent / "raw.txt", (proc.ended or proc.started) - proc.started


def run(ctx: Ctx, stamp: str) -> None:
    out_dir = BENCH_DIR / "results" / "profiles" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    index: list[str] = []

    def save(name: str, raw: Path, wall: float, title: str, gil: bool = False, rate: int = 250,
             note: str = "") -> None:  # fmt: skip
        name, title = name + "-gil" * gil, title + " (GIL holder only)" * gil
        text = summarise(raw, title=title, rate=rate, wall_s=wall, note=note)
        (out_dir / f"{name}.md").write_text(text + "\n")
        index.append(name)
        say(f"profile {name} written")

    n = ctx.pick(20_000, 3_000)
    for backend, gil in (("sqlite", False), ("sqlite", True), ("postgresql", False)):
        if backend in ctx.backends:
            with ctx.dbs.get(backend, DataSet(jobs=n, conversations=n // 2)) as db:
                raw, wall = _record(["run", "--once"], f"prof-drain-{backend}", db, ctx, gil=gil)
                counts = db.status_counts()
            title = f"`run --once`, {n:,} log jobs, {backend}"
            save(f"drain-{backend}", raw, wall, title, gil, note=f"Result {counts}.")

    with iobound.Target() as target:
        ds = target.dataset(ctx.pick(3_200, 640))
        for gil in (False, True):
            with ctx.dbs.get("sqlite", ds) as db:
                raw, wall = _record(iobound.ARGS, "prof-io", db, ctx, gil=gil, **iobound.CONFIG)
            title = f"I/O-bound `{' '.join(iobound.ARGS)}`, {ds.jobs:,} webhook jobs, SQLite"
            save("io-sqlite", raw, wall, title, gil)

    for backend in ctx.backends:
        with (
            ctx.dbs.get(backend, None) as db,
            ctx.daemon(db, f"prof-idle-{backend}", sample=False) as proc,
        ):
            seconds, raw = ctx.pick(30, 8), proc.console.parent / "raw.txt"
            time.sleep(3)
            args = f"record -r 1000 -f raw --threads -o {raw} -d {seconds} --pid {proc.popen.pid}"
            subprocess.run([PY_SPY, *args.split()], check=True, capture_output=True, timeout=99)
        save(f"idle-{backend}", raw, seconds, f"idle `renewald run`, {backend}, {seconds} s",
             rate=1000, note="Attached by pid after start-up.")  # fmt: skip

    (out_dir / "README.md").write_text(
        "# Profiles\n\n" + "".join(f"- [{n}]({n}.md)\n" for n in index)
    )
    say(f"profiles in {out_dir.relative_to(BENCH_DIR.parent)}")
