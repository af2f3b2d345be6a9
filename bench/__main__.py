"""`python -m bench`: every section in one run; see bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from bench import report
from bench.common import BENCH_DIR, loadavg, machine_info, say, stop_started
from bench.context import Ctx
from bench.db import DEFAULT_PG_URL, PgDBs, SqliteDBs

SECTIONS = ("limit", "drain", "peers", "pickup", "poll", "io", "footprint", "pages")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition (< 2 min)")
    p.add_argument("--reps", type=int, help="repetitions per measurement (default 3, quick 1)")
    p.add_argument(
        "--only",
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("RENEWALD_BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL database (SQLAlchemy URL); the bench works in schemas of its own",
    )
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument(
        "--markdown",
        choices=("auto", "yes", "no"),
        default="auto",
        help="rewrite bench/results.md (auto: full runs of every section only)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (bench/work/)")
    p.add_argument("--profile", action="store_true", help="run the py-spy profiles instead")
    return p.parse_args(argv)


def _terminate(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = (BENCH_DIR / "work" / stamp).resolve()
    work.mkdir(parents=True)
    pg = None if args.no_pg else PgDBs(args.pg_url)
    ctx = Ctx(
        quick=args.quick,
        reps=args.reps or (1 if args.quick else 3),
        work=work,
        sqlite=SqliteDBs(work),
        pg=pg,
    )
    if args.profile:
        from bench import profile

        try:
            profile.run(ctx, stamp)
        finally:
            stop_started()
            if pg is not None:
                pg.close()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        return 0

    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    record: dict[str, Any] = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "reps": ctx.reps,
        "sections_run": only,
        "machine": machine_info(pg.base_conninfo if pg else None),
        "sections": {},
        "timing": {},
        "loadavg": {},
    }
    started = time.monotonic()
    failed = False
    try:
        for name in SECTIONS:
            if name not in only:
                continue
            say(f"== {name} (load average {loadavg()})")
            t = time.monotonic()
            try:
                record["sections"][name] = _run_section(name, ctx, record)
            except Exception as exc:
                failed = True
                record["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"section {name} failed:\n{traceback.format_exc()}")
            record["timing"][name] = round(time.monotonic() - t, 1)
            record["loadavg"][name] = loadavg()
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        failed = True
        record["interrupted"] = True
    finally:
        stop_started()
        if pg is not None:
            pg.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    record["timing"]["total"] = round(time.monotonic() - started, 1)
    record["targets"] = report.targets(record)

    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(record, indent=1, sort_keys=False, default=str) + "\n")
    text = report.markdown(record, json_name=json_path.name)
    write_md = args.markdown == "yes" or (
        args.markdown == "auto" and not args.quick and set(only) == set(SECTIONS) and not failed
    )
    if write_md:
        report.write_results_md(BENCH_DIR / "results.md", text)
    print(text)
    say(
        f"done in {record['timing']['total']:.0f}s; record "
        f"{json_path.relative_to(BENCH_DIR.parent)}"
        + ("; bench/results.md rewritten" if write_md else "")
    )
    return 1 if failed else 0


def _run_section(name: str, ctx: Ctx, record: dict[str, Any]) -> dict[str, Any]:
    from bench.sections import drain, footprint, iobound, limit, pages, peers, pickup, pollcost

    if name == "limit":
        return limit.run(ctx)
    if name == "drain":
        return drain.run(ctx)
    if name == "peers":
        return peers.run(ctx)
    if name == "pickup":
        return pickup.run(ctx)
    if name == "poll":
        return pollcost.run(ctx)
    if name == "io":
        return iobound.run(ctx)
    if name == "footprint":
        return footprint.run(ctx, record["sections"].get("drain"))
    if name == "pages":
        return pages.run(ctx)
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
