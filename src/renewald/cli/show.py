"""`renewald show`: one job, its attempts, and why it is (not) going out now."""

from __future__ import annotations

import json

import click

from renewald import render
from renewald.cli.app import Context, _json_or_text, cli, job_json, pass_ctx, stale_after_ms
from renewald.cli.daemons import gone_here
from renewald.cli.jobs import adapter_registry, job_target
from renewald.clock import iso_utc
from renewald.errors import UsageError
from renewald.store import Attempt
from renewald.store.explain import Explanation
from renewald.store.facts import JobFacts


@cli.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show_cmd(ctx: Context, job_id: str, as_json: bool) -> None:
    """The job, its attempts, and why it is (not) running."""
    store = ctx.store()
    now = ctx.clock.now_ms()
    with adapter_registry(ctx) as registry:
        found = store.explain_job(
            job_id,
            now=now,
            stale_after_ms=stale_after_ms(ctx.config),
            target_of=job_target(registry),
            gone=gone_here,
        )
    if found is None:
        raise UsageError(f"no job {job_id}")
    facts, why = found
    # Chronological: an operator's retry starts the attempt numbers again at 1.
    attempts = sorted(
        store.list_attempts(job_id), key=lambda a: (a.started_at, a.finished_at, a.attempt_no)
    )
    if as_json:
        data = job_json(facts.job)
        data["explain"] = why.as_dict()
        data["target"] = {"kind": facts.target_kind, "key": facts.target_key}
        data["attempts"] = [a.as_dict() for a in attempts]
        click.echo(render.dumps(data))
        return
    click.echo("\n".join(render.line(text) for text in _job_lines(facts, why, now)))
    if attempts:
        click.echo("\nattempts")
        click.echo(_attempts_table(attempts, now))


def _job_lines(facts: JobFacts, why: Explanation, now: int) -> list[str]:
    job = facts.job
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
    return lines


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


def _attempts_table(attempts: list[Attempt], now: int) -> str:
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
    return render.table(
        ("#", "OUTCOME", "STARTED", "TOOK", "BY", "DECISION", "REASON", "ERROR"), rows
    )
