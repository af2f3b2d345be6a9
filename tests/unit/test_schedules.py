"""Schedule maths: APScheduler's fire times across DST, the misfire policies, the jobs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from freezegun import freeze_time

from renewald.clock import SystemClock
from renewald.daemon.schedules import (
    MAX_CATCH_UP,
    SCAN_LIMIT,
    InvalidSchedule,
    cron_trigger,
    crontab_for_apscheduler,
    decide_misfire,
    due_fires,
    fire_job_id,
    fire_message_id,
    first_fire,
    first_fire_at_or_after,
    interval_trigger,
    jitter_offset,
    jobs_for,
    plan_fires,
    resume_fire,
    upcoming,
)
from renewald.store.models import Schedule
from tests.store.factories import schedule_row

HOUR = 3_600_000
MINUTE = 60_000


def ms(text: str) -> int:
    """'2026-03-29T01:30:00Z' as epoch ms."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def utc(ms_: int | None) -> str:
    assert ms_ is not None
    return datetime.fromtimestamp(ms_ / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_schedule(**overrides: Any) -> Schedule:
    created = ms("2026-03-28T22:00:00Z")
    times = {
        "next_fire_at": ms("2026-03-28T23:00:00Z"),
        "created_at": created,
        "updated_at": created,
    }
    return schedule_row(**(times | overrides))


# -- DST: the exact UTC times APScheduler gives ----------------------------------------


@pytest.mark.parametrize(
    ("since", "fires"),
    [
        # 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
        # APScheduler fires once, at 01:30Z (03:30 CEST), then at 02:30 CEST (00:30Z) from
        # the next day.
        pytest.param(
            "2026-03-27T12:00:00Z",
            ["2026-03-28T01:30:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z",
             "2026-03-31T00:30:00Z"],
            id="spring-forward",
        ),
        # 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice, and
        # APScheduler 3.11 fires at both (00:30Z and 01:30Z). docs/schedules.md says so.
        pytest.param(
            "2026-10-23T12:00:00Z",
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z",
             "2026-10-26T01:30:00Z"],
            id="fall-back",
        ),
    ],
)  # fmt: skip
def test_daily_0230_berlin_across_a_dst_change(since: str, fires: list[str]) -> None:
    trigger = cron_trigger("30 2 * * *", "Europe/Berlin")
    first = first_fire_at_or_after(trigger, ms(since))
    assert [utc(f) for f in upcoming(trigger, first, 4)] == fires


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        (
            "2026-03-28T23:00:00Z",  # 00:00 CET; the clocks jump at 01:00Z
            ["2026-03-28T23:00:00Z", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z",
             "2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z"],
        ),
        (
            "2026-10-24T23:00:00Z",  # 01:00 CEST; the clocks fall back at 01:00Z
            ["2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z",
             "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"],
        ),
    ],
)  # fmt: skip
def test_every_hour_is_3600_seconds_across_dst(anchor: str, expected: list[str]) -> None:
    trigger = interval_trigger(HOUR, anchor_ms=ms(anchor))
    assert [utc(f) for f in upcoming(trigger, ms(anchor), 5)] == expected


@freeze_time("2026-03-28 12:00:00", tick=False)
def test_first_fire_of_a_new_schedule_under_a_frozen_clock() -> None:
    now = SystemClock().now_ms()
    assert utc(first_fire(trigger_kind="every", every_ms=6 * HOUR, now=now)) == (
        "2026-03-28T18:00:00Z"
    )
    daily = first_fire(trigger_kind="cron", cron="30 2 * * *", timezone="Europe/Berlin", now=now)
    assert utc(daily) == "2026-03-29T01:30:00Z"
    # A cron time equal to now is not "after now".
    assert first_fire(trigger_kind="cron", cron="0 12 * * *", now=now) == now + 24 * HOUR


# -- crontab as a crontab user means it -------------------------------------------------


def weekdays(expr: str, count: int = 7) -> list[str]:
    trigger = cron_trigger(expr, "Europe/Berlin")
    first = first_fire_at_or_after(trigger, ms("2026-03-01T00:00:00Z"))  # a Sunday
    return [
        datetime.fromtimestamp(f / 1000, tz=UTC).strftime("%a")
        for f in upcoming(trigger, first, count)
    ]


