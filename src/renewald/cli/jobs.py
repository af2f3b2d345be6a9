"""Jobs: enqueue, list, show (and why it is held back), retry, cancel."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

import click

from renewald import render
from renewald.adapters import AdapterRegistry
from renewald.cli.app import (
    STATUSES,
    Context,
    _json_or_text,
    check_payload,
    cli,
    job_json,
    operator_id,
    parse_age,
    parse_target,
    parse_when,
    pass_ctx,
    stale_after_ms,
)
from renewald.cli.daemons import gone_here
from renewald.clock import datetime_to_ms, iso_utc
from renewald.daemon.target import target_of
from renewald.errors import UsageError
from renewald.logging import JobLog
from renewald.store import ClaimedJob, Job, NewJob
from renewald.store.ops import CANCEL_REASON, RETRY_REASON, Explanation, OperatorAction


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
    check_payload(payload, payload_kind)
    if target_kind is not None:
        _check_target_kind(ctx, target_kind)
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


def _check_target_kind(ctx: Context, kind: str) -> None:
    """A kind no adapter serves would only fail at delivery: refuse it now, naming the
    kinds there are (the built-in ones and those registered through entry points)."""
    registry = AdapterRegistry(ctx.config.adapters)
    try:
        kinds = registry.kinds()
    finally:
        registry.close()
    if kind not in kinds:
        raise UsageError(f"--target-kind: unknown kind {kind!r} (known: {', '.join(kinds)})")


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
    registry = AdapterRegistry(ctx.config.adapters)
    try:
        explained, total = ctx.store().list_jobs_explained(
            now=now,
            stale_after_ms=stale_after_ms(ctx.config),
            target_of=_target_of(registry),
            gone=gone_here,
            statuses=statuses,
            conversation=conversation,
            since=since_at,
            reasons=reasons,
            target_kinds=target_kinds,
            limit=None if show_all else limit,
        )
    finally:
        registry.close()
    if as_json:
        data = []
        for facts, why in explained:
            row = job_json(facts.job)
            row["target"] = {"kind": facts.target_kind, "key": facts.target_key}
            row["explain"] = why.as_dict()
            data.append(row)
        click.echo(render.dumps(data))
        if len(explained) < total:
            shown = f"showing {len(explained)} of {total}; --limit N or --all for more"
            click.echo(f"renewald: {shown}", err=True)
        return
    if not explained:
        click.echo("no jobs")
        return
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
    click.echo(
        render.table(
            ("JOB", "STATUS", "CONVERSATION", "ATTEMPTS", "NEXT", "UPDATED", "WHY", "LAST ERROR"),
            rows,
        )
    )
    if len(explained) < total:
        click.echo(f"showing {len(explained)} of {total}; --limit N or --all for more")
    else:
        click.echo(f"{total} job{'s' if total != 1 else ''}")


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


def _target_of(
    registry: AdapterRegistry,
) -> Callable[[ClaimedJob], tuple[str | None, str | None]]:
    """The job's adapter kind and breaker key, as the daemon would compute them."""
    return lambda claimed: target_of(claimed, registry)


def _explain_lines(why: Explanation, now: int) -> list[str]:
    def line(detail: str, until: int | None) -> str:
        """The detail, with "(in 4m)" after the time it names (the finished line says when)."""
        if until is None or why.state == "finished":
            return detail
        stamp = iso_utc(until)
        hint = f"{stamp} ({render.relative(until, now)})"
        return detail.replace(stamp, hint, 1) if stamp in detail else f"{detail} ({hint})"

    lines = [f"explain      {why.state}: {line(why.detail, why.until)}"]
    lines += [f"also         {line(h.detail, h.until)}" for h in why.also]
    return lines


