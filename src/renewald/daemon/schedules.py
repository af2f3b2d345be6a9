"""Recurring renewals: when a schedule fires, what a downtime does to it, and the tick.

The trigger maths are APScheduler 3.11's (`IntervalTrigger`, `CronTrigger.from_crontab`,
`get_next_fire_time`), time zones and DST included; renewald only stores the results as
epoch milliseconds. Missed fire times are walked the way APScheduler's own scheduler
walks them: `get_next_fire_time(previous, now)` from the last fire time on.

Two things about APScheduler 3's crontab are not what a crontab user expects, and are
settled here before APScheduler sees the expression (agronholm/apscheduler#286: fixed
only in 4.x):

- numeric days of the week count from Monday = 0, where cron has Sunday = 0 (and 7):
  the day-of-week field is rewritten with day names, which mean the same in both;
- cron fires when *either* a restricted day of month or a restricted day of week
  matches, APScheduler when both do: an expression restricting both is refused.

Everything here is pure (time comes in as `now`) except `fire_due_schedules`, the
daemon's duty, which reads and writes through the store.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from renewald.clock import iso_utc
from renewald.durations import format_duration
from renewald.logging import JobLog, emit
from renewald.store import NewJob, Store
from renewald.store.models import Schedule

_log = structlog.get_logger("renewald.schedules")

MISFIRE_POLICIES = ("coalesce", "skip", "all")
# At most this many jobs from one catch-up (`all`, and `skip` with a long grace). A
# module constant rather than a config key: config.py belongs to the lead.
MAX_CATCH_UP = 100
DEFAULT_MISFIRE_GRACE_MS = 60_000
MIN_EVERY_MS = 1_000
MAX_EVERY_MS = 366 * 86_400_000  # longer is a typo more often than a plan; cron has @yearly
# Walking more missed fires than this one by one is replaced by a look back from `now`.
SCAN_LIMIT = 10_000
# Cron fires at most once a minute: the look-back windows start at this many ms per fire.
_CRON_PERIOD_MS = 60_000


class InvalidSchedule(ValueError):
    """A trigger APScheduler cannot use, with a message for people."""


# -- triggers -------------------------------------------------------------------------

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _day_number(token: str) -> int:
    """A cron day of week as cron numbers it: 0 or 7 = Sunday, or a day name."""
    token = token.strip().lower()
    if token.isdigit():
        value = int(token)
        if value > 7:
            raise InvalidSchedule(f"day of week {token!r} is not 0-7 (0 and 7 are Sunday)")
        return value
    if token[:3] in _CRON_DAYS and len(token) == 3:
        return _CRON_DAYS.index(token)
    raise InvalidSchedule(f"day of week {token!r} is neither 0-7 nor a day name like mon")


def _day_of_week(spec: str) -> str:
    """Rewrite cron's day-of-week field with day names, which APScheduler reads as cron does."""
    if spec in ("*", "?"):
        return "*"
    days: list[int] = []
    for part in spec.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidSchedule(f"day of week step {step_text!r} is not a positive number")
            step = int(step_text)
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            lo, _, hi = base.partition("-")
            first, last = _day_number(lo), _day_number(hi)
            if first > last:
                raise InvalidSchedule(f"day of week range {base!r} runs backwards")
        else:
            first = last = _day_number(base)
            if slash:  # "1/2": from that day to the end of the week
                last = max(first, 6)
        days += [d % 7 for d in range(first, last + 1, step)]
    ordered = sorted(set(days), key=lambda d: (d - 1) % 7)  # Monday first, as APScheduler
    return ",".join(_CRON_DAYS[d] for d in ordered)


