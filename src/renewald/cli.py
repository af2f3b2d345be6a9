"""The `renewald` command line (DESIGN §7).

Every user error ends in one line on stderr and exit 2: click's usage errors, config
errors, database errors, a missing job. Nothing is written unless the whole input is valid.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import click

from renewald import __version__, render
from renewald.clock import SystemClock, datetime_to_ms
from renewald.config import Config, load_config
from renewald.durations import parse_duration
from renewald.errors import ConfigError, DatabaseError, RenewaldError, UsageError
from renewald.logging import configure_console
from renewald.redact import redact_value
from renewald.store import NewJob, Store, migrate
from renewald.store.models import Job

STATUSES = ("pending", "running", "done", "failed")
EXIT_USAGE = 2


@dataclass
class Context:
    config_path: str | None
    db_url: str | None
    clock: SystemClock = field(default_factory=SystemClock)
    _config: Config | None = None
    _store: Store | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, db_url=self.db_url)
        return self._config

    def store(self, *, create: bool = False, check: bool = True, pool_size: int = 5) -> Store:
        if self._store is None:
            db = self.config.database
            self._store = Store.open(
                db.url,
                busy_timeout=db.busy_timeout,
                synchronous=db.sqlite_synchronous,
                create=create,
                pool_size=pool_size,
            )
            if check:
                self._store.check_schema()
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="config.toml (env RENEWALD_CONFIG)")
@click.option("--db", "db_url", metavar="URL", help="SQLAlchemy database URL (env RENEWALD_DB)")
@click.version_option(__version__, prog_name="renewald")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, db_url: str | None) -> None:
    """renewald delivers renewal jobs from the tracker's artifact.db."""
    obj = Context(config_path=config_path, db_url=db_url)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


# -- migrate ---------------------------------------------------------------------------


@cli.command("migrate")
@pass_ctx
def migrate_cmd(ctx: Context) -> None:
    """Create or upgrade the schema (idempotent)."""
    store = ctx.store(create=True, check=False)
    before, after = migrate(store.engine)
    if before == after:
        click.echo(f"schema is current (revision {after})")
    elif before is None:
        click.echo(f"schema created (revision {after})")
    else:
        click.echo(f"schema upgraded from revision {before} to {after}")


# -- enqueue ---------------------------------------------------------------------------


def parse_when(value: str, *, now: int, option: str) -> int:
    """ISO-8601 (naive = local time), "now", or "+30s"/"+5m"/"+2h" from now, as epoch ms."""
    text = value.strip()
    if text == "now":
        return now
    if text.startswith("+"):
        try:
            return now + round(parse_duration(text[1:]) * 1000)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
    try:
        return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"{option}: {value!r} is neither an ISO-8601 time nor a relative time like +30s"
        ) from None


def parse_target(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--target: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"--target: must be a JSON object, got {type(parsed).__name__}")
    return json.dumps(parsed, separators=(",", ":"))


@cli.command("enqueue")
@click.option("--conversation", required=True, help="local_conversation_id")
@click.option("--payload", required=True, help="the message to deliver")
@click.option("--payload-kind", type=click.Choice(["text", "json"]), default="text")
@click.option("--message", "message_id", help="message id (default: renewald:<uuid>)")
@click.option("--job-id", help="job id (default: a new uuid)")
@click.option("--at", "at", default="now", help="ISO-8601 time or +30s/+5m/+2h (default: now)")
@click.option("--deadline", help="give up after this time: ISO-8601 or +1h")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--target-kind", help="adapter kind (default: from the conversation's link)")
@click.option("--target", "target_json", help="target parameters as a JSON object")
@click.option("--json", "as_json", is_flag=True, help="print the job as JSON")
@pass_ctx
def enqueue_cmd(
    ctx: Context,
    conversation: str,
    payload: str,
    payload_kind: str,
    message_id: str | None,
    job_id: str | None,
    at: str,
    deadline: str | None,
    max_attempts: int,
    target_kind: str | None,
    target_json: str | None,
    as_json: bool,
) -> None:
    """Add a renewal job for a conversation."""
    now = ctx.clock.now_ms()
    if not conversation.strip():
        raise UsageError("--conversation: must not be empty")
    if not payload:
        raise UsageError("--payload: must not be empty")
    if payload_kind == "json":
        try:
            json.loads(payload)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--payload: --payload-kind json needs JSON ({exc.msg} at column {exc.colno})"
            ) from None
    new = NewJob(
        job_id=job_id or str(uuid.uuid4()),
        local_conversation_id=conversation,
        message_id=message_id or f"renewald:{uuid.uuid4()}",
        payload=payload,
        payload_kind=payload_kind,
        target_snapshot=parse_target(target_json),
        target_kind=target_kind,
        max_attempts=max_attempts,
        next_attempt_at=parse_when(at, now=now, option="--at"),
        deadline_at=parse_when(deadline, now=now, option="--deadline") if deadline else None,
    )
    job = ctx.store().enqueue(job=new, now=now)
    if as_json:
        click.echo(render.dumps(job_json(job)))
    else:
        click.echo(job.job_id)


# -- jobs and show ---------------------------------------------------------------------


