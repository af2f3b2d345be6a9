"""Schedules: recurring renewals (add, list, show, pause, resume, remove)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from renewald import render
from renewald.cli.app import Context, _json_or_text, cli, parse_target, pass_ctx
from renewald.cli.jobs import (
    CONVERSATION,
    MAX_ATTEMPTS,
    PAYLOAD_KIND,
    TARGET,
    TARGET_KIND,
    check_new_job,
)
from renewald.clock import iso_utc
from renewald.daemon.schedules import (
    DEFAULT_MISFIRE_GRACE_MS,
    MISFIRE_POLICIES,
    InvalidSchedule,
    first_fire,
    resume_fire,
    trigger_for,
    upcoming,
    zone,
)
from renewald.durations import format_duration, parse_duration
from renewald.errors import UsageError
from renewald.store.models import Schedule

SHOW_NEXT = 5


@cli.group("schedules")
def schedules_group() -> None:
    """Recurring renewals: a job every N hours, or on a cron expression."""


def _duration_ms(value: str, option: str, *, allow_zero: bool) -> int:
    try:
        ms = round(parse_duration(value) * 1000)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if ms <= 0 and not allow_zero:
        raise UsageError(f"{option}: must be longer than zero")
    return ms


def _checked(option: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kwargs)
    except InvalidSchedule as exc:
        raise UsageError(f"{option}: {exc}") from None


def _trigger(
    every: str | None, cron: str | None, timezone: str | None, *, now: int
) -> tuple[int | None, int]:
    """`--every` in ms (None for --cron) and the first fire time; UsageError if unusable."""
    if every is not None and cron is not None:
        raise UsageError("give either --every or --cron, not both")
    if every is None and cron is None:
        raise UsageError('give --every DURATION (e.g. 6h) or --cron EXPR (e.g. "0 9 * * 1-5")')
    if every is not None and timezone is not None:
        raise UsageError("--tz: only applies to --cron (an interval is the same in every zone)")
    if every is not None:
        every_ms = _duration_ms(every, "--every", allow_zero=False)
        return every_ms, _checked(
            "--every", first_fire, trigger_kind="every", every_ms=every_ms, now=now
        )
    assert cron is not None
    tz = timezone or "UTC"
    _checked("--tz", zone, tz)
    next_fire = _checked("--cron", first_fire, trigger_kind="cron", cron=cron, timezone=tz, now=now)
    if next_fire is None:
        raise UsageError(f"--cron: {cron!r} never fires")
    return None, next_fire


@schedules_group.command("add")
@CONVERSATION
@click.option("--every", "every", metavar="DURATION", help="fire every DURATION, e.g. 6h")
@click.option("--cron", "cron", metavar="EXPR", help='a crontab expression, e.g. "0 9 * * 1-5"')
@click.option("--tz", "timezone", metavar="ZONE", help="time zone of --cron (default UTC)")
@click.option("--payload", required=True, help="the message each fire delivers")
@PAYLOAD_KIND
@click.option("--jitter", default="0s", show_default=True, help="delay each job by up to this")
@click.option(
    "--misfire", type=click.Choice(MISFIRE_POLICIES), default="coalesce", show_default=True
)
@click.option(
    "--misfire-grace",
    metavar="DURATION",
    help=f"with --misfire skip: how late a fire may still be made "
    f"(default {format_duration(DEFAULT_MISFIRE_GRACE_MS / 1000)})",
)
@click.option("--allow-overlap", is_flag=True, help="fire even while the previous job is pending")
@TARGET_KIND
@TARGET
@MAX_ATTEMPTS
@click.option("--id", "schedule_id", help="schedule id (default: a new random id)")
@click.option("--json", "as_json", is_flag=True, help="print the schedule as JSON")
@pass_ctx
def add_cmd(
    ctx: Context,
    conversation: str,
    every: str | None,
    cron: str | None,
    timezone: str | None,
    payload: str,
    payload_kind: str,
    jitter: str,
    misfire: str,
    misfire_grace: str | None,
    allow_overlap: bool,
    target_kind: str | None,
    target_json: str | None,
    max_attempts: int,
    schedule_id: str | None,
    as_json: bool,
) -> None:
    """Add a schedule: one renewal job for the conversation at every fire time."""
    now = ctx.clock.now_ms()
    # As `enqueue` checks them: a bad target kind is refused now, not at the first fire.
    check_new_job(ctx, conversation, payload, payload_kind, target_kind)
    if schedule_id is not None and not schedule_id.strip():
        raise UsageError("--id: must not be empty")
    tz = timezone or "UTC"
    every_ms, next_fire = _trigger(every, cron, timezone, now=now)
    schedule = Schedule(
        schedule_id=schedule_id or uuid.uuid4().hex[:12],
        local_conversation_id=conversation,
        trigger_kind="every" if every is not None else "cron",
        every_ms=every_ms,
        cron=" ".join(cron.split()) if cron is not None else None,
        timezone=tz,
        payload=payload,
        payload_kind=payload_kind,
        target_kind=target_kind,
        target_snapshot=parse_target(target_json),
        max_attempts=max_attempts,
        jitter_ms=_duration_ms(jitter, "--jitter", allow_zero=True),
        misfire=misfire,
        misfire_grace_ms=(
            _duration_ms(misfire_grace, "--misfire-grace", allow_zero=True)
            if misfire_grace is not None
            else None
        ),
        allow_overlap=allow_overlap,
        enabled=True,
        next_fire_at=next_fire,
        last_fire_at=None,
        last_job_id=None,
        created_at=now,
        updated_at=now,
    )
    added = ctx.store().add_schedule(schedule=schedule)
    if as_json:
        click.echo(render.dumps(schedule_json(added)))
    else:
        click.echo(added.schedule_id)


@schedules_group.command("list")
@click.option("--conversation")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_cmd(ctx: Context, conversation: str | None, as_json: bool) -> None:
    """List schedules, oldest first."""
    found = ctx.store().list_schedules(conversation=conversation, limit=10_000)
    if as_json:
        click.echo(render.dumps([schedule_json(s) for s in found]))
        return
    if not found:
        click.echo("no schedules")
        return
    now = ctx.clock.now_ms()
    rows = [
        (
            s.schedule_id,
            s.local_conversation_id,
            describe_trigger(s),
            s.misfire,
            "enabled" if s.enabled else "paused",
            render.short_when(s.next_fire_at, now) if s.enabled else "-",
            s.last_job_id,
        )
        for s in found
    ]
    click.echo(
        render.table(
            ("SCHEDULE", "CONVERSATION", "TRIGGER", "MISFIRE", "STATE", "NEXT", "LAST JOB"), rows
        )
    )


@schedules_group.command("show")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show_cmd(ctx: Context, schedule_id: str, as_json: bool) -> None:
    """The schedule and its next five fire times."""
    schedule = _get(ctx, schedule_id)
    now = ctx.clock.now_ms()
    problem = None
    try:
        trigger = trigger_for(schedule)
        first = schedule.next_fire_at if schedule.enabled else resume_fire(schedule, now=now)
        nexts = upcoming(trigger, first, SHOW_NEXT)
    except InvalidSchedule as exc:
        problem, nexts = str(exc), []
    if as_json:
        data = schedule_json(schedule)
        data["next_fires"] = [
            {"at": f, "utc": iso_utc(f), "local": _local(f, schedule).isoformat()} for f in nexts
        ]
        if problem:
            data["error"] = problem
        click.echo(render.dumps(data))
        return
    lines = [
        f"schedule     {schedule.schedule_id}",
        f"state        {'enabled' if schedule.enabled else 'paused'}",
        f"conversation {schedule.local_conversation_id}",
        f"trigger      {describe_trigger(schedule)}",
        f"misfire      {describe_misfire(schedule)}",
        f"overlap      {'allowed' if schedule.allow_overlap else 'not while the last job waits'}",
        f"jitter       {_duration_text(schedule.jitter_ms) if schedule.jitter_ms else 'none'}",
        f"attempts     at most {schedule.max_attempts} per job",
        f"last fire    {render.when(schedule.last_fire_at, now)}",
        f"last job     {schedule.last_job_id or '-'}",
        f"created      {render.when(schedule.created_at, now)}",
    ]
    if schedule.target_kind or schedule.target_snapshot:
        target = json.dumps(_json_or_text(schedule.target_snapshot))
        lines.append(f"target       {schedule.target_kind or '(from link)'} {target}")
    lines.append(f"payload      ({schedule.payload_kind}) {render.truncate(schedule.payload, 200)}")
    click.echo("\n".join(lines))
    if problem:
        click.echo(f"\nthis schedule cannot fire: {problem}")
        return
    if not nexts:
        click.echo("\nno further fire times")
        return
    heading = "next fires" if schedule.enabled else "next fires, if resumed now"
    click.echo(f"\n{heading}")
    for f in nexts:
        click.echo(f"  {_when(f, schedule, now)}")


@schedules_group.command("pause")
@click.argument("schedule_id")
@pass_ctx
def pause_cmd(ctx: Context, schedule_id: str) -> None:
    """Stop firing; nothing is caught up on resume."""
    _get(ctx, schedule_id)
    changed = ctx.store().pause_schedule(schedule_id, now=ctx.clock.now_ms())
    click.echo(f"{'paused' if changed else 'already paused'} {schedule_id}")


@schedules_group.command("resume")
@click.argument("schedule_id")
@pass_ctx
def resume_cmd(ctx: Context, schedule_id: str) -> None:
    """Fire again, from the next fire time after now."""
    schedule = _get(ctx, schedule_id)
    if schedule.enabled:
        click.echo(f"already enabled {schedule_id}")
        return
    now = ctx.clock.now_ms()
    try:
        next_fire = resume_fire(schedule, now=now)
    except InvalidSchedule as exc:
        raise UsageError(f"schedule {schedule_id} cannot fire: {exc}") from None
    changed = ctx.store().resume_schedule(schedule_id, next_fire_at=next_fire, now=now)
    if not changed:
        click.echo(f"already enabled {schedule_id}")
        return
    when = _when(next_fire, schedule, now) if next_fire is not None else "never"
    click.echo(f"resumed {schedule_id}; next fire {when}")


@schedules_group.command("remove")
@click.argument("schedule_id")
@pass_ctx
def remove_cmd(ctx: Context, schedule_id: str) -> None:
    """Delete the schedule; jobs it already made stay."""
    if not ctx.store().remove_schedule(schedule_id):
        raise UsageError(f"no schedule {schedule_id}")
    click.echo(f"removed {schedule_id}")


def _get(ctx: Context, schedule_id: str) -> Schedule:
    schedule = ctx.store().get_schedule(schedule_id)
    if schedule is None:
        raise UsageError(f"no schedule {schedule_id}")
    return schedule


def _duration_text(ms: int) -> str:
    return format_duration(ms / 1000)


def describe_misfire(schedule: Schedule) -> str:
    if schedule.misfire != "skip":
        return schedule.misfire
    grace = schedule.misfire_grace_ms
    return f"skip (grace {_duration_text(DEFAULT_MISFIRE_GRACE_MS if grace is None else grace)})"


def describe_trigger(schedule: Schedule) -> str:
    if schedule.trigger_kind == "every" and schedule.every_ms:
        return f"every {_duration_text(schedule.every_ms)}"
    return f"cron {schedule.cron} {schedule.timezone}"


def _local(ms: int, schedule: Schedule) -> datetime:
    """A fire time in the schedule's zone for cron, in this host's local time for intervals."""
    if schedule.trigger_kind == "cron":
        try:
            return datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(schedule.timezone))
        except (KeyError, ValueError):
            pass
    return datetime.fromtimestamp(ms / 1000).astimezone()


def _when(ms: int, schedule: Schedule, now: int) -> str:
    return f"{_local(ms, schedule):%Y-%m-%d %H:%M:%S %Z}  ({render.relative(ms, now)})"


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    data = schedule.as_dict()
    data["target_snapshot"] = _json_or_text(schedule.target_snapshot)
    return data
