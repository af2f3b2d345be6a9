"""Operator actions on jobs: `retry` (one failed job, or many with --failed) and `cancel`,
each recorded as an operator attempt row and a line in the job log."""

from __future__ import annotations

import click

from renewald import render
from renewald.cli.app import Context, cli, job_json, operator_id, parse_age, pass_ctx
from renewald.errors import UsageError
from renewald.logging import JobLog
from renewald.store import Job
from renewald.store.attempts import CANCEL_REASON
from renewald.store.ops import RETRY_REASON, FailedJobFilter, OperatorAction


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
    if job_id is not None:
        _retry_one(ctx, job_id, now=now, dry_run=dry_run, as_json=as_json)
        return
    # An operator cancelled those on purpose: they come back only when named.
    where = FailedJobFilter(
        since=since_at,
        conversation=conversation,
        reasons=reasons,
        exclude_reasons=() if reasons else ("cancelled",),
    )
    if dry_run:
        _echo_retried(ctx.store().failed_job_ids(where=where), dry_run=True, as_json=as_json)
        return
    job_log = _job_log(ctx)
    try:
        action = _action(job_log, now)
        retried = ctx.store().retry_failed(now=now, action=action, where=where)
        for r in retried:
            _log_retried(job_log, r.job, r.attempt_id, action, now)
    finally:
        job_log.close()
    _echo_retried([r.job.job_id for r in retried], dry_run=False, as_json=as_json)


def _echo_retried(ids: list[str], *, dry_run: bool, as_json: bool) -> None:
    """What `retry --failed` retried, or with --dry-run would retry."""
    if as_json:
        click.echo(render.dumps({"dry_run": dry_run, "count": len(ids), "job_ids": ids}))
        return
    jobs = f"{len(ids)} failed job{'s' if len(ids) != 1 else ''}"
    if not dry_run:
        click.echo(f"retried {jobs}")
        return
    click.echo(f"would retry {jobs}")
    for i in ids:
        click.echo(f"  {i}")


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
