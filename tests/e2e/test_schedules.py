"""Schedules end to end: the real CLI and `renewald run`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from renewald.store import Store
from renewald.store.schema import renewal_jobs
from tests.e2e.conftest import Renewald
from tests.waiting import wait_for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def one_line_error(out: Any) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def add(renewald: Renewald, *args: str) -> str:
    out = renewald.run("schedules", "add", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def schedule_jobs(store: Store, schedule_id: str) -> list[dict[str, Any]]:
    prefix = f"renewald:schedule:{schedule_id}:"
    rows = store.read(
        lambda c: (
            c.execute(select(renewal_jobs).where(renewal_jobs.c.message_id.startswith(prefix)))
            .mappings()
            .all()
        )
    )
    return sorted((dict(r) for r in rows), key=lambda r: r["message_id"])


def fire_time(job: dict[str, Any]) -> int:
    return int(job["message_id"].rsplit(":", 1)[1])


# -- the command line -------------------------------------------------------------------


def test_add_list_show_pause_resume_remove(renewald: Renewald, e2e_store: Store) -> None:
    before = now_ms()
    sid = add(
        renewald,
        "--conversation", "c1", "--cron", "0 9 * * 1-5", "--tz", "Europe/Berlin",
        "--payload", "good morning", "--jitter", "5m", "--misfire", "skip",
        "--misfire-grace", "10m", "--target-kind", "log", "--id", "weekday",
    )  # fmt: skip
    assert sid == "weekday"
    added = e2e_store.get_schedule("weekday")
    assert added is not None and added.trigger_kind == "cron" and added.jitter_ms == 300_000
    assert added.misfire_grace_ms == 600_000 and added.next_fire_at is not None
    assert added.next_fire_at > before

    listed = renewald.run("schedules", "list")
    assert listed.returncode == 0
    assert "weekday" in listed.stdout and "cron 0 9 * * 1-5 Europe/Berlin" in listed.stdout
    [row] = json.loads(renewald.run("schedules", "list", "--json").stdout)
    assert row["schedule_id"] == "weekday" and row["enabled"] is True

    shown = renewald.run("schedules", "show", "weekday")
    assert shown.returncode == 0, shown.stderr
    fires = [line for line in shown.stdout.splitlines() if line.startswith("  20")]
    assert len(fires) == 5 and all(" 09:00:00 CE" in f for f in fires), shown.stdout
    data = json.loads(renewald.run("schedules", "show", "weekday", "--json").stdout)
    assert data["next_fires"][0]["at"] == added.next_fire_at
    assert all(f["local"][11:19] == "09:00:00" for f in data["next_fires"])

    assert renewald.run("schedules", "pause", "weekday").stdout.startswith("paused")
    paused = e2e_store.get_schedule("weekday")
    assert paused is not None and not paused.enabled
    assert "if resumed now" in renewald.run("schedules", "show", "weekday").stdout
    assert renewald.run("schedules", "resume", "weekday").stdout.startswith("resumed")
    assert renewald.run("schedules", "remove", "weekday").stdout.strip() == "removed weekday"
    assert e2e_store.get_schedule("weekday") is None
    assert "no schedule weekday" in one_line_error(renewald.run("schedules", "show", "weekday"))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cron", "0 9 * *"], "--cron: '0 9 * *' has 4 fields"),
        (["--cron", "0 25 * * *"], "--cron:"),
        (["--cron", "0 9 * * *", "--tz", "Mars/Olympus"], "--tz: unknown time zone"),
        (["--every", "0s"], "--every: must be longer than zero"),
        (["--every", "-5m"], "--every: '-5m' is not a duration"),
        (["--every", "99999999999d"], "--every: an interval of"),
        (["--every", "1h", "--cron", "0 9 * * *"], "either --every or --cron, not both"),
        ([], "give --every DURATION"),
        (["--every", "1h", "--misfire", "later"], "'later' is not one of"),
        (["--every", "1h", "--target", "[1]"], "--target: must be a JSON object"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    renewald: Renewald, e2e_store: Store, args: list[str], says: str
) -> None:
    out = renewald.run("schedules", "add", "--conversation", "c1", "--payload", "p", *args)
    assert says in one_line_error(out)
    assert e2e_store.list_schedules() == []


# -- firing, delivered end to end -------------------------------------------------------


def test_every_second_is_delivered_by_the_daemon(renewald: Renewald, e2e_store: Store) -> None:
    add(renewald, "--conversation", "c1", "--every", "1s", "--payload", "keepalive",
        "--target-kind", "log", "--id", "tick")  # fmt: skip
    first = e2e_store.get_schedule("tick")
    assert first is not None and first.next_fire_at is not None
    proc = renewald.start()

    def delivered() -> list[dict[str, Any]]:
        done = [j for j in schedule_jobs(e2e_store, "tick") if j["status"] == "done"]
        return done if len(done) >= 3 else []

    wait_for(delivered, timeout=30, what="three fires delivered")
    code, err = renewald.stop(proc)
    assert code == 0, err
    jobs = schedule_jobs(e2e_store, "tick")
    fires = [fire_time(j) for j in jobs]
    assert len(set(fires)) == len(fires)
    assert all((f - first.next_fire_at) % 1000 == 0 for f in fires), "fires are on the 1s grid"
    assert all(j["job_id"] == f"schedule:tick:{fire_time(j)}" for j in jobs)
    assert all(j["started_at"] >= fire_time(j) for j in jobs if j["started_at"])
    lines = renewald.log_lines()
    fired = {x["job_id"] for x in lines if x["event"] == "schedule.fired"}
    assert fired == {j["job_id"] for j in jobs}
    finished = {x["job_id"] for x in lines if x["event"] == "attempt.finished"}
    assert {j["job_id"] for j in jobs if j["status"] == "done"} <= finished


def test_run_once_fires_what_is_due_before_draining(renewald: Renewald, e2e_store: Store) -> None:
    add(renewald, "--conversation", "c1", "--every", "1s", "--payload", "keepalive",
        "--target-kind", "log", "--id", "cronjob")  # fmt: skip
    added = e2e_store.get_schedule("cronjob")
    assert added is not None and added.next_fire_at is not None
    first_fire = added.next_fire_at
    wait_for(lambda: now_ms() > first_fire + 2000, what="three fire times to pass")
    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    assert "delivered 1," in out.stdout
    [job] = schedule_jobs(e2e_store, "cronjob")  # coalesced into the latest fire
    assert job["status"] == "done" and fire_time(job) >= added.next_fire_at + 2000
    after = e2e_store.get_schedule("cronjob")
    assert after is not None and after.last_fire_at == fire_time(job)
    assert after.last_job_id == job["job_id"] and after.next_fire_at == fire_time(job) + 1000
    [misfire] = [x for x in renewald.log_lines() if x["event"] == "schedule.misfire"]
    assert misfire["policy"] == "coalesce" and misfire["missed"] >= 3
    assert misfire["fired"] == 1 and misfire["dropped"] == misfire["missed"] - 1


def test_two_daemons_create_each_fire_exactly_once(renewald: Renewald, e2e_store: Store) -> None:
    ids = [f"s{n}" for n in range(4)]
    for sid in ids:
        # `all` and --allow-overlap: every fire time must get its job, so a hole would show.
        add(renewald, "--conversation", f"c-{sid}", "--every", "1s", "--payload", "ping",
            "--target-kind", "log", "--misfire", "all", "--allow-overlap", "--id", sid)  # fmt: skip
    procs = [renewald.start(), renewald.start()]

    def enough() -> bool:
        return all(
            sum(j["status"] == "done" for j in schedule_jobs(e2e_store, sid)) >= 4 for sid in ids
        )

    try:
        wait_for(enough, timeout=60, what="four fires of each schedule delivered")
    finally:
        results = [renewald.stop(proc) for proc in procs]
    for code, err in results:
        assert code == 0, err
    lines = renewald.log_lines()
    assert [x for x in lines if x["event"] == "schedule.duplicate"] == []
    fired = [x["job_id"] for x in lines if x["event"] == "schedule.fired"]
    assert len(fired) == len(set(fired)), "one daemon made each job"
    for sid in ids:
        schedule = e2e_store.get_schedule(sid)
        assert schedule is not None and schedule.last_fire_at is not None
        jobs = schedule_jobs(e2e_store, sid)
        fires = sorted(fire_time(j) for j in jobs)
        assert fires == list(range(fires[0], schedule.last_fire_at + 1, 1000)), (
            f"{sid}: every fire time from the first to the last has exactly one job"
        )
        assert {j["job_id"] for j in jobs} <= set(fired)
