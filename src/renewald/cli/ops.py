"""Operating renewald: health."""

from __future__ import annotations

import socket
import sys

import click

from renewald.cli.app import Context, cli, pass_ctx
from renewald.render import relative


@cli.command("health")
@click.option("--daemon", "need_daemon", is_flag=True, help="also require a live daemon here")
@pass_ctx
def health_cmd(ctx: Context, need_daemon: bool) -> None:
    """Exit 0 when the database answers (and, with --daemon, a daemon on this host is alive)."""
    store = ctx.store()
    if not need_daemon:
        click.echo("ok: database answers")
        return
    now = ctx.clock.now_ms()
    stale_ms = round(3 * ctx.config.daemon.heartbeat_interval * 1000)
    host = socket.gethostname()
    mine = [d for d in store.list_daemons() if d.host == host]
    fresh = [d for d in mine if now - d.heartbeat_at <= stale_ms]
    if fresh:
        newest = max(fresh, key=lambda d: d.heartbeat_at)
        click.echo(f"ok: daemon {newest.owner_id} heartbeat {relative(newest.heartbeat_at, now)}")
        return
    if mine:
        newest = max(mine, key=lambda d: d.heartbeat_at)
        why = f"daemon {newest.owner_id} last heartbeat {relative(newest.heartbeat_at, now)}"
    else:
        why = f"no daemon registered on {host}"
    click.echo(f"renewald: unhealthy: {why}", err=True)
    sys.exit(1)