def test_numeric_weekdays_count_from_sunday_as_in_cron() -> None:
    assert weekdays("0 9 * * 1-5") == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon", "Tue"]
    assert weekdays("0 9 * * 0", 2) == ["Sun", "Sun"]
    assert weekdays("0 9 * * 7", 2) == ["Sun", "Sun"]
    assert weekdays("0 9 * * 5-7", 4) == ["Sun", "Fri", "Sat", "Sun"]
    assert weekdays("0 9 * * */2", 5) == ["Sun", "Tue", "Thu", "Sat", "Sun"]
    assert weekdays("0 9 * * MON-FRI", 3) == ["Mon", "Tue", "Wed"]
    assert weekdays("0 9 * * sat,1", 3) == ["Mon", "Sat", "Mon"]


def test_crontab_rewrites_only_the_day_of_week() -> None:
    assert crontab_for_apscheduler("0 9 * * 1-5") == "0 9 * * mon,tue,wed,thu,fri"
    assert crontab_for_apscheduler("*/15  8-18 * 1,6 *") == "*/15 8-18 * 1,6 *"
    assert crontab_for_apscheduler("@daily") == "0 0 * * *"
    assert crontab_for_apscheduler("@weekly") == "0 0 * * sun"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("0 9 * *", "has 4 fields"),
        ("0 9 * * 8", "not 0-7"),
        ("0 9 * * fri-mon", "runs backwards"),
        ("0 9 * * xyz", "day name"),
        ("0 9 1 * 1", "both the day of month and the day of week"),
        ("61 * * * *", "higher than the maximum"),
        ("0 9 * * */0", "step"),
    ],
)
def test_bad_crontab_says_what_is_wrong(expr: str, says: str) -> None:
    with pytest.raises(InvalidSchedule, match=says):
        cron_trigger(expr, "UTC")


def test_bad_zone_and_interval() -> None:
    with pytest.raises(InvalidSchedule, match="unknown time zone 'Mars/Olympus'"):
        cron_trigger("0 9 * * *", "Mars/Olympus")
    with pytest.raises(InvalidSchedule, match="too short"):
        first_fire(trigger_kind="every", every_ms=500, now=0)
    with pytest.raises(InvalidSchedule, match="too long"):
        first_fire(trigger_kind="every", every_ms=400 * 24 * HOUR, now=0)


# -- a downtime gap, for each misfire policy --------------------------------------------

T = ms("2026-06-01T00:00:00Z")


def gap_plan(policy: str, now: int, **overrides):
    schedule = make_schedule(misfire=policy, next_fire_at=T, **overrides)
    return plan_fires(schedule, now=now)


def test_on_time_fire_makes_one_job_and_no_misfire() -> None:
    for policy in ("coalesce", "skip", "all"):
        plan = gap_plan(policy, T)
        assert plan.decision.fire == (T,) and plan.decision.reason is None
        assert plan.next_fire_at == T + HOUR and plan.last_fire_at == T


def test_coalesce_makes_one_job_for_the_latest_missed_fire() -> None:
    plan = gap_plan("coalesce", T + 5 * HOUR + 30 * MINUTE)
    assert plan.due.fires[-1] == T + 5 * HOUR and plan.due.total == 6
    assert plan.decision.fire == (T + 5 * HOUR,)
    assert plan.decision.dropped == 5
    assert plan.decision.reason == "coalesced 6 due fires into the latest"
    assert plan.next_fire_at == T + 6 * HOUR
    assert [j.job_id for j in plan.jobs] == [f"schedule:s1:{T + 5 * HOUR}"]


def test_skip_fires_only_what_is_within_the_grace() -> None:
    within = gap_plan("skip", T + 5 * HOUR + 30_000)  # the 5h fire is 30s late
    assert within.decision.fire == (T + 5 * HOUR,) and within.decision.dropped == 5
    assert within.decision.reason == "skipped 5 fires older than the misfire grace of 1m"
    beyond = gap_plan("skip", T + 5 * HOUR + 61_000)
    assert beyond.decision.fire == () and beyond.decision.dropped == 6
    assert beyond.jobs == () and beyond.next_fire_at == T + 6 * HOUR
    long_grace = gap_plan("skip", T + 5 * HOUR + 30 * MINUTE, misfire_grace_ms=2 * HOUR)
    assert long_grace.decision.fire == (T + 4 * HOUR, T + 5 * HOUR)
    # Edge of the grace: a fire exactly `grace` old is still on time; one ms more is not.
    assert gap_plan("skip", T + MINUTE).decision.fire == (T,)
    assert gap_plan("skip", T + MINUTE + 1).decision.fire == ()


def test_all_makes_each_missed_fire() -> None:
    plan = gap_plan("all", T + 5 * HOUR + 30 * MINUTE)
    assert plan.decision.fire == tuple(T + n * HOUR for n in range(6))
    assert plan.decision.dropped == 0 and plan.decision.reason == "catching up 6 due fires"
    assert len({j.message_id for j in plan.jobs}) == 6


