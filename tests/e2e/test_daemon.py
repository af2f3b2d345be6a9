"""The daemon end to end: the real `renewald run` process, real databases, real signals."""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import insert, select

from renewald.store import Store
from renewald.store.backend_sqlite import FORCE_POLL_ENV
from renewald.store.schema import (
    conversation_links,
    local_conversations,
    renewal_job_attempts,
    renewal_jobs,
)
from tests.e2e.conftest import RENEWALD, Renewald
from tests.store.factories import job_of
from tests.waiting import wait_for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def add_conversations(store: Store, statuses: dict[str, str], *, kind: str = "log") -> None:
    t = now_ms()
    convs = [
        {"local_conversation_id": c, "platform": "claude", "automation_status": s,
         "created_at": t, "updated_at": t}
        for c, s in statuses.items()
    ]  # fmt: skip
    links = [
        {"link_id": f"link-{c}", "local_conversation_id": c, "platform": "claude",
         "remote_conversation_id": f"r-{c}", "target_kind": kind, "is_active": 1,
         "observed_at": t, "created_at": t, "updated_at": t}
        for c in statuses
    ]  # fmt: skip

    def tx(conn):
        conn.execute(insert(local_conversations), convs)
        conn.execute(insert(conversation_links), links)

    store.write(tx)


def add_jobs(store: Store, specs: list[tuple[str, str]], *, due: int | None = None) -> None:
    """Tracker-style rows: (job_id, conversation), due now unless told otherwise."""
    t = now_ms()
    rows = [
        {"job_id": j, "local_conversation_id": c, "message_id": f"msg-{j}", "status": "pending",
         "payload": f"keepalive {j}", "payload_kind": "text", "attempt_count": 0,
         "max_attempts": 3, "next_attempt_at": t if due is None else due,
         "created_at": t, "updated_at": t}
        for j, c in specs
    ]  # fmt: skip
    store.write(lambda conn: conn.execute(insert(renewal_jobs), rows))


def jobs_by_id(store: Store) -> dict[str, dict]:
    rows = store.read(lambda c: c.execute(select(renewal_jobs)).mappings().all())
    return {r["job_id"]: dict(r) for r in rows}


def attempts(store: Store) -> list[dict]:
    rows = store.read(lambda c: c.execute(select(renewal_job_attempts)).mappings().all())
    return [dict(r) for r in rows]


def test_once_drains_due_jobs_and_leaves_gated_ones(renewald: Renewald, e2e_store: Store) -> None:
    statuses = {f"auto-{i}": "auto" for i in range(20)}
    statuses |= {"paused-1": "paused", "manual-1": "manual"}
    add_conversations(e2e_store, statuses)
    specs = [(f"j-{c}-{n}", c) for c in statuses for n in range(2)]
    add_jobs(e2e_store, specs)
    add_jobs(e2e_store, [("later", "auto-0")], due=now_ms() + 3_600_000)

    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    assert "delivered 40" in out.stdout

    jobs = jobs_by_id(e2e_store)
    for job_id, job in jobs.items():
        if job_id == "later" or "paused" in job_id or "manual" in job_id:
            assert (job["status"], job["attempt_count"]) == ("pending", 0), job_id
        else:
            assert (job["status"], job["terminal_reason"]) == ("done", "delivered"), job_id
            assert job["attempt_count"] == 1 and job["lease_owner"] is None

    rows = attempts(e2e_store)
    assert len(rows) == 40
    lines = [line for line in renewald.log_lines() if line["event"] == "attempt.finished"]
    by_attempt = {line["attempt_id"]: line for line in lines}
    for row in rows:
        line = by_attempt[row["attempt_id"]]
        assert line["job_id"] == row["job_id"] and line["outcome"] == row["outcome"]
        assert jobs[row["job_id"]]["log_path"] is not None
        assert jobs[row["job_id"]]["log_path"].endswith(".jsonl")
        assert line["ts"].endswith("Z")


