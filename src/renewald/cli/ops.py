"""Operating renewald: health, conversations, stats, prune."""

from __future__ import annotations

import socket
import sys
import threading
from typing import NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from renewald import render
from renewald.cli.app import STATUSES, Context, cli, parse_age, pass_ctx, stale_after_ms
from renewald.durations import format_duration
from renewald.errors import DatabaseError, UsageError
from renewald.render import relative
from renewald.store.stats import Stats

# A probe answers within its own timeout (Docker's HEALTHCHECK gives 10s): a database
# that does not answer within this long is unhealthy, not waited for.
HEALTH_RETRY_FOR = 2.0
EXIT_UNHEALTHY = 1


def _unhealthy(why: str) -> NoReturn:
    # Exit 1, never 2: Docker reserves 2, and to a probe every failure means "unhealthy".
    click.echo(f"renewald: unhealthy: {why}", err=True)
    sys.exit(EXIT_UNHEALTHY)


@cli.command("health")
@click.option("--daemon", "need_daemon", is_flag=True, help="also require a live daemon here")
@pass_ctx
def health_cmd(ctx: Context, need_daemon: bool) -> None:
    """Exit 0 when the database answers (and, with --daemon, a daemon on this host is alive);
    otherwise exit 1. Either way, one line."""
    config = ctx.config  # a bad config stays a usage error (exit 2)
    try:
        store = ctx.store(budget=HEALTH_RETRY_FOR)
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
    stale_ms = stale_after_ms(config)
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


# -- conversations ---------------------------------------------------------------------


@cli.group("conversations")
def conversations_cmd() -> None:
    """Pause, resume and list conversations (their automation_status)."""


def _set_status(ctx: Context, conversation_id: str, status: str, as_json: bool) -> None:
    store = ctx.store()
    now = ctx.clock.now_ms()
    changed = store.set_automation_status(conversation_id, status=status, now=now)
    if changed is None:
        raise UsageError(f"no conversation {conversation_id}")
    before, after = changed
    found = store.list_conversations(conversation=conversation_id)
    summary = found[0] if found else None
    if as_json:
        data = summary.as_dict() if summary else {}
        data["previous_status"] = before.automation_status
        click.echo(render.dumps(data))
        return
    pending = summary.pending if summary else 0
    jobs = f"{pending} pending job{'s' if pending != 1 else ''}"
    if before.automation_status == status:
        since = f" since {render.when(after.paused_at, now)}" if after.paused_at else ""
        click.echo(f"conversation {conversation_id} is already {status}{since} ({jobs})")
    elif status == "paused":
        click.echo(
            f"conversation {conversation_id} paused (was {before.automation_status}); "
            f"its {jobs} wait until it is resumed"
        )
    else:
        click.echo(
            f"conversation {conversation_id} resumed: {status} (was {before.automation_status}); "
            f"{jobs}"
        )
        if not ctx.store().due.admits(status):
            click.echo(f"note: [daemon] dispatch_statuses does not include {status!r}", err=True)


def _status_command(name: str, status: str, help: str) -> None:
    """`conversations pause|resume ID [--json]`: set the conversation's automation_status."""

    @conversations_cmd.command(name, help=help)
    @click.argument("conversation_id")
    @click.option("--json", "as_json", is_flag=True)
    @pass_ctx
    def command(ctx: Context, conversation_id: str, as_json: bool) -> None:
        _set_status(ctx, conversation_id, status, as_json)


_status_command(
    "pause",
    "paused",
    "Stop dispatching a conversation's jobs (automation_status 'paused', paused_at now).",
)
_status_command(
    "resume",
    "auto",
    "Dispatch a conversation's jobs again (automation_status 'auto', paused_at cleared).",
)


@conversations_cmd.command("list")
@click.option(
    "--status",
    "statuses",
    type=click.Choice(["auto", "manual", "paused"]),
    multiple=True,
    help="only conversations with this automation_status",
)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def conversations_list_cmd(
    ctx: Context, statuses: tuple[str, ...], limit: int, as_json: bool
) -> None:
    """Conversations with their pending and running jobs, most recently updated first."""
    found = ctx.store().list_conversations(statuses=statuses, limit=limit)
    if as_json:
        click.echo(render.dumps([s.as_dict() for s in found]))
        return
    if not found:
        click.echo("no conversations")
        return
    now = ctx.clock.now_ms()
    rows = []
    for s in found:
        c = s.conversation
        cooling = c.cooldown_until is not None and c.cooldown_until > now
        rows.append(
            (
                c.local_conversation_id,
                c.platform,
                c.automation_status + (f" ({render.age(c.paused_at, now)})" if c.paused_at else ""),
                s.pending,
                s.running,
                f"until {render.short_when(c.cooldown_until, now)}" if cooling else "-",
            )
        )
    click.echo(
        render.table(("CONVERSATION", "PLATFORM", "STATUS", "PENDING", "RUNNING", "COOLDOWN"), rows)
    )


# -- stats -----------------------------------------------------------------------------


@cli.command("stats")
@click.option("--since", default="24h", show_default=True, help="window for failure counts")
@click.option(
    "--overdue-after",
    default="1m",
    show_default=True,
    help="a due job waiting longer than this is overdue",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="redraw every --interval on a terminal (Ctrl-C stops)")