def crontab_for_apscheduler(expr: str) -> str:
    """The 5-field crontab `expr` (or @daily, @hourly, ...) as APScheduler 3 must be given it
    to fire when cron would."""
    text = " ".join(expr.split())
    text = _MACROS.get(text.lower(), text)
    fields_ = text.split(" ")
    if len(fields_) != 5:
        raise InvalidSchedule(
            f"{expr!r} has {len(fields_)} fields; a crontab expression has 5: "
            "minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, weekday = fields_
    if day not in ("*", "?") and weekday not in ("*", "?"):
        raise InvalidSchedule(
            f"{expr!r} restricts both the day of month and the day of week, which cron "
            "and APScheduler read differently (either vs both): use two schedules"
        )
    day = "*" if day == "?" else day
    return " ".join((minute, hour, day, month, _day_of_week(weekday)))


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. Europe/Berlin)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from None


def cron_trigger(expr: str, timezone: str) -> CronTrigger:
    tz = zone(timezone)
    try:
        return CronTrigger.from_crontab(crontab_for_apscheduler(expr), timezone=tz)
    except InvalidSchedule:
        raise
    except ValueError as exc:
        raise InvalidSchedule(f"{expr!r}: {exc}") from None


def interval_trigger(every_ms: int, *, anchor_ms: int) -> IntervalTrigger:
    """Fires at `anchor_ms` and every `every_ms` before and after it."""
    if every_ms < MIN_EVERY_MS:
        raise InvalidSchedule(
            f"an interval of {format_duration(every_ms / 1000)} is too short "
            f"(at least {format_duration(MIN_EVERY_MS / 1000)})"
        )
    if every_ms > MAX_EVERY_MS:
        raise InvalidSchedule(
            f"an interval of {format_duration(every_ms / 1000)} is too long "
            f"(at most {format_duration(MAX_EVERY_MS / 1000)}; use --cron @yearly)"
        )
    return IntervalTrigger(seconds=every_ms / 1000, start_date=_dt(anchor_ms), timezone=UTC)


def trigger_for(schedule: Schedule) -> BaseTrigger:
    """The schedule's trigger. An interval is anchored on the schedule's own fire times
    (its next, else its last, else one interval after it was made), so that every daemon
    computes the same grid."""
    if schedule.trigger_kind == "cron":
        if not schedule.cron:
            raise InvalidSchedule(f"schedule {schedule.schedule_id} has no cron expression")
        return cron_trigger(schedule.cron, schedule.timezone)
    if schedule.trigger_kind == "every":
        if not schedule.every_ms:
            raise InvalidSchedule(f"schedule {schedule.schedule_id} has no interval")
        anchor = schedule.next_fire_at or schedule.last_fire_at
        if anchor is None:
            anchor = schedule.created_at + schedule.every_ms
        return interval_trigger(schedule.every_ms, anchor_ms=anchor)
    raise InvalidSchedule(f"unknown trigger kind {schedule.trigger_kind!r}")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def first_fire_at_or_after(trigger: BaseTrigger, at_ms: int) -> int | None:
    """The trigger's first fire time at or after `at_ms` (None: it never fires again)."""
    found = trigger.get_next_fire_time(None, _dt(at_ms))
    return None if found is None else _ms(found)


def next_fire_after(trigger: BaseTrigger, fire_ms: int) -> int | None:
    """The fire time that follows the fire time `fire_ms`, as APScheduler's scheduler chains
    them. Guarded to move forward: APScheduler 3 has returned the same time again near DST
    changes (agronholm/apscheduler#1021), which would otherwise loop."""
    previous = _dt(fire_ms)
    found = trigger.get_next_fire_time(previous, previous)
    if found is not None and _ms(found) > fire_ms:
        return _ms(found)
    later = first_fire_at_or_after(trigger, fire_ms + 1)
    if later is not None and later <= fire_ms:
        later = first_fire_at_or_after(trigger, fire_ms + 1000)
        if later is not None and later <= fire_ms:
            raise InvalidSchedule(f"the trigger does not advance past {iso_utc(fire_ms)}")
    return later


def upcoming(trigger: BaseTrigger, first: int | None, count: int) -> list[int]:
    """`first` and the fire times that follow it, `count` in all."""
    out: list[int] = []
    f = first
    while f is not None and len(out) < count:
        out.append(f)
        f = next_fire_after(trigger, f)
    return out


