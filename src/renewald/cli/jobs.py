"""Jobs: enqueue and list (with why each is held back); the checks and the adapter view
that `show`, `retry`/`cancel` (cli/show.py, cli/actions.py) and `schedules add` share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from renewald import render
from renewald.adapters import AdapterRegistry
from renewald.cli.app import (
    STATUSES,
    Context,
    check_payload,
    cli,
    job_json,
    parse_age,
    parse_target,
    parse_when,
    pass_ctx,
    stale_after_ms,
)
from renewald.cli.daemons import gone_here
from renewald.clock import datetime_to_ms
from renewald.daemon.target import target_of
from renewald.errors import UsageError
from renewald.store import ClaimedJob, JobFilter, NewJob
from renewald.store.explain import Explanation
from renewald.store.facts import JobFacts

# The options that say what a new job carries, defined once for `enqueue` and `schedules
# add` (which apply them each in its own order): `check_new_job` checks what they give.
CONVERSATION = click.option("--conversation", required=True, help="local_conversation_id")
PAYLOAD_KIND = click.option("--payload-kind", type=click.Choice(["text", "json"]), default="text")
MAX_ATTEMPTS = click.option(
    "--max-attempts", type=click.IntRange(min=1), default=3, show_default=True
)
TARGET_KIND = click.option(
    "--target-kind", help="adapter kind (default: from the conversation's link)"
)
TARGET = click.option("--target", "target_json", help="target parameters as a JSON object")


@cli.command("enqueue")
@CONVERSATION
@click.option("--payload", required=True, help="the message to deliver")
@PAYLOAD_KIND
@click.option("--message", "message_id", help="message id (default: renewald:<uuid>)")
@click.option("--job-id", help="job id (default: a new uuid)")
@click.option("--at", "at", default="now", help="ISO-8601 time or +30s/+5m/+2h (default: now)")
@click.option("--deadline", help="give up after this time: ISO-8601 or +1h")
@MAX_ATTEMPTS
@TARGET_KIND
@TARGET
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
    check_new_job(ctx, conversation, payload, payload_kind, target_kind)
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


def check_new_job(
    ctx: Context, conversation: str, payload: str, payload_kind: str, target_kind: str | None
) -> None:
    """What `enqueue` and `schedules add` refuse before writing anything."""
    if not conversation.strip():
        raise UsageError("--conversation: must not be empty")
    check_payload(payload, payload_kind)
    if target_kind is not None:
        _check_target_kind(ctx, target_kind)


def _check_target_kind(ctx: Context, kind: str) -> None:
    """A kind no adapter serves would only fail at delivery (or a schedule's first fire):
    refuse it now, naming the kinds there are (built-in and registered through entry
    points)."""
    with adapter_registry(ctx) as registry:
        kinds = registry.kinds()
    if kind not in kinds:
        raise UsageError(f"--target-kind: unknown kind {kind!r} (known: {', '.join(kinds)})")


@contextmanager
def adapter_registry(ctx: Context) -> Iterator[AdapterRegistry]:
    """The configured adapters, closed on leaving: for reading kinds and target keys."""
    registry = AdapterRegistry(ctx.config.adapters)
    try:
        yield registry
    finally:
        registry.close()


def job_target(
    registry: AdapterRegistry,
) -> Callable[[ClaimedJob], tuple[str | None, str | None]]:
    """The job's adapter kind and breaker key, as the daemon would compute them."""
    return lambda claimed: target_of(claimed, registry)


@cli.command("jobs")
@click.option("--status", "statuses", type=click.Choice(STATUSES), multiple=True)
@click.option("--conversation")
@click.option(
    "--since",
    help="changed since: a duration (2h, 30m) or an ISO-8601 time",
)
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    help="terminal reason (exhausted, permanent, …) or the start of the last decision's "
    "reason (backoff, retry_after, breaker); repeatable",
)
@click.option(
    "--target-kind",
    "target_kinds",
    multiple=True,
    help="the adapter kind the job goes to (its own, else its conversation's link)",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="every matching job, no --limit")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def jobs_cmd(
    ctx: Context,
    statuses: tuple[str, ...],
    conversation: str | None,
    since: str | None,
    reasons: tuple[str, ...],
    target_kinds: tuple[str, ...],
    limit: int,
    show_all: bool,
    as_json: bool,
) -> None:
    """List jobs, newest first, with why each one is (not) going out now: the same rules
    as `show`. Says how many match when it shows fewer."""
    now = ctx.clock.now_ms()
    since_at = _since(since, now=now) if since else None
    with adapter_registry(ctx) as registry:
        explained, total = ctx.store().list_jobs_explained(
            now=now,
            stale_after_ms=stale_after_ms(ctx.config),
            target_of=job_target(registry),
            gone=gone_here,
            where=JobFilter(
                statuses=statuses,
                conversation=conversation,
                since=since_at,
                reasons=reasons,
                target_kinds=target_kinds,
            ),
            limit=None if show_all else limit,
        )
    more = f"showing {len(explained)} of {total}; --limit N or --all for more"
    if as_json:
        click.echo(render.dumps([_job_row_json(facts, why) for facts, why in explained]))
        if len(explained) < total:
            click.echo(f"renewald: {more}", err=True)
        return
    if not explained:
        click.echo("no jobs")
        return
    click.echo(_jobs_table(explained, now))
    click.echo(more if len(explained) < total else f"{total} job{'s' if total != 1 else ''}")


def _job_row_json(facts: JobFacts, why: Explanation) -> dict[str, Any]:
    row = job_json(facts.job)
    row["target"] = {"kind": facts.target_kind, "key": facts.target_key}
    row["explain"] = why.as_dict()
    return row


def _jobs_table(explained: list[tuple[JobFacts, Explanation]], now: int) -> str:
    rows = [
        (
            j.job_id,
            j.status + (f"/{j.terminal_reason}" if j.terminal_reason else ""),
            j.local_conversation_id,
            f"{j.attempt_count}/{j.max_attempts}",
            render.short_when(j.next_attempt_at, now) if j.status == "pending" else "-",
            render.short_when(j.updated_at, now),
            why_cell(why, now),
            render.truncate(j.last_error, 40),
        )
        for j, why in ((facts.job, why) for facts, why in explained)
    ]
    return render.table(
        ("JOB", "STATUS", "CONVERSATION", "ATTEMPTS", "NEXT", "UPDATED", "WHY", "LAST ERROR"),
        rows,
    )


def why_cell(why: Explanation, now: int) -> str:
    """The deciding rule in a few words, times relative to now ("due in 4m"); "+N" when
    more rules would still hold the job once it clears."""
    text = why.summary(lambda ms: render.relative(ms, now))
    more = f" (+{len(why.also)})" if why.also else ""
    return (render.truncate(text, 60) or "-") + more


def _since(value: str, *, now: int) -> int:
    """`--since`: a duration back from now (2h) or a point in time (ISO-8601)."""
    try:
        return now - parse_age(value, option="--since")
    except UsageError:
        pass
    try:
        return datetime_to_ms(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"--since: {value!r} is neither a duration like 2h nor an ISO-8601 time"
        ) from None
