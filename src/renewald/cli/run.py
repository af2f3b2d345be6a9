"""The daemon and the schema: run, migrate."""

from __future__ import annotations

import sys

import click

from renewald.cli.app import Context, cli, pass_ctx
from renewald.console import CurrentStderr, configure_console
from renewald.store import migrate


@cli.command("migrate")
@pass_ctx
def migrate_cmd(ctx: Context) -> None:
    """Create or upgrade the schema (idempotent)."""
    config = ctx.config
    configure_console(level=config.logging.level, console=config.logging.console)
    store = ctx.store_when_available(what="migrate", migrating=True)
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
    bar = once and sys.stderr.isatty()
    # With a progress bar, console lines go to whatever stderr is when they are written:
    # the bar's redirection prints them above it.
    configure_console(
        level=config.logging.level,
        console=config.logging.console,
        stream=CurrentStderr() if bar else None,
    )
    store = ctx.store_when_available(what="run", pool_size=(workers or config.daemon.workers) + 4)
    options = RunOptions(once=once, workers=workers, max_jobs=max_jobs)
    total = 0
    if bar:
        total = store.count_due(now=ctx.clock.now_ms())
        if max_jobs:
            total = min(total, max_jobs)
    progress = _Bar(total) if total else None
    service = Service(
        config,
        store.with_budget(DUTY_BUDGET),
        options=options,
        on_record=progress.advance if progress else None,
    )
    service.install_signal_handlers()
    if progress is None:
        code = service.run()
    else:
        with progress:
            code = service.run()
    if once:
        click.echo(f"renewald: {service.summary.line()}")
    ctx.close()
    sys.exit(code)


class _Bar:
    """A rich progress bar on stderr that stays on the bottom line: anything written to
    stderr while it is live (the console log) is printed above it, on lines of its own."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("delivering"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            redirect_stderr=True,
            redirect_stdout=False,
        )
        self._task = self._progress.add_task("delivering", total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.refresh()
        self._progress.stop()
