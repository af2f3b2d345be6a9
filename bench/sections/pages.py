"""The status page at scale: each page's server time on 1,000,000 jobs (issue 17).

Rows: the poll section's data set (990,000 done/failed, 9,000 pending and due, 1,000
pending in an hour; 10,000 conversations), bulk-loaded (executemany in one transaction on
SQLite, COPY on PostgreSQL), plus a handful of schedules. Each page is rendered by
`StatusApp.route` in this process (the store reads, `explain`, the Jinja2 render: all a
request costs but the socket), `reps x 5` times after one warm-up; the median is recorded.
The target is 50 ms a page. The result goes to bench/results.md under "Status page".
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.common import BENCH_DIR, machine_info, now_ms, say
from bench.context import Ctx
from bench.db import DataSet
from renewald.clock import SystemClock
from renewald.daemon.listener import Request
from renewald.store import Store
from renewald.store.models import Schedule
from renewald.web.app import Settings, StatusApp

TARGET_MS = 50.0
HEADING = "## Status page (1,000,000 jobs)"


def dataset(ctx: Ctx) -> DataSet:
    finished = ctx.pick(990_000, 90_000)
    return DataSet(jobs=9_000, conversations=10_000, finished=finished, future=1_000)


def _schedules(store: Store, now: int) -> None:
    for i in range(5):
        store.add_schedule(
            schedule=Schedule(
                schedule_id=f"bench-{i}", local_conversation_id=f"conv-{i:07d}",
                trigger_kind="every", every_ms=3_600_000, cron=None, timezone="UTC",
                payload="keepalive", payload_kind="text", target_kind="log",
                target_snapshot=None, max_attempts=3, jitter_ms=0, misfire="coalesce",
                misfire_grace_ms=None, allow_overlap=False, enabled=True,
                next_fire_at=now + 60_000 * i, last_fire_at=None, last_job_id=None,
                created_at=now, updated_at=now,
            )
        )  # fmt: skip


def _urls(app: StatusApp) -> dict[str, str]:
    """The pages, and the second page of a filtered list (found through the first)."""
    first = app.route(Request("/jobs", parse_qs("status=done"), {}))
    assert first is not None and first.code == 200
    body = first.body.decode()
    next_url = body.split('id="next-page" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return {
        "overview /": "/",
        "jobs /jobs": "/jobs",
        "jobs, status=failed": "/jobs?status=failed",
        "jobs, 2nd page of status=done (keyset)": next_url,
        "jobs, conversation filter": "/jobs?conversation=conv-0000042",
        "job /jobs/<id>": "/jobs/done-00000100",
        "conversations": "/conversations",
        "schedules": "/schedules",
    }


def _time_pages(url: str, n: int) -> dict[str, Any]:
    store = Store.open(url)
    try:
        settings = Settings(
            dispatch_statuses=("auto",), stale_after_ms=60_000, log_dir=Path("/nonexistent")
        )
        app = StatusApp(store=store, clock=SystemClock(), settings=settings)
        _schedules(store, now_ms())
        out: dict[str, Any] = {}
        for name, target in _urls(app).items():
            parts = urlsplit(target)
            request = Request(parts.path, parse_qs(parts.query), {})
            timings = []
            for i in range(n + 1):
                t = time.perf_counter()
                response = app.route(request)
                ms = (time.perf_counter() - t) * 1000
                assert response is not None and response.code == 200, (name, response)
                if i:
                    timings.append(ms)
            out[name] = {
                "median_ms": round(statistics.median(timings), 2),
                "max_ms": round(max(timings), 2),
            }
            say(f"pages: {name}: median {out[name]['median_ms']} ms")
        return out
    finally:
        store.close()


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    n = ctx.reps * 5
    rows = ds.finished + ds.jobs + ds.future
    result: dict[str, Any] = {"rows": rows, "n": n, "backends": {}}
    t = time.perf_counter()
    path = ctx.sqlite.loaded(ds, now_ms())
    say(f"pages: SQLite file with {rows:,} rows in {time.perf_counter() - t:.1f}s")
    try:
        result["backends"]["sqlite"] = _time_pages(ctx.sqlite.url(path), n)
    finally:
        ctx.sqlite.discard(path)
    if ctx.pg is not None:
        t = time.perf_counter()
        schema = ctx.pg.loaded(ds, now_ms(), analyze=True)
        say(f"pages: PostgreSQL schema with {rows:,} rows in {time.perf_counter() - t:.1f}s")
        try:
            result["backends"]["postgresql"] = _time_pages(ctx.pg.url(schema), n)
        finally:
            ctx.pg.drop(schema)
    if not ctx.quick:
        write_results(BENCH_DIR / "results.md", markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    backends = list(result["backends"])
    machine = machine_info(None)
    lines = [
        HEADING,
        "",
        f"`python -m bench --only pages` on {result['rows']:,} rows; server time of one "
        f"request (`StatusApp.route`: store reads, `explain`, Jinja2 render), median of "
        f"{result['n']} after a warm-up. Target: each page <= {TARGET_MS:g} ms. "
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs. "
        "See bench/sections/pages.py.",
        "",
        "Plans (EXPLAIN on both backends): the jobs pages walk `idx_renewal_jobs_created` or "
        "`idx_renewal_jobs_status_created` (migration 0005) backwards from the keyset cursor; "
        "the overview's counts are index ranges that stop after 10,000 rows (due: 1,000). "
        "On PostgreSQL the status is written into the counts' SQL: psycopg prepares a "
        "statement after five runs, and the generic plan for `status = $1` could not use "
        "the partial index of running jobs and scanned the table (overview 690 ms before). "
        "PostgreSQL is measured after ANALYZE without VACUUM, so index-only scans still "
        "visit the heap; autovacuum would make the counts cheaper.",
        "",
        "| page | " + " | ".join(f"{b} median (max) ms" for b in backends) + " | target met |",
        "|---|" + "---|" * len(backends) + "---|",
    ]
    names = list(result["backends"][backends[0]])
    for name in names:
        cells = [result["backends"][b][name] for b in backends]
        met = all(c["median_ms"] <= TARGET_MS for c in cells)
        shown = " | ".join(f"{c['median_ms']} ({c['max_ms']})" for c in cells)
        lines.append(f"| {name} | {shown} | {'yes' if met else 'NO'} |")
    return "\n".join(lines) + "\n"


def write_results(path: Path, block: str) -> None:
    """Put `block` under its heading in results.md (in the hand-written part, which the
    full bench keeps), replacing the previous one."""
    text = path.read_text() if path.exists() else ""
    if HEADING in text:
        before, rest = text.split(HEADING, 1)
        after = rest.split("\n## ", 1)
        tail = "\n## " + after[1] if len(after) > 1 else ""
        text = before + block + tail
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)
