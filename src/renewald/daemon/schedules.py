"""Recurring renewals: the jobs a schedule's fires make, and the daemon's schedule tick.

When a schedule fires is daemon/triggers.py; which missed fires become jobs (the misfire
policy) is daemon/misfires.py. Their names are re-exported here, where the command line
and the tests have always found them. Everything here is pure (time comes in as `now`)
except `fire_due_schedules` and `next_fire_time`, the daemon's duty, which go through the
store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from renewald.clock import iso_utc
from renewald.daemon.misfires import (
    CRON_PERIOD_MS,
    DEFAULT_MISFIRE_GRACE_MS,
    MAX_CATCH_UP,
    MISFIRE_POLICIES,
    SCAN_LIMIT,
    DueFires,
    MisfireDecision,
    decide_misfire,
    due_fires,
)
from renewald.daemon.triggers import (
    MAX_EVERY_MS,
    MIN_EVERY_MS,
    InvalidSchedule,
    cron_trigger,
    crontab_for_apscheduler,
    first_fire,
    first_fire_at_or_after,
    interval_trigger,
    next_fire_after,
    resume_fire,
    trigger_for,
    upcoming,
    zone,
)
from renewald.logging import JobLog, emit
from renewald.store import NewJob, Store
from renewald.store.decode import MAX_EPOCH_MS
from renewald.store.models import Schedule

__all__ = [
    "DEFAULT_MISFIRE_GRACE_MS",
    "MAX_CATCH_UP",
    "MAX_EVERY_MS",
    "MIN_EVERY_MS",
    "MISFIRE_POLICIES",
    "SCAN_LIMIT",
    "DueFires",
    "FirePlan",
    "InvalidSchedule",
    "MisfireDecision",
    "TickResult",
    "cron_trigger",
    "crontab_for_apscheduler",
    "decide_misfire",
    "due_fires",
    "fire_due_schedules",
    "fire_job_id",
    "fire_message_id",
    "first_fire",
    "first_fire_at_or_after",
    "interval_trigger",
    "jitter_offset",
    "jobs_for",
    "next_fire_after",
    "next_fire_time",
    "plan_fires",
    "resume_fire",
    "trigger_for",
    "upcoming",
    "zone",
]

_log = structlog.get_logger("renewald.schedules")


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
        period_ms=period or CRON_PERIOD_MS,
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


def next_fire_time(store: Store) -> int | None:
    """The earliest next fire time of any enabled schedule, or None: one index seek
    (`due_schedules` with no upper bound, first row), the idle schedule tick's only read."""
    first = store.due_schedules(now=MAX_EPOCH_MS, limit=1)
    return first[0].next_fire_at if first else None


def _fire_one(
    store: Store,
    job_log: JobLog,
    schedule: Schedule,
    now: int,
    owner: str,
    result: TickResult,
) -> None:
    assert schedule.next_fire_at is not None
    try:
        plan = plan_fires(schedule, now=now)
    except (ValueError, OverflowError) as exc:  # InvalidSchedule, or dates past year 9999
        if _parked(store, job_log, schedule, now, owner, exc):
            result.invalid += 1
        return
    latest_id = fire_job_id(schedule.schedule_id, plan.last_fire_at)
    common: dict[str, Any] = {
        "schedule": schedule.schedule_id,
        "conversation": schedule.local_conversation_id,
        "next_fire_at": plan.next_fire_at,
        "owner": owner,
    }
    if not plan.jobs:  # the policy dropped every due fire
        _advance_only(store, job_log, plan, latest_id, now, common, result)
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
        _log.debug(
            "schedule.raced", schedule=schedule.schedule_id, fire_at=iso_utc(plan.last_fire_at)
        )
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
    result.dropped += plan.decision.dropped
    _log_fired(job_log, plan, outcome.created, now, common, result)


def _advance_only(
    store: Store,
    job_log: JobLog,
    plan: FirePlan,
    latest_id: str,
    now: int,
    common: Mapping[str, Any],
    result: TickResult,
) -> None:
    """Move the schedule past fires its misfire policy all dropped; no job is made."""
    schedule = plan.schedule
    assert schedule.next_fire_at is not None
    if store.advance_schedule(
        schedule_id=schedule.schedule_id,
        seen=schedule.next_fire_at,
        next_fire_at=plan.next_fire_at,
        last_fire_at=plan.last_fire_at,
        now=now,
    ):
        _log_misfire(job_log, plan, latest_id, now, common)
        result.dropped += plan.decision.dropped
    else:
        result.raced += 1


def _parked(
    store: Store, job_log: JobLog, schedule: Schedule, now: int, owner: str, exc: Exception
) -> bool:
    """A row this renewald cannot read (written by hand, or by a newer version): park it
    (no next fire time) rather than fail on it at every tick. False: another daemon did."""
    assert schedule.next_fire_at is not None
    sid = schedule.schedule_id
    if not store.advance_schedule(
        schedule_id=sid,
        seen=schedule.next_fire_at,
        next_fire_at=None,
        last_fire_at=schedule.last_fire_at,
        now=now,
    ):
        return False
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
    return True


def _log_fired(
    job_log: JobLog,
    plan: FirePlan,
    created: Sequence[str],
    now: int,
    common: Mapping[str, Any],
    result: TickResult,
) -> None:
    """One line per job of the plan: fired, or already there (a fence was bypassed)."""
    for fire_ms, job in zip(plan.decision.fire, plan.jobs, strict=True):
        assert job.next_attempt_at is not None
        fire_at = iso_utc(fire_ms)
        if job.job_id in created:
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
