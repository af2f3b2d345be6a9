"""`renewald web`: the read-only status page for a host with no running daemon.

The same pages the daemon's listener serves (renewald/web). Binds loopback unless told
otherwise; a non-loopback bind needs a token (`--token-env`, `[http] token` or
`RENEWALD_HTTP_TOKEN`), else it is refused with one line and exit 2.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import click

from renewald.adapters import AdapterRegistry
from renewald.cli.app import Context, cli, pass_ctx
from renewald.config.rules import _is_listen
from renewald.daemon.listener import Listener, is_loopback, split_listen
from renewald.errors import UsageError
from renewald.web.server import mount_pages, status_app

DEFAULT_LISTEN = "127.0.0.1:8464"


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@cli.command("web")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    help='"host:port" to serve on; port 0 picks a free one',
)
@click.option(
    "--token-env",
    metavar="NAME",
    help="read the page token from this environment variable (default: [http] token)",
)
@pass_ctx
def web_cmd(ctx: Context, listen: str, token_env: str | None) -> None:
    """Serve the read-only status page until interrupted."""
    if not _is_listen(listen):
        raise UsageError(f'--listen: expected "host:port" like {DEFAULT_LISTEN!r}, got {listen!r}')
    token = ctx.config.http.token
    if token_env is not None:
        token = os.environ.get(token_env, "")
        if not token:
            raise UsageError(f"--token-env: ${token_env} is not set or empty")
    host, _ = split_listen(listen)
    if not is_loopback(host) and not token:
        raise UsageError(
            f"web: --listen {listen} is not loopback: set [http] token "
            "(or RENEWALD_HTTP_TOKEN, or --token-env) to serve beyond this host"
        )
    store = ctx.store()
    registry = AdapterRegistry(ctx.config.adapters)
    listener = Listener(listen)
    mount_pages(listener, status_app(ctx.config, store, ctx.clock, registry=registry), token=token)
    click.echo(f"renewald: status page on http://{listener.address}/ (Ctrl-C stops)", err=True)
    signal.signal(signal.SIGTERM, _interrupt)  # systemd's stop: as quiet as Ctrl-C
    try:
        listener.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        registry.close()
