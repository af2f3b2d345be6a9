"""`python -m bench`: every section in one run; see bench/README.md."""

from __future__ import annotations

import argparse
import importlib
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
from bench.common import (
    BENCH_DIR,
    Ctx,
    compile_bytecode,
    loadavg,
    machine_info,
    say,
    stop_started,
)
from bench.db import DEFAULT_PG_URL, DBs

# section -> its module in bench/sections
SECTIONS = {"limit": "limit", "drain": "drain", "peers": "peers", "pickup": "pickup",
            "poll": "pollcost", "io": "iobound", "footprint": "footprint",
            "pages": "pages"}  # fmt: skip


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition (< 2 min)")
    p.add_argument("--reps", type=int, help="repetitions per measurement (default 3, quick 1)")
    p.add_argument("--only", help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    p.add_argument("--pg-url", default=os.environ.get("RENEWALD_BENCH_PG_URL", DEFAULT_PG_URL),
                   help="PostgreSQL (SQLAlchemy URL); the bench makes its own schemas")  # fmt: skip
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument("--markdown", choices=("auto", "yes", "no"), default="auto",
                   help="rewrite bench/results.md (auto: full runs of every section)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the work directory (bench/work/)")
    p.add_argument("--profile", action="store_true", help="run the py-spy profiles instead")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    if unknown := set(only) - set(SECTIONS):
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up as on Ctrl-C
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = (BENCH_DIR / "work" / stamp).resolve()
    work.mkdir(parents=True)
    dbs = DBs(work, None if args.no_pg else args.pg_url)
    ctx = Ctx(quick=args.quick, reps=args.reps or (1 if args.quick else 3), work=work,
              dbs=dbs)  # fmt: skip
    bytecode = compile_bytecode()
    record: dict[str, Any] = {
        "timestamp": stamp, "mode": "quick" if args.quick else "full", "reps": ctx.reps,
        "sections_run": only, "machine": {**machine_info(dbs.admin), "bytecode": bytecode},
        "sections": {}, "timing": {}, "loadavg": {},
    }  # fmt: skip
    started, failed = time.monotonic(), False
    try:
        if args.profile:
            from bench import profile

            profile.run(ctx, stamp)
            return 0
        failed = _run_sections(ctx, only, record)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        failed = record["interrupted"] = True
    finally:
        stop_started()
        dbs.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    record["timing"]["total"] = round(time.monotonic() - started, 1)
    _write(args, record, only, failed)
    return 1 if failed else 0


def _run_sections(ctx: Ctx, only: list[str], record: dict[str, Any]) -> bool:
    failed = False
    for name, module in SECTIONS.items():
        if name not in only:
            continue
        say(f"== {name} (load average {loadavg()})")
        t = time.monotonic()
        section = importlib.import_module(f"bench.sections.{module}")
        try:
            record["sections"][name] = section.run(ctx)
        except Exception as exc:
            failed = True
            record["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"section {name} failed:\n{traceback.format_exc()}")
        record["timing"][name] = round(time.monotonic() - t, 1)
        record["loadavg"][name] = loadavg()
    return failed


def _write(args: argparse.Namespace, record: dict[str, Any], only: list[str], failed: bool) -> None:
    """The JSON record always; results.md for a full run of every section (or --markdown yes)."""
    record["targets"] = report.targets(record)
    json_path = BENCH_DIR / "results" / f"{record['timestamp']}.json"
    json_path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    text = report.markdown(record, json_name=json_path.name)
    full = not args.quick and set(only) == set(SECTIONS) and not failed
    write_md = args.markdown == "yes" or (args.markdown == "auto" and full)
    if write_md:
        report.write_results_md(BENCH_DIR / "results.md", text)
    print(text)
    say(f"done in {record['timing']['total']:.0f}s; {json_path.relative_to(BENCH_DIR.parent)}"
        + ("; bench/results.md rewritten" if write_md else ""))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