def test_once_exit_codes(renewald: Renewald, e2e_store: Store) -> None:
    assert renewald.run("run", "--once").returncode == 0  # nothing due
    renewald.enqueue("c-bad", "hello")  # no link, no target kind: permanent
    out = renewald.run("run", "--once")
    assert out.returncode == 1, out.stderr
    assert "failed 1" in out.stdout and "failed:permanent 1" in out.stdout
    [job] = e2e_store.list_jobs()
    assert (job.status, job.terminal_reason) == ("failed", "permanent")
    assert "no target" in (job.last_error or "")


def test_bad_rows_from_the_tracker_fail_alone(renewald: Renewald, e2e_store: Store) -> None:
    add_conversations(e2e_store, {"good": "auto", "bad": "auto"})
    add_jobs(e2e_store, [("good-1", "good"), ("bad-json", "bad")])
    e2e_store.write(
        lambda c: c.execute(
            renewal_jobs.update()
            .where(renewal_jobs.c.job_id == "bad-json")
            .values(payload_kind="json", payload="{not json")
        )
    )
    out = renewald.run("run", "--once")
    assert out.returncode == 1
    jobs = jobs_by_id(e2e_store)
    assert jobs["good-1"]["status"] == "done"
    # A json payload that is not JSON does not fit its row: malformed (DESIGN §2).
    assert jobs["bad-json"]["terminal_reason"] == "malformed"
    assert jobs["bad-json"]["last_error"] == (
        "malformed: renewal_jobs.payload is not JSON (Expecting property name enclosed in "
        "double quotes at column 2)"
    )


def test_daemon_picks_up_scheduled_job_and_stops_cleanly(
    renewald: Renewald, e2e_store: Store
) -> None:
    proc = renewald.start()
    wait_for(lambda: e2e_store.list_daemons(), what="daemon registered")
    job_id = renewald.enqueue("c1", "hello", "--at", "+1s", "--target-kind", "log")
    wait_for(lambda: job_of(e2e_store, job_id).status == "done", what="job delivered")
    job = job_of(e2e_store, job_id)
    assert job.started_at is not None and job.next_attempt_at is not None
    assert job.started_at >= job.next_attempt_at
    code, err = renewald.stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    assert e2e_store.list_daemons() == []


def test_second_signal_stops_at_once(renewald: Renewald, e2e_store: Store) -> None:
    proc = renewald.start()
    wait_for(lambda: e2e_store.list_daemons(), what="daemon registered")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode in (0, 1)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_three_daemons_drain_exactly_once(renewald: Renewald, e2e_store: Store) -> None:
    conversations = {f"c{i}": "auto" for i in range(400)}
    add_conversations(e2e_store, conversations)
    specs = [(f"j{i:04d}", f"c{i % 400}") for i in range(2000)]
    add_jobs(e2e_store, specs)
    renewald.write_config(workers=4, batch=16)
    procs = [renewald.start() for _ in range(3)]

    def done() -> bool:
        return sum(j["status"] == "done" for j in jobs_by_id(e2e_store).values()) == 2000

    try:
        wait_for(done, timeout=120, what="2000 jobs delivered")
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
            print(renewald.stderr(proc)[-3000:])
        print(
            {
                s: sum(j["status"] == s for j in jobs_by_id(e2e_store).values())
                for s in ("pending", "running", "done", "failed")
            }
        )
        raise
    for proc in procs:
        code, err = renewald.stop(proc)
        assert code == 0, err

    job_ids = {j for j, _ in specs}
    assert len(job_ids) == 2000
    assert_delivered_exactly_once(e2e_store, job_ids, daemons=3)