@cli.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show_cmd(ctx: Context, job_id: str, as_json: bool) -> None:
    """The job, its attempts, and why it is (not) running."""
    store = ctx.store()
    now = ctx.clock.now_ms()
    registry = AdapterRegistry(ctx.config.adapters)
    try:
        found = store.explain_job(
            job_id,
            now=now,
            stale_after_ms=stale_after_ms(ctx.config),
            target_of=_target_of(registry),
            gone=gone_here,
        )
    finally:
        registry.close()
    if found is None:
        raise UsageError(f"no job {job_id}")
    facts, why = found
    job = facts.job
    # Chronological: an operator's retry starts the attempt numbers again at 1.
    attempts = sorted(
        store.list_attempts(job_id), key=lambda a: (a.started_at, a.finished_at, a.attempt_no)
    )
    if as_json:
        data = job_json(job)
        data["explain"] = why.as_dict()
        data["target"] = {"kind": facts.target_kind, "key": facts.target_key}
        data["attempts"] = [a.as_dict() for a in attempts]
        click.echo(render.dumps(data))
        return
    lines = [
        f"job          {job.job_id}",
        f"status       {job.status}" + (f" ({job.terminal_reason})" if job.terminal_reason else ""),
        *_explain_lines(why, now),
        f"conversation {job.local_conversation_id}"
        + (
            f" ({facts.conversation.automation_status})"
            if facts.conversation is not None
            else " (no conversation row)"
        ),
        f"message      {job.message_id}",
        f"attempts     {job.attempt_count} of {job.max_attempts}",
        f"next attempt {render.when(job.next_attempt_at, now)}",
        f"created      {render.when(job.created_at, now)}",
        f"updated      {render.when(job.updated_at, now)}",
    ]
    if job.status == "running" and job.started_at is not None:
        lines.append(
            f"running      for {render.age(job.started_at, now)}, attempt {job.attempt_count}"
            f" (started {render.when(job.started_at, now)})"
        )
    if job.finished_at is not None:
        lines.append(f"finished     {render.when(job.finished_at, now)}")
    if job.deadline_at is not None:
        lines.append(f"deadline     {render.when(job.deadline_at, now)}")
    if job.lease_owner:
        lines.append(
            f"leased by    {job.lease_owner} until {render.when(job.lease_expires_at, now)}"
        )
    if facts.target_kind or job.target_snapshot:
        kind = facts.target_kind or "(none)"
        key = f" key {facts.target_key}" if facts.target_key else ""
        target = f" {json.dumps(_json_or_text(job.target_snapshot))}" if job.target_snapshot else ""
        lines.append(f"target       {kind}{key}{target}")
    if job.last_error:
        lines.append(f"last error   {job.last_error}")
    lines += [f"malformed    {p}" for p in job.problems]
    if job.log_path:
        lines.append(f"log          {job.log_path}")
    payload = render.truncate(job.payload, 200)
    lines.append(f"payload      ({job.payload_kind}) {payload}")
    click.echo("\n".join(render.line(text) for text in lines))
    if attempts:
        click.echo("\nattempts")
        rows = [
            (
                a.attempt_no,
                a.outcome,
                render.when(a.started_at, now),
                render.took(a.duration_ms),
                a.adapter or a.lease_owner,
                a.decision,
                render.truncate(a.decision_reason, 50),
                render.truncate(a.error_message, 50),
            )
            for a in attempts
        ]
        click.echo(
            render.table(
                ("#", "OUTCOME", "STARTED", "TOOK", "BY", "DECISION", "REASON", "ERROR"), rows
            )
        )


def _job_log(ctx: Context) -> JobLog:
    return JobLog(ctx.config.logging.dir)


def _action(job_log: JobLog, now: int) -> OperatorAction:
    return OperatorAction(operator=operator_id(), log_path=job_log.path_for(now))


def _log_retried(
    job_log: JobLog, job: Job, attempt_id: str, action: OperatorAction, now: int
) -> None:
    job_log.log(
        "job.retried",
        now_ms=now,
        job_id=job.job_id,
        attempt_id=attempt_id,
        conversation=job.local_conversation_id,
        outcome="operator_retry",
        next_attempt_at=job.next_attempt_at,
        reason=RETRY_REASON,
        owner=action.operator,
    )


