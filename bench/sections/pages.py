"""Section 7, the status page on 1,000,000 jobs (issue 17): each page rendered by
`StatusApp.route` in this process (store reads, `explain`, Jinja2: all a request costs but
the socket), `reps x 5` times after a warm-up. The target (50 ms) is in bench/report.py.
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.common import Ctx, now_ms, say
from bench.sections.pollcost import dataset, loaded, time_ms
from renewald.clock import SystemClock
from renewald.daemon.listener import Request, Response
from renewald.store import Store
from renewald.store.models import Schedule
from renewald.web.app import Settings, StatusApp


def _schedules(store: Store, now: int) -> None:
    for i in range(5):
        store.add_schedule(schedule=Schedule(
            schedule_id=f"bench-{i}", local_conversation_id=f"conv-{i:07d}",
            trigger_kind="every", every_ms=3_600_000, cron=None, timezone="UTC",
            payload="keepalive", payload_kind="text", target_kind="log",
            target_snapshot=None, max_attempts=3, jitter_ms=0, misfire="coalesce",
            misfire_grace_ms=None, allow_overlap=False, enabled=True,
            next_fire_at=now + 60_000 * i, last_fire_at=None, last_job_id=None,
            created_at=now, updated_at=now,
        ))  # fmt: skip


def _urls(app: StatusApp) -> dict[str, str]:
    """The pages, and the second page of a filtered list (found through the first)."""
    first = _get(app, Request("/jobs", parse_qs("status=done"), {}), "jobs, status=done")
    next_url = first.body.decode().split('id="next-page" href="', 1)[1].split('"', 1)[0]
    return {
        "overview /": "/", "jobs /jobs": "/jobs", "jobs, status=failed": "/jobs?status=failed",
        "jobs, 2nd page of status=done (keyset)": next_url.replace("&amp;", "&"),
        "jobs, conversation filter": "/jobs?conversation=conv-0000042",
        "job /jobs/<id>": "/jobs/done-00000100", "conversations": "/conversations",
        "schedules": "/schedules",
    }  # fmt: skip


def _get(app: StatusApp, request: Request, name: str) -> Response:
    response = app.route(request)
    assert response is not None and response.code == 200, (name, response)
    return response


def _time_pages(url: str, n: int) -> dict[str, Any]:
    store = Store.open(url)
    try:
        settings = Settings(dispatch_statuses=("auto",), stale_after_ms=60_000,
                            log_dir=Path("/nonexistent"))  # fmt: skip
        app = StatusApp(store=store, clock=SystemClock(), settings=settings)
        _schedules(store, now_ms())
        out: dict[str, Any] = {}
        for name, target in _urls(app).items():
            parts = urlsplit(target)
            request = Request(parts.path, parse_qs(parts.query), {})
            timings = time_ms(functools.partial(_get, app, request, name), n + 1)
            out[name] = {"median_ms": round(statistics.median(timings[1:]), 2),
                         "max_ms": round(max(timings[1:]), 2)}  # fmt: skip
            say(f"pages: {name}: median {out[name]['median_ms']} ms")
        return out
    finally:
        store.close()


def run(ctx: Ctx) -> dict[str, Any]:
    ds = dataset(ctx)
    result: dict[str, Any] = {"rows": ds.finished + ds.jobs + ds.future, "n": ctx.reps * 5}
    for backend in ctx.backends:
        db, _ = loaded(ctx, backend, ds, "pages")
        with db:
            result[backend] = _time_pages(db.url, result["n"])
    return result