def first_fire(
    *,
    trigger_kind: str,
    now: int,
    every_ms: int | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
) -> int | None:
    """When a schedule made at `now` first fires: one interval from now (APScheduler's
    default start), or the cron expression's first time after now."""
    if trigger_kind == "every":
        assert every_ms is not None
        interval_trigger(every_ms, anchor_ms=now + every_ms)  # validates
        return now + every_ms
    assert cron is not None
    return first_fire_at_or_after(cron_trigger(cron, timezone), now + 1)


def resume_fire(schedule: Schedule, *, now: int) -> int | None:
    """The next fire time of a schedule resumed at `now`: fires missed while it was paused
    are not caught up. An interval keeps its grid."""
    return first_fire_at_or_after(trigger_for(schedule), now + 1)


# -- missed fires and the misfire policy ---------------------------------------------


@dataclass(frozen=True)
class DueFires:
    """The fire times in [first, now]: the latest `keep` of them (oldest first), how many
    there were (a lower bound when `capped`), and the first fire time after now."""

    fires: tuple[int, ...]
    total: int
    capped: bool
    next_fire: int | None


def _latest(
    trigger: BaseTrigger, *, since: int, until: int, keep: int, period_ms: int
) -> tuple[int, ...]:
    """The latest `keep` fire times in [since, until], found by looking back from `until`
    in windows that grow until they hold enough fires or reach `since`."""
    span = keep * period_ms
    while True:
        lo = max(since, until - span)
        found: deque[int] = deque(maxlen=keep)
        f = first_fire_at_or_after(trigger, lo)
        while f is not None and f <= until:
            found.append(f)
            f = next_fire_after(trigger, f)
        if len(found) >= keep or lo == since:
            return tuple(found)
        span *= 8


def due_fires(
    trigger: BaseTrigger, *, first: int, now: int, keep: int, period_ms: int = _CRON_PERIOD_MS
) -> DueFires:
    """Walk the fire times from `first` (a fire time, due) up to `now`, bounded: past
    SCAN_LIMIT fires the rest of the gap is not walked but looked back into from `now`."""
    kept: deque[int] = deque(maxlen=keep)
    total = 0
    f: int | None = first
    while f is not None and f <= now and total < SCAN_LIMIT:
        kept.append(f)
        total += 1
        f = next_fire_after(trigger, f)
    if f is None or f > now:
        return DueFires(tuple(kept), total, False, f)
    tail = _latest(trigger, since=f, until=now, keep=keep, period_ms=period_ms)
    fires = (tuple(kept) + tail)[-keep:]
    return DueFires(fires, total + len(tail), True, first_fire_at_or_after(trigger, now + 1))


@dataclass(frozen=True)
class MisfireDecision:
    """Which due fire times become jobs; `dropped` counts the others."""

    fire: tuple[int, ...]
    dropped: int
    reason: str | None


def decide_misfire(
    policy: str,
    due: DueFires,
    *,
    now: int,
    grace_ms: int = DEFAULT_MISFIRE_GRACE_MS,
    max_catch_up: int = MAX_CATCH_UP,
) -> MisfireDecision:
    """The misfire policy, applied to the fire times that are due at `now`.

    - coalesce: one job, for the latest due fire time;
    - skip: only fire times no older than `grace_ms` (the on-time ones) become jobs;
    - all: each due fire time becomes a job, the latest `max_catch_up` of them at most.
    """
    total = due.total
    more = "more than " if due.capped else ""
    if policy == "coalesce":
        fire = due.fires[-1:]
        reason = f"coalesced {more}{total} due fires into the latest" if total > 1 else None
    elif policy == "skip":
        fire = tuple(f for f in due.fires if f >= now - grace_ms)[-max_catch_up:]
        late = total - len(fire)
        reason = (
            f"skipped {more}{late} fires older than the misfire grace of "
            f"{format_duration(grace_ms / 1000)}"
            if late
            else None
        )
    elif policy == "all":
        fire = due.fires[-max_catch_up:]
        reason = None
        if total > 1:
            reason = f"catching up {len(fire)} due fires"
            if total > len(fire):
                reason += (
                    f"; {more}{total - len(fire)} older ones dropped "
                    f"(at most {max_catch_up} at once)"
                )
    else:
        raise InvalidSchedule(f"unknown misfire policy {policy!r}")
    return MisfireDecision(fire=tuple(fire), dropped=total - len(fire), reason=reason)


