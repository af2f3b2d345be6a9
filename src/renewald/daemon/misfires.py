"""Missed fire times and the misfire policy: which due fires of a schedule become jobs.

Pure: the trigger and `now` come in, fire times (epoch ms) come out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger

from renewald.daemon.triggers import InvalidSchedule, first_fire_at_or_after, next_fire_after
from renewald.durations import format_duration

MISFIRE_POLICIES = ("coalesce", "skip", "all")
# At most this many jobs from one catch-up (`all`, and `skip` with a long grace). A
# module constant rather than a config key: config.py belongs to the lead.
MAX_CATCH_UP = 100
DEFAULT_MISFIRE_GRACE_MS = 60_000
# Walking more missed fires than this one by one is replaced by a look back from `now`.
SCAN_LIMIT = 10_000
# Cron fires at most once a minute: the look-back windows start at this many ms per fire.
CRON_PERIOD_MS = 60_000


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
    trigger: BaseTrigger, *, first: int, now: int, keep: int, period_ms: int = CRON_PERIOD_MS
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