def test_all_is_bounded_by_max_catch_up_keeping_the_latest() -> None:
    now = T + 250 * HOUR
    plan = gap_plan("all", now)
    assert plan.due.total == 251 and not plan.due.capped
    assert plan.decision.fire == tuple(T + n * HOUR for n in range(151, 251))
    assert len(plan.decision.fire) == MAX_CATCH_UP and plan.decision.dropped == 151
    assert "151 older ones dropped (at most 100 at once)" in (plan.decision.reason or "")


def test_a_gap_longer_than_the_scan_limit_is_not_walked_one_by_one() -> None:
    # Every second, down for three days: 259,201 missed fires.
    now = T + 3 * 24 * HOUR
    plan = gap_plan("all", now, every_ms=1000)
    assert plan.due.capped and plan.due.total > SCAN_LIMIT
    assert plan.decision.fire == tuple(range(now - 99_000, now + 1, 1000))
    assert plan.next_fire_at == now + 1000
    coalesced = gap_plan("coalesce", now + 500, every_ms=1000)
    assert coalesced.decision.fire == (now,) and coalesced.next_fire_at == now + 1000
    assert coalesced.decision.reason is not None and "more than" in coalesced.decision.reason


def test_a_long_cron_gap_finds_the_latest_fires() -> None:
    # Every minute, down for thirty days: 43,200 missed fires.
    start = ms("2026-06-01T00:00:00Z")
    now = start + 30 * 24 * HOUR + 30_000
    trigger = cron_trigger("* * * * *", "Europe/Berlin")
    due = due_fires(trigger, first=start, now=now, keep=3)
    assert due.capped
    assert due.fires == (now - 150_000, now - 90_000, now - 30_000)
    assert due.next_fire == now + 30_000
    schedule = make_schedule(trigger_kind="cron", cron="* * * * *", every_ms=None)
    plan = plan_fires(dataclasses.replace(schedule, next_fire_at=start), now=now)
    assert plan.decision.fire == (now - 30_000,)


def test_cron_downtime_across_the_fall_back_night() -> None:
    schedule = make_schedule(
        trigger_kind="cron",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        every_ms=None,
        misfire="all",
        next_fire_at=ms("2026-10-24T00:30:00Z"),
    )
    plan = plan_fires(schedule, now=ms("2026-10-26T12:00:00Z"))
    assert [utc(f) for f in plan.decision.fire] == [
        "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:30:00Z",
        "2026-10-26T01:30:00Z",
    ]
    assert utc(plan.next_fire_at or 0) == "2026-10-27T01:30:00Z"


def test_decide_misfire_rejects_an_unknown_policy() -> None:
    due = due_fires(interval_trigger(HOUR, anchor_ms=T), first=T, now=T, keep=5)
    with pytest.raises(InvalidSchedule, match="unknown misfire policy"):
        decide_misfire("sometimes", due, now=T)


def test_resume_keeps_the_interval_grid_and_skips_paused_fires() -> None:
    schedule = make_schedule(next_fire_at=T, enabled=False)
    assert resume_fire(schedule, now=T + 5 * HOUR + 1) == T + 6 * HOUR
    assert resume_fire(schedule, now=T + 5 * HOUR) == T + 6 * HOUR


# -- the jobs ---------------------------------------------------------------------------


def test_jobs_are_deterministic_and_jitter_is_bounded() -> None:
    schedule = make_schedule(jitter_ms=5 * MINUTE, target_snapshot='{"a":1}', max_attempts=5)
    fires = [T + n * HOUR for n in range(50)]
    first, again = jobs_for(schedule, fires), jobs_for(schedule, fires)
    assert first == again
    job = first[0]
    assert job.job_id == fire_job_id("s1", T) == f"schedule:s1:{T}"
    assert job.message_id == fire_message_id("s1", T) == f"renewald:schedule:s1:{T}"
    assert (job.target_kind, job.target_snapshot, job.max_attempts) == ("log", '{"a":1}', 5)
    offsets = [(j.next_attempt_at or 0) - f for j, f in zip(first, fires, strict=True)]
    assert all(0 <= o <= 5 * MINUTE for o in offsets)
    assert len(set(offsets)) > 40  # spread, not one constant delay
    assert jitter_offset("s1", T, 0) == 0
    assert jitter_offset("s1", T, 5 * MINUTE) != jitter_offset("s2", T, 5 * MINUTE)
