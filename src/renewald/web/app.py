"""Routing and rendering of the status pages.

`StatusApp.route(request)` answers `/`, `/jobs`, `/jobs/<id>`, `/conversations` and
`/schedules` (None for any other path). Each page reads through the store, then renders
a Jinja2 template with autoescape on: every stored value (stored text comes from other
programs) is escaped, and what may hold a secret is redacted first, as the CLI does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError

from renewald import render
from renewald.clock import Clock, iso_utc
from renewald.daemon.listener import Request, Response
from renewald.durations import parse_positive_ms
from renewald.redact import redact_text, redact_value
from renewald.store import ClaimedJob, JobFilter, Store, status
from renewald.store.daemons import DaemonRow
from renewald.store.engine import describe
from renewald.store.explain import Explanation, explain
from renewald.store.facts import JobFacts
from renewald.web.logs import job_log_lines

_log = structlog.get_logger("renewald.web")

HTML = "text/html; charset=utf-8"
STATUSES = ("pending", "running", "done", "failed")
PAGE_SIZE = 50
# No script runs on these pages, whatever a stored value holds; styles are inline.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadRequest(ValueError):
    """A query parameter the page cannot use (the message says which)."""


@dataclass(frozen=True)
class Settings:
    dispatch_statuses: Sequence[str]
    stale_after_ms: int
    log_dir: Path
    gone: Callable[[DaemonRow], bool] | None = None
    # The job's adapter kind and breaker key, as the daemon computes them (cli/jobs.py).
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None


def _secretless(text: Any) -> str | None:
    """Stored free text as the page shows it: redacted, never None-as-"None"."""
    return None if text is None else redact_text(str(text))


def _json_text(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(redact_value(json.loads(value)), ensure_ascii=False)
    except (ValueError, TypeError):
        return _secretless(value)


class StatusApp:
    def __init__(self, *, store: Store, clock: Clock, settings: Settings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.env = Environment(
            loader=PackageLoader("renewald.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            secretless=_secretless,
            json_text=_json_text,
            truncate_text=lambda t, n=80: render.truncate(_secretless(t), n),
            took=render.took,
            iso=lambda ms: iso_utc(ms) if isinstance(ms, int) else "-",
        )

    @staticmethod
    def is_page(path: str) -> bool:
        return path in ("/", "/jobs", "/conversations", "/schedules") or (
            path.startswith("/jobs/") and len(path) > len("/jobs/")
        )

    def route(self, request: Request) -> Response | None:
        path = request.path
        if path == "/":
            page: Callable[..., tuple[str, dict[str, Any]]] = self.overview
            args: tuple[Any, ...] = ()
        elif path == "/jobs":
            page, args = self.jobs, (request.query,)
        elif path.startswith("/jobs/") and len(path) > len("/jobs/"):
            page, args = self.job, (unquote(path[len("/jobs/") :]),)
        elif path == "/conversations":
            page, args = self.conversations, ()
        elif path == "/schedules":
            page, args = self.schedules, ()
        else:
            return None
        return self._render(page, *args)

    def _render(self, page: Callable[..., tuple[str, dict[str, Any]]], *args: Any) -> Response:
        now = self.clock.now_ms()
        code = 200
        try:
            template, context = page(*args, now=now)
        except BadRequest as exc:
            code, template, context = 400, "error.html", _error("Bad request", str(exc))
        except LookupError as exc:
            code, template, context = 404, "error.html", _error("Not found", str(exc.args[0]))
        except SQLAlchemyError as exc:
            _log.warning("web.database_unavailable", error=describe(exc))
            why = _error("Database unavailable", describe(exc))
            code, template, context = 503, "error.html", why
        html = self.env.get_template(template).render(
            now=now,
            when=lambda ms: render.when(ms, now),
            rel=lambda ms: render.short_when(ms, now),
            age=lambda ms: render.age(ms, now),
            **context,
        )
        return Response(code, html.encode(), HTML, HEADERS)

    # -- pages -------------------------------------------------------------------------

    def overview(self, *, now: int) -> tuple[str, dict[str, Any]]:
        s = self.settings
        view = self.store.read(
            lambda conn: status.overview(conn, now=now, dispatch_statuses=s.dispatch_statuses)
        )
        alive = [d for d in view.daemons if d.heartbeat_at >= now - s.stale_after_ms]
        return "overview.html", {"title": "Overview", "view": view, "alive": alive}

    def jobs(self, query: Mapping[str, list[str]], *, now: int) -> tuple[str, dict[str, Any]]:
        where = _job_filter(query, now=now)
        after = _cursor(query)
        page = self.store.read(
            lambda conn: status.jobs_page(
                conn,
                backend=self.store.backend,
                now=now,
                after=after,
                limit=PAGE_SIZE,
                target_of=self.settings.target_of,
                where=where,
            )
        )
        explained = [(f, self._explain(f, now)) for f in page.facts]
        next_url = None
        if page.next_after is not None:
            keep = [(k, v) for k, vs in query.items() if k not in ("after",) for v in vs]
            cursor = f"{page.next_after[0]}:{page.next_after[1]}"
            next_url = "/jobs?" + urlencode([*keep, ("after", cursor)])
        return "jobs.html", {
            "title": "Jobs",
            "explained": explained,
            "next_url": next_url,
            "query": {k: v[0] for k, v in query.items() if v and k != "after"},
            "statuses": STATUSES,
            "first_page": after is None,
        }

    def job(self, job_id: str, *, now: int) -> tuple[str, dict[str, Any]]:
        s = self.settings
        found = self.store.explain_job(
            job_id,
            now=now,
            stale_after_ms=s.stale_after_ms,
            target_of=s.target_of,
            gone=s.gone,
        )
        if found is None:
            raise LookupError(f"no job {job_id}")
        facts, why = found
        attempts = sorted(
            self.store.list_attempts(job_id),
            key=lambda a: (a.started_at, a.finished_at, a.attempt_no),
        )
        lines = job_log_lines(
            s.log_dir,
            job_id,
            log_path=facts.job.log_path,
            times=[facts.job.created_at, *(a.started_at for a in attempts)],
        )
        return "job.html", {
            "title": f"Job {job_id}",
            "facts": facts,
            "job": facts.job,
            "why": why,
            "attempts": attempts,
            "log_lines": [json.dumps(line, ensure_ascii=False) for line in lines],
        }

    def conversations(self, *, now: int) -> tuple[str, dict[str, Any]]:
        rows = self.store.read(lambda conn: status.conversations(conn))
        by_conv: dict[str, list[Any]] = {}
        for sched in self.store.list_schedules(limit=1000):
            by_conv.setdefault(sched.local_conversation_id, []).append(sched)
        return "conversations.html", {
            "title": "Conversations",
            "rows": rows,
            "schedules": by_conv,
        }

    def schedules(self, *, now: int) -> tuple[str, dict[str, Any]]:
        found = sorted(
            self.store.list_schedules(limit=1000),
            key=lambda s: (not s.enabled, s.next_fire_at is None, s.next_fire_at or 0),
        )
        return "schedules.html", {"title": "Schedules", "schedules": found}

    def _explain(self, facts: JobFacts, now: int) -> Explanation:
        s = self.settings
        return explain(
            facts.with_gone_owners(s.gone),
            now=now,
            dispatch_statuses=s.dispatch_statuses,
            stale_before=now - s.stale_after_ms,
        )


def _error(title: str, message: str) -> dict[str, Any]:
    return {"title": title, "message": message}


def _job_filter(query: Mapping[str, list[str]], *, now: int) -> JobFilter:
    """The jobs page's filters: the options of `renewald jobs`, as query parameters."""
    statuses = tuple(v for v in query.get("status", []) if v)
    bad = [v for v in statuses if v not in STATUSES]
    if bad:
        raise BadRequest(f"status: unknown status {bad[0]!r} (one of {', '.join(STATUSES)})")
    since = None
    since_text = (query.get("since") or [""])[0].strip()
    if since_text:
        try:
            since = now - parse_positive_ms(since_text)
        except ValueError as exc:
            raise BadRequest(f"since: {exc}") from None
    return JobFilter(
        statuses=statuses,
        conversation=(query.get("conversation") or [""])[0] or None,
        since=since,
        reasons=tuple(v for v in query.get("reason", []) if v),
        target_kinds=tuple(v for v in query.get("target_kind", []) if v),
    )


def _cursor(query: Mapping[str, list[str]]) -> tuple[int, str] | None:
    text = (query.get("after") or [""])[0]
    if not text:
        return None
    at, sep, job_id = text.partition(":")
    if not sep or not at.isdigit():
        raise BadRequest("after: not a page cursor")
    return int(at), job_id
