"""When a schedule fires: its trigger (APScheduler 3.11's), the next fire times, the first.

The trigger maths are APScheduler's (`IntervalTrigger`, `CronTrigger.from_crontab`,
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

Everything here is pure: time comes in as `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from renewald.clock import iso_utc
from renewald.durations import format_duration
from renewald.store.models import Schedule

MIN_EVERY_MS = 1_000
MAX_EVERY_MS = 366 * 86_400_000  # longer is a typo more often than a plan; cron has @yearly


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
