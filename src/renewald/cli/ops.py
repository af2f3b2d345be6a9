"""Operating renewald: health."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from renewald.cli.app import Context, cli, pass_ctx
from renewald.errors import DatabaseError
from renewald.render import relative
from renewald.store import Store

# A probe answers within its own timeout (Docker's HEALTHCHECK gives 10s): a database
# that does not answer within this long is unhealthy, not waited for.
HEALTH_RETRY_FOR = 2.0
EXIT_UNHEALTHY = 1


def _unhealthy(why: str) -> NoReturn:
    # Exit 1, never 2: Docker reserves 2, and to a probe every failure means "unhealthy".
    click.echo(f"renewald: unhealthy: {why}", err=True)
    sys.exit(EXIT_UNHEALTHY)


@contextmanager
def _probe_retries() -> Iterator[None]:
    saved = Store.retry_for
    Store.retry_for = HEALTH_RETRY_FOR
    try:
        yield
    finally:
        Store.retry_for = saved


@cli.command("health")
@click.option("--daemon", "need_daemon", is_flag=True, help="also require a live daemon here")
@pass_ctx
def health_cmd(ctx: Context, need_daemon: bool) -> None:
    """Exit 0 when the database answers (and, with --daemon, a daemon on this host is alive);
    otherwise exit 1. Either way, one line."""
    config = ctx.config  # a bad config stays a usage error (exit 2)
    try:
        with _probe_retries():
            store = ctx.store()
            daemons = store.list_daemons() if need_daemon else []
    except DatabaseError as exc:
        _unhealthy(str(exc))
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        _unhealthy(f"database error: {lines[0] if lines else type(orig).__name__}")
    if not need_daemon:
        click.echo("ok: database answers")
        return
    now = ctx.clock.now_ms()
    stale_ms = round(3 * config.daemon.heartbeat_interval * 1000)
    host = socket.gethostname()
    mine = [d for d in daemons if d.host == host]
    fresh = [d for d in mine if now - d.heartbeat_at <= stale_ms]
    if fresh:
        newest = max(fresh, key=lambda d: d.heartbeat_at)
        click.echo(f"ok: daemon {newest.owner_id} heartbeat {relative(newest.heartbeat_at, now)}")
        return
    if mine:
        newest = max(mine, key=lambda d: d.heartbeat_at)
        _unhealthy(f"daemon {newest.owner_id} last heartbeat {relative(newest.heartbeat_at, now)}")
    _unhealthy(f"no daemon registered on {host}")