@click.option("--interval", default="2s", show_default=True, help="how often --watch redraws")
@pass_ctx
def stats_cmd(
    ctx: Context, since: str, overdue_after: str, as_json: bool, watch: bool, interval: str
) -> None:
    """Counts by status, what is due and overdue, running leases, recent failures, live
    daemons, paused targets."""
    since_ms = parse_age(since, option="--since")
    overdue_ms = parse_age(overdue_after, option="--overdue-after")
    every = parse_age(interval, option="--interval") / 1000
    if watch and as_json:
        raise UsageError("stats: --watch redraws for people; for scripts, run --json on a timer")
    if watch and not sys.stdout.isatty():
        raise UsageError(
            "stats: --watch needs a terminal (stdout is not a TTY); "
            "run `renewald stats --json` on a timer instead"
        )
    store = ctx.store()
    config = ctx.config
    stale_ms = stale_after_ms(config)

    def snapshot() -> tuple[int, Stats]:
        now = ctx.clock.now_ms()
        return now, store.stats(
            now=now,
            overdue_before=now - overdue_ms,
            failures_since=now - since_ms,
        )

    if as_json:
        now, stats = snapshot()
        data = stats.as_dict(stale_before=now - stale_ms)
        data["overdue_after_ms"] = overdue_ms
        click.echo(render.dumps(data))
        return
    if not watch:
        now, stats = snapshot()
        click.echo(_stats_text(stats, now, stale_ms=stale_ms, since=since, overdue=overdue_after))
        return
    stop = threading.Event()
    try:
        while True:
            now, stats = snapshot()
            text = _stats_text(stats, now, stale_ms=stale_ms, since=since, overdue=overdue_after)
            click.clear()
            click.echo(f"renewald stats, every {interval} (Ctrl-C stops)  {render.when(now, now)}")
            click.echo(text)
            stop.wait(every)
    except KeyboardInterrupt:
        click.echo()


def _stats_text(stats: Stats, now: int, *, stale_ms: int, since: str, overdue: str) -> str:
    by_status = {s: stats.by_status.get(s, 0) for s in STATUSES}
    by_status.update({s: n for s, n in stats.by_status.items() if s not in by_status})
    oldest = (
        f" (oldest due for {render.age(stats.oldest_due_at, now)})"
        if stats.oldest_due_at is not None
        else ""
    )
    lease = (
        f", oldest lease {render.age(stats.oldest_running_started_at, now)} old"
        if stats.oldest_running_started_at is not None
        else ""
    )
    lines = [
        f"jobs       {render.counts(by_status)}",
        f"due now    {stats.due}{oldest}; overdue (due for over {overdue}) {stats.overdue}",
        f"held       {stats.held} past due but held back by their conversation; "
        f"{stats.unscheduled} not scheduled",
        f"running    {stats.running}{lease}; expired leases {stats.expired_leases}",
        f"failures   last {since}: {render.counts(stats.failures)}",
    ]
    lines += [
        "",
        _daemons_table(stats, now, stale_ms) if stats.daemons else "no daemons registered",
    ]
    lines += ["", _paused_table(stats, now)] if stats.paused_targets else ["no paused targets"]
    return "\n".join(lines)


def _daemons_table(stats: Stats, now: int, stale_ms: int) -> str:
    if not stats.daemons:
        return "no daemons registered"
    stale_before = now - stale_ms
    rows = [
        (
            d.owner_id,
            d.host,
            d.pid,
            d.version,
            render.short_when(d.heartbeat_at, now),
            "alive" if d.heartbeat_at >= stale_before else "stale",
            d.status,
        )
        for d in stats.daemons
    ]
    return render.table(("DAEMON", "HOST", "PID", "VERSION", "HEARTBEAT", "STATE", "STATUS"), rows)


def _paused_table(stats: Stats, now: int) -> str:
    paused = [
        (
            p.target_key,
            p.adapter,
            render.short_when(p.paused_until, now),
            p.failures,
            render.truncate(p.last_error, 50),
        )
        for p in stats.paused_targets
    ]
    return render.table(("PAUSED TARGET", "ADAPTER", "UNTIL", "FAILURES", "LAST ERROR"), paused)


# -- prune -----------------------------------------------------------------------------


@cli.command("prune")
@click.option(
    "--older-than",
    help="delete jobs finished longer ago than this, e.g. 30d (default: [retention] older_than)",
)
@click.option("--batch", type=click.IntRange(min=1), help="jobs per transaction")
@click.option("--dry-run", is_flag=True, help="count what would be deleted, delete nothing")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def prune_cmd(
    ctx: Context, older_than: str | None, batch: int | None, dry_run: bool, as_json: bool
) -> None:
    """Delete finished jobs (done/failed) and their attempts past retention, in short
    transactions."""
    retention = ctx.config.retention
    if older_than is not None:
        age_ms = parse_age(older_than, option="--older-than")
    elif retention.older_than is not None:
        age_ms = round(retention.older_than * 1000)
        older_than = format_duration(retention.older_than)
    else:
        raise UsageError("prune: give --older-than (e.g. 30d) or set [retention] older_than")
    store = ctx.store()
    now = ctx.clock.now_ms()
    before = now - age_ms
    if dry_run:
        n_jobs, n_attempts = store.count_prunable(before=before)
    else:
        n_jobs, n_attempts = store.prune_finished(before=before, batch=batch or retention.batch)
    if as_json:
        click.echo(
            render.dumps(
                {
                    "dry_run": dry_run,
                    "before": before,
                    "jobs": n_jobs,
                    "attempts": n_attempts,
                }
            )
        )
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {n_jobs} finished job{'s' if n_jobs != 1 else ''} and {n_attempts} "
        f"attempt{'s' if n_attempts != 1 else ''} (finished before "
        f"{render.when(before, now)}, older than {older_than})"
    )
