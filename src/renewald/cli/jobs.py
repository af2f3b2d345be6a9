"""Jobs: enqueue, list, show."""

from __future__ import annotations

import json
import uuid

import click

from renewald import render
from renewald.cli.app import (
    STATUSES,
    Context,
    _json_or_text,
    cli,
    job_json,
    parse_target,
    parse_when,
    pass_ctx,
)
from renewald.errors import UsageError
from renewald.store import NewJob


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
