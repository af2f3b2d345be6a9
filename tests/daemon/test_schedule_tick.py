"""The schedule tick (daemon/schedules.py) over the store: each fire exactly once, gates,
misfires, on both backends."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from renewald.daemon.schedules import fire_due_schedules, fire_job_id, plan_fires
from renewald.logging import JobLog, read_lines
from renewald.store import DueGate, Store
from renewald.store.models import Schedule
from renewald.store.schema import local_conversations, renewal_jobs, renewal_schedules
from tests.store.factories import T0, checked_out, make_conversation, make_job, set_conversation
from tests.store.test_schedules import HOUR, OWNER, make_schedule

POLICIES = ("coalesce", "skip", "all")


def fire(store: Store, schedule: Schedule, now: int, **kwargs: Any):
    """Fire `schedule` as read (the fence is its next_fire_at) the way the daemon plans it."""
    plan = plan_fires(schedule, now=now)
    return store.fire_schedule(
        schedule=schedule,
        new_jobs=plan.jobs,
        next_fire_at=plan.next_fire_at,
        last_fire_at=plan.last_fire_at,
        now=now,
        **kwargs,
    )


def tick(store: Store, now: int, log_dir: Path, **kwargs: Any):
    job_log = JobLog(log_dir)
    try:
        return fire_due_schedules(store=store, job_log=job_log, now=now, owner=OWNER, **kwargs)
    finally:
        job_log.close()


def test_firing_creates_exactly_the_expected_rows(store: Store) -> None:
    s = make_schedule(
        store,
        schedule_id="sx",
        local_conversation_id="cx",
        payload='{"text": "hi"}',
        payload_kind="json",
        target_snapshot='{"clientId": "ff"}',
        max_attempts=5,
        jitter_ms=60_000,
    )
    outcome = fire(store, s, T0 + 10)
    job_id = f"schedule:sx:{T0}"
    assert (outcome.status, outcome.created, outcome.existing) == ("fired", (job_id,), ())
    [job] = all_jobs(store)
    assert job["job_id"] == job_id
    assert job["message_id"] == f"renewald:schedule:sx:{T0}"
    assert job["local_conversation_id"] == "cx" and job["status"] == "pending"
    assert (job["payload"], job["payload_kind"]) == ('{"text": "hi"}', "json")
    assert (job["target_kind"], job["target_snapshot"]) == ("log", '{"clientId": "ff"}')
    assert (job["max_attempts"], job["attempt_count"]) == (5, 0)
    assert T0 <= job["next_attempt_at"] <= T0 + 60_000
    assert job["created_at"] == job["updated_at"] == T0 + 10
    after = store.get_schedule("sx")
    assert after is not None
    assert (after.next_fire_at, after.last_fire_at, after.last_job_id) == (
        T0 + HOUR,
        T0,
        job_id,
    )


def test_a_second_fire_of_the_same_time_creates_nothing(store: Store) -> None:
    s = make_schedule(store)
    assert fire(store, s, T0).status == "fired"
    # Another daemon that read the schedule before the first fire committed:
    assert fire(store, s, T0).status == "raced"
    assert fire(store, s, T0 + 30 * 60_000).status == "raced"  # later, with another plan
    assert len(all_jobs(store)) == 1


def test_the_unique_message_id_is_the_second_fence(store: Store) -> None:
    # An operator rewinds a schedule to a fire time that already has its job (or the
    # tracker wrote that message id): the fire skips the existing row, keeps the rest of
    # its work (no aborted transaction on PostgreSQL) and advances the schedule.
    s = make_schedule(store, misfire="all", next_fire_at=T0)
    assert fire(store, s, T0).created == (fire_job_id(s.schedule_id, T0),)
    store.write(
        lambda c: c.execute(
            update(renewal_schedules)
            .where(renewal_schedules.c.schedule_id == s.schedule_id)
            .values(next_fire_at=T0, last_job_id=None)
        )
    )
    rewound = store.get_schedule(s.schedule_id)
    assert rewound is not None
    outcome = fire(store, rewound, T0 + HOUR)
    assert outcome.status == "fired"
    assert outcome.existing == (fire_job_id(s.schedule_id, T0),)
    assert outcome.created == (fire_job_id(s.schedule_id, T0 + HOUR),)
    assert len(all_jobs(store)) == 2
    after = store.get_schedule(s.schedule_id)
    assert after is not None and after.next_fire_at == T0 + 2 * HOUR


def test_a_tracker_job_with_the_message_id_is_left_alone(store: Store) -> None:
    s = make_schedule(store, schedule_id="tr")
    make_job(store, job_id="tracker-job", message_id=f"renewald:schedule:tr:{T0}")
    outcome = fire(store, s, T0)
    assert (outcome.status, outcome.created) == ("fired", ())
    assert outcome.existing == (f"schedule:tr:{T0}",)
    assert [j["job_id"] for j in all_jobs(store)] == ["tracker-job"]


@pytest.mark.parametrize("status", ["paused", "manual"])
def test_a_gated_conversation_records_the_fire_as_skipped(store: Store, status: str) -> None:
    cid = make_conversation(store, status=status)
    s = make_schedule(store, local_conversation_id=cid)
    outcome = fire(store, s, T0)
    assert outcome.status == "skipped" and outcome.reason == f"conversation {cid} is {status}"
    assert all_jobs(store) == []
    after = store.get_schedule(s.schedule_id)
    assert after is not None
    assert (after.next_fire_at, after.last_fire_at, after.last_job_id) == (T0 + HOUR, T0, None)
    # Once the conversation is auto again, the next fire makes its job.
    set_conversation(store, cid, automation_status="auto")
    assert fire(store, after, T0 + HOUR).status == "fired"


def test_the_conversation_gate_follows_dispatch_statuses(store: Store) -> None:
    cid = make_conversation(store, status="manual")
    s = make_schedule(store, local_conversation_id=cid)
    assert fire(store.with_due(DueGate(("auto", "manual"))), s, T0).status == "fired"


def test_a_deleted_conversation_gates(store: Store) -> None:
    s = make_schedule(store, local_conversation_id="gone")
    store.write(
        lambda c: c.execute(
            local_conversations.delete().where(
                local_conversations.c.local_conversation_id == "gone"
            )
        )
    )
    outcome = fire(store, s, T0)
    assert (outcome.status, outcome.reason) == ("skipped", "conversation gone does not exist")
    assert all_jobs(store) == []


def test_no_overlap_while_the_previous_job_is_pending_or_running(store: Store) -> None:
    s = make_schedule(store)
    assert fire(store, s, T0).status == "fired"
    first_job = fire_job_id(s.schedule_id, T0)
    second = store.get_schedule(s.schedule_id)
    assert second is not None
    outcome = fire(store, second, T0 + HOUR)
    assert outcome.status == "skipped"
    assert outcome.reason == f"previous job {first_job} is still pending"
    assert len(all_jobs(store)) == 1
    third = store.get_schedule(s.schedule_id)
    assert third is not None and third.last_job_id == first_job
    [claimed] = store.claim_due_jobs(owner=OWNER, now=T0 + 2 * HOUR, lease_ms=60_000, limit=5)
    assert fire(store, third, T0 + 2 * HOUR).reason == f"previous job {first_job} is still running"
    store.write(
        lambda c: c.execute(
            update(renewal_jobs).where(renewal_jobs.c.job_id == first_job).values(status="done")
        )
    )
    fourth = store.get_schedule(s.schedule_id)
    assert fourth is not None
    assert fire(store, fourth, T0 + 3 * HOUR).created == (
        fire_job_id(s.schedule_id, T0 + 3 * HOUR),
    )
    assert claimed.job.job_id == first_job


def test_allow_overlap_stacks_jobs(store: Store) -> None:
    s = make_schedule(store, allow_overlap=True)
    fire(store, s, T0)
    again = store.get_schedule(s.schedule_id)
    assert again is not None
    assert fire(store, again, T0 + HOUR).status == "fired"
    assert len(all_jobs(store)) == 2


def test_a_paused_or_removed_schedule_does_not_fire(store: Store) -> None:
    s = make_schedule(store)
    store.pause_schedule(s.schedule_id, now=T0)
    assert fire(store, s, T0).status == "raced"
    store.remove_schedule(s.schedule_id)
    assert fire(store, s, T0).status == "raced"
    assert all_jobs(store) == []


def test_tick_after_downtime_logs_the_misfire_choice(store: Store, tmp_path: Path) -> None:
    make_schedule(store, schedule_id="co", misfire="coalesce")
    make_schedule(store, schedule_id="sk", misfire="skip")
    make_schedule(store, schedule_id="al", misfire="all")
    now = T0 + 5 * HOUR + 30_000
    result = tick(store, now, tmp_path)
    per_schedule = Counter(j["job_id"].split(":")[1] for j in all_jobs(store))
    assert per_schedule == {"co": 1, "sk": 1, "al": 6}
    assert len(result.created) == 8 and result.earliest_job_at == T0
    [log_file] = tmp_path.glob("*.jsonl")
    lines = read_lines(log_file)
    misfires = {x["schedule"]: x for x in lines if x["event"] == "schedule.misfire"}
    counts = {k: (v["policy"], v["missed"], v["fired"], v["dropped"]) for k, v in misfires.items()}
    assert counts == {
        "co": ("coalesce", 6, 1, 5),
        "sk": ("skip", 6, 1, 5),
        "al": ("all", 6, 6, 0),
    }
    assert misfires["co"]["job_id"] == f"schedule:co:{T0 + 5 * HOUR}"
    fired = [x for x in lines if x["event"] == "schedule.fired"]
    assert len(fired) == 8 and all(line["owner"] == OWNER for line in fired)
    assert tick(store, now, tmp_path).created == []  # nothing is due any more


def test_tick_logs_skipped_fires_and_parks_unreadable_rows(store: Store, tmp_path: Path) -> None:
    cid = make_conversation(store, status="paused")
    make_schedule(store, schedule_id="p", local_conversation_id=cid)
    make_schedule(store, schedule_id="bad", trigger_kind="cron", cron="not a cron", every_ms=None)
    result = tick(store, T0, tmp_path)
    assert result.skipped == 1 and result.created == []
    lines = read_lines(next(tmp_path.glob("*.jsonl")))
    [skipped] = [x for x in lines if x["event"] == "schedule.skipped"]
    assert skipped["reason"] == f"conversation {cid} is paused"
    assert skipped["job_id"] == f"schedule:p:{T0}" and skipped["next_fire_at"] == T0 + HOUR
    [invalid] = [x for x in lines if x["event"] == "schedule.invalid"]
    assert invalid["schedule"] == "bad" and "has 3 fields" in invalid["error"]
    assert invalid["job_id"] == f"schedule:bad:{T0}"
    parked = store.get_schedule("bad")
    assert parked is not None and parked.next_fire_at is None
    assert [x.schedule_id for x in store.due_schedules(now=T0 + 10 * HOUR)] == ["p"]


def test_concurrent_firers_create_each_fire_exactly_once(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """Eight firers (each with its own engine, like separate daemons) fire the same twenty
    schedules at the same `now`, twice over: every fire time gets exactly one job."""
    for n in range(20):
        make_schedule(
            store,
            schedule_id=f"cc{n}",
            misfire=POLICIES[n % 3],
            misfire_grace_ms=3 * HOUR,
            allow_overlap=True,
            next_fire_at=T0 - 4 * HOUR - n * 1000,
        )
    stores = [Store.open(db_url, pool_size=2) for _ in range(8)]
    created: list[list[str]] = [[] for _ in stores]
    existing: list[str] = []
    errors: list[BaseException] = []
    for now in (T0, T0 + 2 * HOUR):
        barrier = threading.Barrier(len(stores))

        def run(i: int, now: int = now, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                job_log = JobLog(tmp_path / f"logs-{i}")
                result = fire_due_schedules(
                    store=stores[i], job_log=job_log, now=now, owner=f"daemon-{i}"
                )
                job_log.close()
                created[i] += result.created
                existing.extend(result.existing)
            except BaseException as exc:  # surfaced below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    for s in stores:
        assert checked_out(s) == 0
        s.close()
    assert errors == []
    # Fires first + k hours, first = T0 - 4h - n s. At T0 fires k = 0..4 are due, at
    # T0 + 2h fires k = 5, 6. coalesce makes the latest of each round; skip (grace 3h)
    # those no more than 3h late; all makes every one.
    keep = {"coalesce": (4, 6), "skip": (2, 3, 4, 5, 6), "all": tuple(range(7))}
    expected = {
        f"schedule:cc{n}:{T0 - 4 * HOUR - n * 1000 + k * HOUR}"
        for n in range(20)
        for k in keep[POLICIES[n % 3]]
    }
    per_message = store.read(
        lambda c: c.execute(
            select(renewal_jobs.c.message_id, func.count()).group_by(renewal_jobs.c.message_id)
        ).all()
    )
    assert all(count == 1 for _, count in per_message)
    assert {r["job_id"] for r in all_jobs(store)} == expected
    made = [j for per in created for j in per]
    assert sorted(made) == sorted(expected), "each job reported created by exactly one firer"
    # The schedule fence alone kept them apart: no firer ever reached the insert of a fire
    # another had made, and no schedule was moved back.
    assert existing == []
    final = {s.schedule_id: s.next_fire_at for s in store.list_schedules()}
    assert final == {f"cc{n}": T0 + 3 * HOUR - n * 1000 for n in range(20)}


def all_jobs(store: Store) -> list[dict[str, Any]]:
    rows = store.read(
        lambda c: c.execute(select(renewal_jobs).order_by(renewal_jobs.c.job_id)).mappings().all()
    )
    return [dict(r) for r in rows]