@cli.command("retry")
@click.argument("job_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="retry every failed job selected")
@click.option("--since", help="with --failed: failed within this long, e.g. 2h")
@click.option("--conversation", help="with --failed: only this conversation's jobs")
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    help="with --failed: only these terminal reasons (default: all but cancelled)",
)
@click.option("--dry-run", is_flag=True, help="say what would be retried, change nothing")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def retry_cmd(
    ctx: Context,
    job_id: str | None,
    all_failed: bool,
    since: str | None,
    conversation: str | None,
    reasons: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Put a failed job (or, with --failed, many) back to pending, due now, with a fresh
    attempt budget. Recorded as an operator attempt and a log line."""
    if (job_id is None) == (not all_failed):
        raise UsageError(
            "retry: give one JOB or --failed, not both"
            if job_id
            else "retry: give a JOB or --failed"
        )
    if job_id is not None and (since or conversation or reasons):
        raise UsageError("retry: --since, --conversation and --reason go with --failed")
    now = ctx.clock.now_ms()
    since_at = now - parse_age(since, option="--since") if since else None
    store = ctx.store()
    if job_id is not None:
        _retry_one(ctx, job_id, now=now, dry_run=dry_run, as_json=as_json)
        return
    # An operator cancelled those on purpose: they come back only when named.
    exclude = () if reasons else ("cancelled",)
    if dry_run:
        ids = store.failed_job_ids(
            since=since_at, conversation=conversation, reasons=reasons, exclude_reasons=exclude
        )
        if as_json:
            click.echo(render.dumps({"dry_run": True, "count": len(ids), "job_ids": ids}))
            return
        click.echo(f"would retry {len(ids)} failed job{'s' if len(ids) != 1 else ''}")
        for i in ids:
            click.echo(f"  {i}")
        return
    job_log = _job_log(ctx)
    try:
        action = _action(job_log, now)
        retried = store.retry_failed(
            now=now,
            action=action,
            since=since_at,
            conversation=conversation,
            reasons=reasons,
            exclude_reasons=exclude,
        )
        for r in retried:
            _log_retried(job_log, r.job, r.attempt_id, action, now)
    finally:
        job_log.close()
    if as_json:
        click.echo(
            render.dumps(
                {
                    "dry_run": False,
                    "count": len(retried),
                    "job_ids": [r.job.job_id for r in retried],
                }
            )
        )
        return
    click.echo(f"retried {len(retried)} failed job{'s' if len(retried) != 1 else ''}")


def _retry_one(ctx: Context, job_id: str, *, now: int, dry_run: bool, as_json: bool) -> None:
    store = ctx.store()
    job = store.get_job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id}")
    if job.status != "failed":
        raise UsageError(f"job {job_id} is {job.status}, not failed: only failed jobs are retried")
    if dry_run:
        if as_json:
            click.echo(render.dumps({"dry_run": True, "count": 1, "job_ids": [job_id]}))
        else:
            click.echo(f"would retry job {job_id} (failed/{job.terminal_reason or '-'})")
        return
    job_log = _job_log(ctx)
    try:
        action = _action(job_log, now)
        retried = store.retry_job(job_id, now=now, action=action)
        if retried is None:  # it changed between the check and the write
            raise UsageError(f"job {job_id} is no longer failed: nothing retried")
        _log_retried(job_log, retried.job, retried.attempt_id, action, now)
    finally:
        job_log.close()
    if as_json:
        data = job_json(retried.job)
        data["attempt_id"] = retried.attempt_id
        click.echo(render.dumps(data))
        return
    click.echo(
        f"job {job_id} retried: pending, due now, attempts 0 of {retried.job.max_attempts} "
        f"(was failed/{retried.previous_reason or '-'})"
    )


@cli.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def cancel_cmd(ctx: Context, job_id: str, as_json: bool) -> None:
    """End a job as failed/cancelled: a pending one at once, a running one when its attempt
    returns (its result cannot revive it)."""
    store = ctx.store()
    now = ctx.clock.now_ms()
    job_log = _job_log(ctx)
    try:
        action = _action(job_log, now)
        done = store.cancel_job(job_id, now=now, action=action)
        if done is None:
            raise UsageError(f"no job {job_id}")
        job = done.job
        if done.result == "finished":
            what = job.status + (f"/{job.terminal_reason}" if job.terminal_reason else "")
            raise UsageError(f"job {job_id} is already finished ({what})")
        if done.result in ("cancelled", "cancelling"):
            job_log.log(
                "job.cancelled" if done.result == "cancelled" else "job.cancel_requested",
                now_ms=now,
                job_id=job_id,
                attempt_id=done.attempt_id,
                conversation=job.local_conversation_id,
                outcome="cancelled" if done.result == "cancelled" else None,
                status=job.status,
                reason=CANCEL_REASON,
                owner=action.operator,
                lease_owner=job.lease_owner,
            )
    finally:
        job_log.close()
    if as_json:
        data = job_json(job)
        data["result"] = done.result
        data["attempt_id"] = done.attempt_id
        click.echo(render.dumps(data))
        return
    if done.result == "cancelled":
        click.echo(f"job {job_id} cancelled: failed/cancelled")
    elif done.result == "cancelling":
        click.echo(
            f"job {job_id} is running (leased by {job.lease_owner} until "
            f"{render.when(job.lease_expires_at, now)}): marked cancelled, it ends "
            "failed/cancelled when its attempt returns"
        )
    else:
        click.echo(f"job {job_id} is already being cancelled")