def assert_delivered_exactly_once(store: Store, job_ids: set[str], *, daemons: int) -> None:
    """Each job delivered by one attempt, every daemon took a share, and no two jobs of one
    conversation ran at the same time."""
    rows = attempts(store)
    assert len(rows) == len(job_ids)
    assert {r["job_id"] for r in rows} == job_ids
    assert all(r["outcome"] == "delivered" for r in rows)
    assert len({r["lease_owner"] for r in rows}) == daemons, "every daemon took a share"
    jobs = jobs_by_id(store)
    assert all(j["attempt_count"] == 1 for j in jobs.values())
    by_conv: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        conv = jobs[r["job_id"]]["local_conversation_id"]
        by_conv.setdefault(conv, []).append((r["started_at"], r["finished_at"]))
    for conv, spans in by_conv.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"two running jobs overlapped in {conv}"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_under_tracker_contention(renewald: Renewald, e2e_store: Store) -> None:
    """A second process writes the same artifact.db in a tight loop while renewald runs."""
    add_conversations(e2e_store, {f"c{i}": "auto" for i in range(50)})
    add_jobs(e2e_store, [(f"j{i}", f"c{i % 50}") for i in range(300)])
    db_path = renewald.db_url.removeprefix("sqlite:///")
    writer = subprocess.Popen(
        [
            "python3", "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
            "end = time.time() + 8\n"
            "i = 0\n"
            "while time.time() < end:\n"
            "    c.execute('BEGIN IMMEDIATE')\n"
            "    c.execute('UPDATE local_conversations SET updated_at = ?', (i,))\n"
            "    c.execute('COMMIT')\n"
            "    i += 1\n",
            db_path,
        ]
    )  # fmt: skip
    try:
        out = renewald.run("run", "--once")
    finally:
        writer.wait(timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert len(attempts(e2e_store)) == 300
    assert all(j["status"] == "done" for j in jobs_by_id(e2e_store).values())


def test_job_written_by_another_process_wakes_the_daemon(
    renewald: Renewald, e2e_store: Store
) -> None:
    """With an hour between regular polls, only the change watcher can pick this job up."""
    renewald.write_config(poll_interval="1h")
    proc = renewald.start()
    wait_for(lambda: e2e_store.list_daemons(), what="daemon registered")
    add_conversations(e2e_store, {"woken": "auto"})
    add_jobs(e2e_store, [("woken-1", "woken")])
    wait_for(lambda: job_of(e2e_store, "woken-1").status == "done", what="job delivered")
    code, err = renewald.stop(proc)
    assert code == 0, err


def _done(store: Store, job_id: str) -> bool:
    return job_of(store, job_id).status == "done"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_sqlite_wake_up_with_and_without_inotify(
    renewald: Renewald, e2e_store: Store, watch: str
) -> None:
    """Inotify wakes the daemon; where it is absent (forced here) `data_version` polling does."""
    if watch == "poll":
        renewald.extra_env[FORCE_POLL_ENV] = "poll"
    renewald.write_config(poll_interval="1h")
    proc = renewald.start()
    wait_for(lambda: e2e_store.list_daemons(), what="daemon registered")
    add_conversations(e2e_store, {"woken": "auto"})
    for n in range(3):
        job_id = f"woken-{n}"
        add_jobs(e2e_store, [(job_id, "woken")])
        wait_for(functools.partial(_done, e2e_store, job_id), what=f"{job_id} delivered")
    code, err = renewald.stop(proc)
    assert code == 0, err
    assert ("changes.polling" in err) == (watch == "poll")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_once_on_a_tty_shows_progress(renewald: Renewald, e2e_store: Store) -> None:
    """A person running `run --once` in a terminal sees a progress bar, then the summary."""
    import pty

    add_conversations(e2e_store, {f"t{i}": "auto" for i in range(30)})
    add_jobs(e2e_store, [(f"tty-{i}", f"t{i}") for i in range(30)])
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [RENEWALD, "run", "--once"],
        env=renewald.env,
        cwd=renewald.dir,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    proc.wait(timeout=60)
    os.close(primary)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "delivering" in text and "30/30" in text
    assert "delivered 30" in text
