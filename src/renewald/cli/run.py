"""The daemon and the schema: run, migrate."""

from __future__ import annotations

import sys

import click

from renewald.cli.app import Context, cli, pass_ctx
from renewald.logging import configure_console
from renewald.store import migrate


@cli.command("migrate")
@pass_ctx
def migrate_cmd(ctx: Context) -> None:
    """Create or upgrade the schema (idempotent)."""
    config = ctx.config
    configure_console(level=config.logging.level, console=config.logging.console)
    store = ctx.store_when_available(what="migrate", create=True, check=False)
    before, after = migrate(store.engine)
    if before == after:
        click.echo(f"schema is current (revision {after})")
    elif before is None:
        click.echo(f"schema created (revision {after})")
    else:
        click.echo(f"schema upgraded from revision {before} to {after}")


@cli.command("run")
@click.option("--once", is_flag=True, help="deliver everything due now, then exit")
@click.option("--workers", type=click.IntRange(min=1), help="deliveries in flight")
@click.option("--max-jobs", type=click.IntRange(min=1), help="stop after claiming this many")
@pass_ctx
def run_cmd(ctx: Context, once: bool, workers: int | None, max_jobs: int | None) -> None:
    """Run the daemon (or, with --once, drain what is due and exit)."""
    from renewald.daemon.service import DUTY_BUDGET, RunOptions, Service

    config = ctx.config
    configure_console(level=config.logging.level, console=config.logging.console)
    store = ctx.store_when_available(what="run", pool_size=(workers or config.daemon.workers) + 4)
    options = RunOptions(once=once, workers=workers, max_jobs=max_jobs)
    progress = None
    if once and sys.stderr.isatty():
        total = store.count_due(
            now=ctx.clock.now_ms(), dispatch_statuses=config.daemon.dispatch_statuses
        )
        if max_jobs:
            total = min(total, max_jobs)
        if total:
            progress = click.progressbar(length=total, label="delivering", file=sys.stderr)
    service = Service(
        config,
        store.with_budget(DUTY_BUDGET),
        options=options,
        on_record=progress.update if progress else None,
    )
    service.install_signal_handlers()
    code = service.run()
    if progress is not None:
        progress.render_finish()
    if once:
        click.echo(f"renewald: {service.summary.line()}")
    ctx.close()
    sys.exit(code)
