"""Where a drain's time goes, for the renewald of the venv that runs this (issue 12).

    <checkout>/.venv/bin/python -m bench.lease_profile --label before|after --out DIR [--jobs N]

Run from this checkout (so `bench` is this one) with the interpreter of the checkout to
profile: its `renewald` (next to that interpreter) drains the section-2 data set, migrated
by its own code. Per backend (SQLite; PostgreSQL, 1 daemon): one drain under
`bench.sqltime` (store methods, SQL statements and commits timed, in DIR/sqltime-*.json)
and one under py-spy (`--gil`, summarised by bench/profile.py in DIR/pyspy-*.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BENCH_DIR, now_ms, renewald_env, say, stop_started
from bench.context import Ctx
from bench.db import DEFAULT_PG_URL, DataSet, PgDBs, SqliteDBs, fresh_db
from bench.profile import RATE, _record, summarise


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lease_profile")
    p.add_argument("--label", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--no-pyspy", action="store_true")
    p.add_argument("--pg-url", default=os.environ.get("RENEWALD_BENCH_PG_URL", DEFAULT_PG_URL))
    args = p.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = (BENCH_DIR / "work" / f"{stamp}-{args.label}").resolve()
    work.mkdir(parents=True)
    pg = PgDBs(args.pg_url)
    ctx = Ctx(quick=False, reps=1, work=work, sqlite=SqliteDBs(work), pg=pg)
    ds = DataSet(jobs=args.jobs, conversations=args.jobs // 2)
    try:
        for backend in ("sqlite", "postgresql"):
            # 1. statement and store-method timers
            db = fresh_db(backend, ds, now_ms(), ctx.sqlite, ctx.pg)
            run_dir = ctx.run_dir(f"sqltime-{backend}")
            out = args.out / f"sqltime-{args.label}-{backend}.json"
            env = dict(renewald_env(db.url, ctx.config(run_dir)), PYTHONPATH=str(BENCH_DIR.parent))
            t = time.perf_counter()
            with open(run_dir / "console.txt", "wb") as fh:
                code = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.sqltime",
                        "--out",
                        str(out),
                        "--",
                        "run",
                        "--once",
                    ],
                    env=env,
                    cwd=run_dir,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=900,
                    check=False,
                ).returncode
            wall_s = time.perf_counter() - t
            counts = db.status_counts()
            db.discard(ctx.sqlite)
            data = json.loads(out.read_text())
            data.update(
                label=args.label,
                backend=backend,
                jobs=ds.jobs,
                exit_code=code,
                status_counts=counts,
                process_wall_s=wall_s,
            )
            out.write_text(json.dumps(data, indent=1) + "\n")
            say(f"{args.label} {backend}: sqltime {ds.jobs / wall_s:.0f} jobs/s, {counts}")
            if args.no_pyspy:
                continue
            # 2. py-spy, GIL holder only: where the process's Python time goes
            db = fresh_db(backend, ds, now_ms(), ctx.sqlite, ctx.pg)
            run_dir = ctx.run_dir(f"pyspy-{backend}")
            raw = run_dir / "raw.txt"
            wall = _record(
                ["run", "--once"],
                raw,
                env=renewald_env(db.url, ctx.config(run_dir)),
                cwd=run_dir,
                gil=True,
                console=run_dir / "console.txt",
            )
            counts = db.status_counts()
            db.discard(ctx.sqlite)
            text = summarise(
                raw,
                title=f"{args.label}: `run --once`, {ds.jobs:,} log jobs, "
                f"{backend} (GIL holder only)",
                rate=RATE,
                wall_s=wall,
                note=f"Result: {counts}. Wall time includes py-spy's overhead.",
            )
            (args.out / f"pyspy-{args.label}-{backend}.md").write_text(text + "\n")
            shutil.copy(raw, args.out / f"pyspy-{args.label}-{backend}.raw.txt")  # gzipped by hand
            say(f"{args.label} {backend}: py-spy {ds.jobs / wall:.0f} jobs/s")
    finally:
        stop_started()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
