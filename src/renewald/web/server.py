"""Serving the status pages: the token guard, and mounting the pages on a listener.

A loopback bind serves the pages to anyone on the host (as `/metrics` is). A
non-loopback bind serves them only with a token (`[http] token`, or
`RENEWALD_HTTP_TOKEN`): sent as `Authorization: Bearer <token>`, or once as `?token=`,
after which an HttpOnly, SameSite=Strict cookie carries it (so links work in a browser).
Tokens are compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Callable
from functools import partial
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import structlog

from renewald.adapters import AdapterRegistry
from renewald.clock import Clock
from renewald.config import Config
from renewald.config.timings import Timings
from renewald.daemon.listener import Listener, Request, Response, Route
from renewald.daemon.owner import pid_running
from renewald.daemon.target import target_of
from renewald.store import Store
from renewald.store.daemons import DaemonRow
from renewald.web.app import HEADERS, Settings, StatusApp

_log = structlog.get_logger("renewald.web")

COOKIE = "renewald_token"
# A page must not wait on a database that is away: one second, then "unavailable".
PAGE_BUDGET = 1.0


def _presented(request: Request) -> tuple[str | None, bool]:
    """The token the request carries, and whether it came in the query string."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if request.query.get("token"):
        return request.query["token"][0], True
    try:
        jar = SimpleCookie(request.headers.get("cookie", ""))
    except CookieError:
        return None, False
    morsel = jar.get(COOKIE)
    return (morsel.value if morsel is not None else None), False


def guarded(app: StatusApp, *, token: str, loopback: bool) -> Route:
    """The app's pages behind the token (or, off loopback without one, refused); other
    paths are left to the listener's other routes."""
    expected = token.encode()

    def guard(request: Request) -> Response | None:
        if not app.is_page(request.path):
            return None
        if not token:
            if loopback:
                return app.route(request)
            return Response(
                403,
                b"the status page needs [http] token on a non-loopback listener\n",
                headers=HEADERS,
            )
        presented, in_query = _presented(request)
        if presented is None or not hmac.compare_digest(presented.encode(), expected):
            return Response(
                401,
                b"token required: Authorization: Bearer <token>, or ?token=<token> once\n",
                headers={**HEADERS, "WWW-Authenticate": "Bearer"},
            )
        if in_query:
            rest = [(k, v) for k, vs in request.query.items() if k != "token" for v in vs]
            location = request.path + (f"?{urlencode(rest)}" if rest else "")
            cookie = f"{COOKIE}={presented}; HttpOnly; SameSite=Strict; Path=/"
            return Response(303, b"", headers={"Location": location, "Set-Cookie": cookie})
        return app.route(request)

    return guard


def gone_here(daemon: DaemonRow) -> bool:
    """A daemon registered on this host whose pid no longer runs: dead before its
    heartbeat goes stale (as `renewald show` judges it)."""
    return daemon.host == socket.gethostname() and not pid_running(daemon.pid)


def status_app(
    config: Config,
    store: Store,
    clock: Clock,
    *,
    registry: AdapterRegistry | None = None,
    gone: Callable[[DaemonRow], bool] | None = gone_here,
) -> StatusApp:
    """The pages for `config`'s database. With `registry`, a job's breaker key is the
    adapter's own (as `renewald show` computes it); without, pauses of its whole kind."""
    settings = Settings(
        target_of=partial(target_of, registry=registry) if registry is not None else None,
        dispatch_statuses=config.daemon.dispatch_statuses,
        stale_after_ms=Timings.of(config).stale_after_ms,
        log_dir=Path(config.logging.dir),
        gone=gone,
    )
    return StatusApp(store=store.with_budget(PAGE_BUDGET), clock=clock, settings=settings)


def mount_pages(listener: Listener, app: StatusApp, *, token: str) -> None:
    """Serve the status pages on `listener`, behind the guard its bind calls for."""
    if not token and not listener.loopback:
        _log.warning(
            "http.pages_refused",
            address=listener.address,
            reason="not loopback and no [http] token: the status page answers 403",
        )
    listener.add_route(guarded(app, token=token, loopback=listener.loopback))