def job_json(job: Job) -> dict[str, Any]:
    data = job.as_dict()
    data["target_snapshot"] = _json_or_text(job.target_snapshot)
    data["last_error"] = job.last_error
    return data


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return redact_value(json.loads(value))
    except json.JSONDecodeError:
        return redact_value(value)


@cli.command("jobs")
@click.option("--status", "statuses", type=click.Choice(STATUSES), multiple=True)
@click.option("--conversation")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs_cmd(
    ctx: Context, statuses: tuple[str, ...], conversation: str | None, limit: int, as_json: bool
) -> None:
    """List jobs, newest first."""
    found = ctx.store().list_jobs(statuses=statuses, conversation=conversation, limit=limit)
    if as_json:
        click.echo(render.dumps([job_json(j) for j in found]))
        return
    if not found:
        click.echo("no jobs")
        return
    now = ctx.clock.now_ms()
    rows = [
        (
            j.job_id,
            j.status + (f"/{j.terminal_reason}" if j.terminal_reason else ""),
            j.local_conversation_id,
            f"{j.attempt_count}/{j.max_attempts}",
            render.short_when(j.next_attempt_at, now) if j.status == "pending" else "-",
            render.short_when(j.updated_at, now),
            render.truncate(j.last_error, 40),
        )
        for j in found
    ]
    click.echo(
        render.table(
            ("JOB", "STATUS", "CONVERSATION", "ATTEMPTS", "NEXT", "UPDATED", "LAST ERROR"), rows
        )
    )


@cli.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show_cmd(ctx: Context, job_id: str, as_json: bool) -> None:
    """The job, its attempts, and why it is (not) running."""
    store = ctx.store()
    job = store.get_job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id}")
    attempts = store.list_attempts(job_id)
    if as_json:
        data = job_json(job)
        data["attempts"] = [a.as_dict() for a in attempts]
        click.echo(render.dumps(data))
        return
    now = ctx.clock.now_ms()
    lines = [
        f"job          {job.job_id}",
        f"status       {job.status}" + (f" ({job.terminal_reason})" if job.terminal_reason else ""),
        f"conversation {job.local_conversation_id}",
        f"message      {job.message_id}",
        f"attempts     {job.attempt_count} of {job.max_attempts}",
        f"next attempt {render.when(job.next_attempt_at, now)}",
        f"created      {render.when(job.created_at, now)}",
        f"updated      {render.when(job.updated_at, now)}",
    ]
    if job.deadline_at is not None:
        lines.append(f"deadline     {render.when(job.deadline_at, now)}")
    if job.lease_owner:
        lines.append(
            f"leased by    {job.lease_owner} until {render.when(job.lease_expires_at, now)}"
        )
    if job.target_kind or job.target_snapshot:
        target = json.dumps(_json_or_text(job.target_snapshot))
        lines.append(f"target       {job.target_kind or '(from link)'} {target}")
    if job.last_error:
        lines.append(f"last error   {job.last_error}")
    if job.log_path:
        lines.append(f"log          {job.log_path}")
    payload = render.truncate(job.payload, 200)
    lines.append(f"payload      ({job.payload_kind}) {payload}")
    click.echo("\n".join(lines))
    if attempts:
        click.echo("\nattempts")
        rows = [
            (
                a.attempt_no,
                a.outcome,
                render.when(a.started_at, now),
                f"{a.duration_ms}ms" if a.duration_ms is not None else "-",
                a.adapter,
                a.decision,
                render.truncate(a.decision_reason or a.error_message, 60),
            )
            for a in attempts
        ]
        click.echo(
            render.table(("#", "OUTCOME", "STARTED", "TOOK", "ADAPTER", "NEXT", "REASON"), rows)
        )


# -- run -------------------------------------------------------------------------------


@cli.command("run")
@click.option("--once", is_flag=True, help="deliver everything due now, then exit")
@click.option("--workers", type=click.IntRange(min=1), help="deliveries in flight")
@click.option("--max-jobs", type=click.IntRange(min=1), help="stop after claiming this many")
@pass_ctx
def run_cmd(ctx: Context, once: bool, workers: int | None, max_jobs: int | None) -> None:
    """Run the daemon (or, with --once, drain what is due and exit)."""
    from renewald.daemon.service import RunOptions, Service

    config = ctx.config
    configure_console(level=config.logging.level, console=config.logging.console)
    store = ctx.store(pool_size=(workers or config.daemon.workers) + 4)
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
        config, store, options=options, on_record=progress.update if progress else None
    )
    service.install_signal_handlers()
    code = service.run()
    if progress is not None:
        progress.render_finish()
    if once:
        click.echo(f"renewald: {service.summary.line()}")
    ctx.close()
    sys.exit(code)


# -- entry point -----------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"renewald: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit 2, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="renewald", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        _fail(f"{where}{exc.format_message()}")
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except (ConfigError, DatabaseError, UsageError, RenewaldError) as exc:
        _fail(str(exc))
    except _db_errors() as exc:
        _fail(f"database error: {_one_line(exc)}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _db_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError,)


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


if __name__ == "__main__":  # pragma: no cover
    main()
