"""`renewald daemons`: the registry of daemons, who is alive, and what each one holds."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

import click

from renewald import render
from renewald.cli.app import Context, cli, pass_ctx, stale_after_ms
from renewald.daemon.owner import pid_running
from renewald.store.daemons import DaemonRow, running_by_owner


def gone_here(daemon: DaemonRow) -> bool:
    """A daemon registered on this host whose pid no longer runs (killed -9, say): dead
    now, before its heartbeat goes stale."""
    return daemon.host == socket.gethostname() and not pid_running(daemon.pid)


def liveness(daemon: DaemonRow, *, now: int, stale_ms: int, host: str) -> str:
    """gone (registered on this host, but its pid no longer runs: killed before it could
    unregister, whether or not its heartbeat has gone stale yet) | stale (no heartbeat for
    3 intervals: the rescuer takes it for dead) | alive."""
    if daemon.host == host and not pid_running(daemon.pid):
        return "gone"
    if now - daemon.heartbeat_at > stale_ms:
        return "stale"
    return "alive"


@cli.command("daemons")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def daemons_cmd(ctx: Context, as_json: bool) -> None:
    """The daemons in the registry: owner, host, pid, version, started, heartbeat age,
    status, running jobs they hold, and whether each is alive, stale or gone."""
    store = ctx.store()
    rows = store.list_daemons()
    held = store.read(running_by_owner)
    now = ctx.clock.now_ms()
    stale_ms = stale_after_ms(ctx.config)
    host = socket.gethostname()
    states = [liveness(d, now=now, stale_ms=stale_ms, host=host) for d in rows]
    if as_json:
        click.echo(render.dumps(_as_json(rows, states, held, now)))
        return
    if not rows:
        click.echo("no daemons registered")
        return
    click.echo(_as_table(rows, states, held, now))
    alive = states.count("alive")
    click.echo(f"{alive} alive of {len(rows)} registered (stale after {stale_ms // 1000}s)")


def _as_json(
    rows: Sequence[DaemonRow], states: Sequence[str], held: Mapping[str, int], now: int
) -> list[dict[str, Any]]:
    return [
        {
            "owner_id": d.owner_id,
            "host": d.host,
            "pid": d.pid,
            "version": d.version,
            "started_at": d.started_at,
            "heartbeat_at": d.heartbeat_at,
            "heartbeat_age_ms": max(0, now - d.heartbeat_at),
            "status": d.status,
            "running": held.get(d.owner_id, 0),
            "state": state,
            "alive": state == "alive",
        }
        for d, state in zip(rows, states, strict=True)
    ]


def _as_table(
    rows: Sequence[DaemonRow], states: Sequence[str], held: Mapping[str, int], now: int
) -> str:
    head = ("OWNER", "HOST", "PID", "VERSION", "STARTED", "HEARTBEAT", "STATUS", "RUNNING",
            "STATE")  # fmt: skip
    return render.table(
        head,
        [
            (
                d.owner_id,
                d.host,
                d.pid,
                d.version,
                render.when(d.started_at, now),
                render.age(d.heartbeat_at, now),
                d.status,
                held.get(d.owner_id, 0),
                state,
            )
            for d, state in zip(rows, states, strict=True)
        ],
    )