# -- the jobs a fire makes ------------------------------------------------------------


def fire_job_id(schedule_id: str, fire_ms: int) -> str:
    return f"schedule:{schedule_id}:{fire_ms}"


def fire_message_id(schedule_id: str, fire_ms: int) -> str:
    """Synthetic (`renewald:`-prefixed, DESIGN §1) and the same on every daemon."""
    return f"renewald:schedule:{schedule_id}:{fire_ms}"


def jitter_offset(schedule_id: str, fire_ms: int, jitter_ms: int) -> int:
    """A delay in [0, jitter_ms] drawn from a hash of the fire, not a random generator, so
    that every daemon that computes the job computes the same one."""
    if jitter_ms <= 0:
        return 0
    digest = hashlib.sha256(f"{schedule_id}:{fire_ms}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (jitter_ms + 1)


def jobs_for(schedule: Schedule, fire_times: Sequence[int]) -> list[NewJob]:
    return [
        NewJob(
            job_id=fire_job_id(schedule.schedule_id, f),
            local_conversation_id=schedule.local_conversation_id,
            message_id=fire_message_id(schedule.schedule_id, f),
            payload=schedule.payload,
            payload_kind=schedule.payload_kind,
            target_snapshot=schedule.target_snapshot,
            target_kind=schedule.target_kind,
            max_attempts=schedule.max_attempts,
            next_attempt_at=f + jitter_offset(schedule.schedule_id, f, schedule.jitter_ms),
        )
        for f in fire_times
    ]


@dataclass(frozen=True)
class FirePlan:
    """What a due schedule should do at `now`: the jobs to create, where it goes next."""

    schedule: Schedule
    due: DueFires
    decision: MisfireDecision
    jobs: tuple[NewJob, ...]

    @property
    def last_fire_at(self) -> int:
        return self.due.fires[-1]

    @property
    def next_fire_at(self) -> int | None:
        return self.due.next_fire


def plan_fires(schedule: Schedule, *, now: int) -> FirePlan:
    """Plan a due schedule (`next_fire_at <= now`); raises InvalidSchedule for a row whose
    trigger APScheduler cannot use."""
    assert schedule.next_fire_at is not None and schedule.next_fire_at <= now
    trigger = trigger_for(schedule)
    period = schedule.every_ms if schedule.trigger_kind == "every" else None
    due = due_fires(
        trigger,
        first=schedule.next_fire_at,
        now=now,
        keep=MAX_CATCH_UP,
        period_ms=period or _CRON_PERIOD_MS,
    )
    grace = schedule.misfire_grace_ms
    decision = decide_misfire(
        schedule.misfire,
        due,
        now=now,
        grace_ms=DEFAULT_MISFIRE_GRACE_MS if grace is None else grace,
    )
    return FirePlan(schedule, due, decision, tuple(jobs_for(schedule, decision.fire)))


# -- the daemon's duty ----------------------------------------------------------------


@dataclass
class TickResult:
    """What one tick did: jobs created, jobs found already there (a fence was bypassed),
    schedules gated, schedules another daemon fired first."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: int = 0
    raced: int = 0
    invalid: int = 0
    dropped: int = 0  # fires a misfire policy dropped
    earliest_job_at: int | None = None


def fire_due_schedules(
    *,
    store: Store,
    job_log: JobLog,
    now: int,
    owner: str,
    limit: int = 100,
    max_batches: int = 10,
) -> TickResult:
    """Turn every due fire of every enabled schedule into jobs, once across all daemons."""
    result = TickResult()
    for _ in range(max_batches):
        due = store.due_schedules(now=now, limit=limit)
        for schedule in due:
            _fire_one(store, job_log, schedule, now, owner, result)
        if len(due) < limit:
            break
    job_log.flush()
    return result


def _fire_one(
    store: Store,
    job_log: JobLog,
    schedule: Schedule,
    now: int,
    owner: str,
    result: TickResult,
) -> None:
    sid = schedule.schedule_id
    assert schedule.next_fire_at is not None
    try:
        plan = plan_fires(schedule, now=now)
    except (ValueError, OverflowError) as exc:  # InvalidSchedule, or dates past year 9999
        # A row this renewald cannot read (written by hand, or by a newer version): park
        # it (no next fire time) rather than fail on it at every tick.
        if store.advance_schedule(
            schedule_id=sid,
            seen=schedule.next_fire_at,
            next_fire_at=None,
            last_fire_at=schedule.last_fire_at,
            now=now,
        ):
            result.invalid += 1
            emit(
                job_log,
                "schedule.invalid",
                now_ms=now,
                level="error",
                job_id=fire_job_id(sid, schedule.next_fire_at),
                schedule=sid,
                error=str(exc),
                owner=owner,
            )
        return
    decision = plan.decision
    latest_id = fire_job_id(sid, plan.last_fire_at)
    common: dict[str, Any] = {
        "schedule": sid,
        "conversation": schedule.local_conversation_id,
        "next_fire_at": plan.next_fire_at,
        "owner": owner,
    }
    if not plan.jobs:  # the policy dropped every due fire
        if store.advance_schedule(
            schedule_id=sid,
            seen=schedule.next_fire_at,
            next_fire_at=plan.next_fire_at,
            last_fire_at=plan.last_fire_at,
            now=now,
        ):
            _log_misfire(job_log, plan, latest_id, now, common)
            result.dropped += plan.decision.dropped
        else:
            result.raced += 1
        return
    outcome = store.fire_schedule(
        schedule=schedule,
        new_jobs=plan.jobs,
        next_fire_at=plan.next_fire_at,
        last_fire_at=plan.last_fire_at,
        now=now,
    )
    if outcome.status == "raced":
        result.raced += 1
        _log.debug("schedule.raced", schedule=sid, fire_at=iso_utc(plan.last_fire_at))
        return
    if outcome.status == "skipped":
        result.skipped += 1
        emit(
            job_log,
            "schedule.skipped",
            now_ms=now,
            job_id=latest_id,
            fires=plan.due.total,
            reason=outcome.reason,
            **common,
        )
        return
    _log_misfire(job_log, plan, latest_id, now, common)
    result.dropped += decision.dropped
    for fire_ms, job in zip(decision.fire, plan.jobs, strict=True):
        assert job.next_attempt_at is not None
        fire_at = iso_utc(fire_ms)
        if job.job_id in outcome.created:
            result.created.append(job.job_id)
            if result.earliest_job_at is None or job.next_attempt_at < result.earliest_job_at:
                result.earliest_job_at = job.next_attempt_at
            emit(
                job_log,
                "schedule.fired",
                now_ms=now,
                level="debug",
                job_id=job.job_id,
                fire_at=fire_at,
                next_attempt_at=job.next_attempt_at,
                **common,
            )
        else:
            result.existing.append(job.job_id)
            emit(
                job_log,
                "schedule.duplicate",
                now_ms=now,
                level="warning",
                job_id=job.job_id,
                fire_at=fire_at,
                reason="a job for this fire time already exists",
                **common,
            )


def _log_misfire(
    job_log: JobLog, plan: FirePlan, latest_id: str, now: int, common: Mapping[str, Any]
) -> None:
    decision = plan.decision
    if decision.reason is None:
        return
    counts: dict[str, Any] = {
        "policy": plan.schedule.misfire,
        "missed": plan.due.total,
        "fired": len(decision.fire),
        "dropped": decision.dropped,
    }
    emit(
        job_log,
        "schedule.misfire",
        now_ms=now,
        job_id=latest_id,
        reason=decision.reason,
        **counts,
        **common,
    )
