"""Before/after drain throughput of two checkouts, interleaved in one run (issue 12).

    python -m bench.lease_cost --before ../wt-before --after . --pairs 6 [--quick]

Each checkout needs its own venv (`.venv`, installed with `.[test,bench]`). Every step runs
the drain section of that checkout's own harness, unchanged, as a separate process:
`<checkout>/.venv/bin/python -m bench --only drain --reps 1 --markdown no [--quick]`, in the
order A B B A A B … (so a drift of the shared machine's speed falls on both sides alike).
Each step's raw record (`bench/results/<stamp>.json` of its checkout) is copied to
`bench/results/lease-cost/<run>/`, with `summary.json`: per configuration, the median
jobs/s of each side, the median of the per-pair ratios after/before, and the extra ms per
job (1000/after - 1000/before, from the medians), and the daemons' CPU ms per job.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
KEYS = ("sqlite-1", "sqlite-1-quiet", "postgresql-1", "postgresql-3")


def _step(checkout: Path, quick: bool, log: Path, no_pg: bool = False) -> Path:
    cmd = [str(checkout / ".venv/bin/python"), "-m", "bench", "--only", "drain", "--reps", "1"]
    cmd += ["--markdown", "no"] + (["--quick"] if quick else []) + (["--no-pg"] if no_pg else [])
    with log.open("a") as out:
        out.write(f"\n### {checkout}: {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(
            cmd,
            cwd=checkout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
            check=False,
        )
        out.write(proc.stderr)
    m = re.search(r"record (bench/results/\S+\.json)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"step failed in {checkout} (exit {proc.returncode}); see {log}")
    return checkout / m.group(1)


FIELDS = ("jobs_per_s", "steady_jobs_per_s", "cpu_ms_per_job")


def _rates(record: dict, field: str) -> dict[str, float]:
    runs = record["sections"]["drain"]["runs"]
    if field == "cpu_ms_per_job":  # daemon CPU (user + sys, all daemons) per job
        return {k: sum(rs[0]["cpu_s"]) * 1000 / rs[0]["jobs"] for k, rs in runs.items() if rs}
    return {k: rs[0][field] for k, rs in runs.items() if rs and rs[0].get(field)}


def summarize(steps: list[dict]) -> dict:
    out: dict = {}
    for field in FIELDS:
        per_key: dict = {}
        for key in KEYS:
            before = [s["rates"][field].get(key) for s in steps if s["side"] == "before"]
            after = [s["rates"][field].get(key) for s in steps if s["side"] == "after"]
            pairs = [(b, a) for b, a in zip(before, after, strict=False) if a and b]
            if not pairs:
                continue
            mb = statistics.median(b for b, _ in pairs)
            ma = statistics.median(a for _, a in pairs)
            ratios = sorted(a / b for b, a in pairs)
            per_key[key] = {
                "before_median": mb,
                "before_range": [min(b for b, _ in pairs), max(b for b, _ in pairs)],
                "after_median": ma,
                "after_range": [min(a for _, a in pairs), max(a for _, a in pairs)],
                "ratio_of_medians": ma / mb,
                "pair_ratio_median": statistics.median(ratios),
                "pair_ratios": ratios,
                "extra_ms_per_job": (
                    ma - mb if field == "cpu_ms_per_job" else 1000 / ma - 1000 / mb
                ),
                "pairs": len(pairs),
            }
        out[field] = per_key
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lease_cost", description=__doc__)
    p.add_argument("--before", type=Path)
    p.add_argument("--after", type=Path, default=BENCH_DIR.parent)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--quick", action="store_true", help="the drain's quick size (2,000 jobs)")
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    p.add_argument("--resummarize", type=Path, help="recompute DIR/summary.json from its records")
    args = p.parse_args()
    if args.resummarize:
        path = args.resummarize / "summary.json"
        if path.exists():
            summary = json.loads(path.read_text())
        else:  # a run stopped early: its steps from the records' names (NN-side-stamp.json)
            names = sorted(f.name for f in args.resummarize.glob("[0-9][0-9]-*.json"))
            order = [n.split("-")[1] for n in names]
            summary = {
                "timestamp": args.resummarize.name,
                "stopped_early": True,
                "pairs": len(names) // 2,
                "order": order,
                "steps": [{"side": sd, "record": n} for sd, n in zip(order, names, strict=True)],
            }
        for step in summary["steps"]:
            record = json.loads((args.resummarize / step["record"]).read_text())
            step["rates"] = {f: _rates(record, f) for f in FIELDS}
            step["loadavg"] = record["loadavg"].get("drain")
        summary["summary"] = summarize(summary["steps"])
        path.write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary["summary"], indent=1))
        return 0
    if args.before is None:
        p.error("--before is required")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = BENCH_DIR / "results" / "lease-cost" / stamp
    dest.mkdir(parents=True)
    log = dest / "log.txt"
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    commits = {
        side: subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=path,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        for side, path in sides.items()
    }
    steps: list[dict] = []
    order = []
    for i in range(args.pairs):  # A B, B A, A B, ...
        order += ["before", "after"] if i % 2 == 0 else ["after", "before"]
    started = time.monotonic()
    for n, side in enumerate(order):
        rec_path = _step(sides[side], args.quick, log, args.no_pg)
        name = f"{n:02d}-{side}-{rec_path.name}"
        shutil.copy(rec_path, dest / name)
        rec_path.unlink()  # it lives on in dest only
        record = json.loads((dest / name).read_text())
        rates = {f: _rates(record, f) for f in FIELDS}
        steps.append(
            {
                "side": side,
                "record": name,
                "rates": rates,
                "loadavg": record["loadavg"].get("drain"),
            }
        )
        print(
            f"[lease-cost] {n + 1}/{len(order)} {side}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in rates["jobs_per_s"].items()),
            file=sys.stderr,
            flush=True,
        )
    summary = {
        "timestamp": stamp,
        "quick": args.quick,
        "pairs": args.pairs,
        "order": order,
        "commits": commits,
        "seconds": round(time.monotonic() - started, 1),
        "steps": steps,
        "summary": summarize(steps),
    }
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
