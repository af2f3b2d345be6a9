"""The status pages against a real store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from renewald.daemon.listener import Request, Response
from renewald.store import JobFilter, Store
from renewald.store.schema import renewal_jobs
from renewald.web.app import Settings, StatusApp
from renewald.web.server import guarded
from tests.clock import ManualClock
from tests.store.factories import T0, make_conversation, make_job

CANARY = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'


@pytest.fixture
def app(store: Store, tmp_path: Path) -> StatusApp:
    settings = Settings(dispatch_statuses=("auto",), stale_after_ms=60_000, log_dir=tmp_path)
    return StatusApp(store=store, clock=ManualClock(T0 + 1000), settings=settings)


def get(app: StatusApp, url: str, headers: dict[str, str] | None = None) -> Response:
    parts = urlsplit(url)
    response = app.route(Request(parts.path, parse_qs(parts.query), headers or {}))
    assert response is not None
    return response


def text(response: Response) -> str:
    return response.body.decode()


def fail(store: Store, job_id: str, error: str) -> None:
    store.write(
        lambda conn: conn.execute(
            update(renewal_jobs)
            .where(renewal_jobs.c.job_id == job_id)
            .values(status="failed", terminal_reason="permanent", last_error=error, finished_at=T0)
        )
    )


def test_every_page_renders_and_escapes_stored_text(app: StatusApp, store: Store) -> None:
    make_conversation(store, "conv-a", title=CANARY)
    job = make_job(store, conversation="conv-a", payload=CANARY)
    fail(store, job.job_id, f"boom {CANARY} Authorization: Bearer s3cr3t-token-value")
    for url in ("/", "/jobs", f"/jobs/{job.job_id}", "/conversations", "/schedules"):
        response = get(app, url)
        assert response.code == 200, url
        assert "<script>window.__pwned" not in text(response), url
        assert "<img" not in text(response), url
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    detail = text(get(app, f"/jobs/{job.job_id}"))
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in detail
    assert "s3cr3t-token-value" not in detail
    assert "finished: " in detail  # the `show` explanation


def test_overview_counts_due_and_failures(app: StatusApp, store: Store) -> None:
    make_conversation(store, "conv-a")
    make_job(store, conversation="conv-a")
    failed = make_job(store, conversation="conv-a")
    fail(store, failed.job_id, "gone")
    page = text(get(app, "/"))
    assert 'id="count-pending">1<' in page
    assert 'id="count-failed">1<' in page
    assert 'id="count-due">1<' in page
    assert f"/jobs/{failed.job_id}" in page


def test_jobs_page_filters_and_keyset_pages(app: StatusApp, store: Store) -> None:
    make_conversation(store, "conv-a")
    ids = [make_job(store, conversation="conv-a", now=T0 - i).job_id for i in range(120)]
    first = text(get(app, "/jobs?status=pending"))
    assert ids[0] in first and ids[49] in first and ids[50] not in first
    next_url = first.split('id="next-page" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "status=pending" in next_url and "offset" not in next_url
    second = text(get(app, next_url))
    assert ids[50] in second and ids[99] in second and ids[49] not in second
    assert text(get(app, "/jobs?status=done")).count("/jobs/job-") == 0
    assert get(app, "/jobs?status=bogus").code == 400
    assert get(app, "/jobs?after=nonsense").code == 400
    assert get(app, "/jobs/no-such-job").code == 404


def test_job_page_shows_its_log_lines(app: StatusApp, store: Store, tmp_path: Path) -> None:
    job = make_job(store)
    day = tmp_path / "2027-01-15.jsonl"
    lines = [
        {"ts": "2027-01-15T08:00:00.000Z", "event": "job.delivered", "job_id": job.job_id},
        {"ts": "2027-01-15T08:00:00.000Z", "event": "job.delivered", "job_id": "other"},
    ]
    day.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    page = text(get(app, f"/jobs/{job.job_id}"))
    assert "job.delivered" in page and "other" not in page.split('id="log-lines"')[1]


def test_conversations_and_schedules(app: StatusApp, store: Store) -> None:
    make_conversation(store, "conv-a", status="paused")
    make_job(store, conversation="conv-a", next_attempt_at=T0 + 60_000)
    page = text(get(app, "/conversations"))
    assert "conv-a" in page and "paused" in page
    assert "No schedules." in text(get(app, "/schedules"))


def test_the_token_guard(app: StatusApp) -> None:
    def ask(route, url, headers=None):  # type: ignore[no-untyped-def]
        parts = urlsplit(url)
        return route(Request(parts.path, parse_qs(parts.query), headers or {}))

    open_route = guarded(app, token="", loopback=True)
    assert ask(open_route, "/").code == 200
    assert ask(open_route, "/metrics") is None  # left to the next route
    refused = guarded(app, token="", loopback=False)
    assert ask(refused, "/").code == 403
    route = guarded(app, token="t0ken", loopback=False)
    assert ask(route, "/jobs").code == 401
    assert ask(route, "/jobs", {"authorization": "Bearer wrong"}).code == 401
    assert ask(route, "/jobs", {"authorization": "Bearer t0ken"}).code == 200
    redirect = ask(route, "/jobs?token=t0ken&status=done")
    assert redirect.code == 303 and redirect.headers["Location"] == "/jobs?status=done"
    assert "HttpOnly" in redirect.headers["Set-Cookie"]
    assert ask(route, "/jobs", {"cookie": "renewald_token=t0ken"}).code == 200


def test_overview_counts_stop_past_their_cap(store: Store) -> None:
    from renewald.store import status

    make_conversation(store, "conv-a")
    for _ in range(4):
        make_job(store, conversation="conv-a")
    view = store.read(
        lambda conn: status.overview(
            conn, now=T0 + 1000, dispatch_statuses=("auto",), cap=2, due_cap=1
        )
    )
    assert view.by_status["pending"] == 3 and view.due == 2  # shown as "2+" and "1+"
    assert view.by_status["done"] == 0 and view.oldest_due_at == T0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("statuses", "index"),
    [((), "idx_renewal_jobs_created"), (("failed",), "idx_renewal_jobs_status_created")],
)
def test_job_pages_walk_an_index_not_a_sort(
    store: Store, statuses: tuple[str, ...], index: str
) -> None:
    """The keyset page reads its index backwards from the cursor: no sort of the table."""
    from sqlalchemy import event

    from renewald.store import status

    seen: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM renewal_jobs" in statement and "ORDER BY" in statement:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        store.read(
            lambda conn: status.jobs_page(
                conn,
                backend=store.backend,
                now=T0,
                where=JobFilter(statuses=statuses),
                after=(T0, "job-x"),
                limit=50,
            )
        )
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    statement, parameters = seen[0]
    with store.engine.connect() as conn:
        plan = " | ".join(
            str(row[3])
            for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        )
    assert index in plan and "TEMP B-TREE" not in plan, plan
