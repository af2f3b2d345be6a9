"""The process around the deliveries, end to end: signals, systemd notify, a database that
drops its connections, a log directory that cannot be written, and `health`.

Every test runs the real `renewald` executable; targets are real HTTP servers on
127.0.0.1, systemd is a real AF_UNIX datagram socket, PostgreSQL sessions are really
terminated. Waits are conditions with bounds; the only timing asserted is that a process
exited before a bound.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from renewald.daemon.service import SHUTDOWN_TAIL
from renewald.logging import read_lines
from renewald.store import Store
from renewald.store.schema import renewal_job_attempts, renewal_jobs
from tests.e2e.conftest import (
    HookTarget,
    Renewald,
    add_webhook_jobs,
    pg_application_url,
    table,
    terminate_sessions,
)
from tests.waiting import wait_for


def statuses(store: Store) -> dict[str, str]:
    return {r["job_id"]: r["status"] for r in table(store, renewal_jobs)}


def events(renewald: Renewald, proc: subprocess.Popen[str], name: str) -> list[dict[str, Any]]:
    """The console's JSON lines (`console = "json"`) whose event is `name`."""
    lines = [line for line in renewald.stderr(proc).splitlines() if line.startswith("{")]
    return [e for e in map(json.loads, lines) if e.get("event") == name]


def withheld(renewald: Renewald, proc: subprocess.Popen[str]) -> int:
    """How many watchdog pings were withheld (sdnotify logs through the standard library)."""
    return renewald.stderr(proc).splitlines().count("renewald.sdnotify: watchdog_withheld")


class Hang:
    """Hold the database so that the daemon's poll cannot claim: SQLite `BEGIN EXCLUSIVE`
    (its writes wait for the lock), PostgreSQL `LOCK TABLE renewal_jobs` (everything
    touching the jobs waits; the daemon registry, and so the heartbeat, does not)."""

    def __init__(self, db_url: str, tables: str = "renewal_jobs") -> None:
        self.db_url = db_url
        self.tables = tables

    def __enter__(self) -> Hang:
        if self.db_url.startswith("sqlite"):
            self.conn = sqlite3.connect(
                self.db_url.removeprefix("sqlite:///"), isolation_level=None
            )
            self.conn.execute("BEGIN EXCLUSIVE")
            self.close = self.conn.rollback
        else:
            engine = create_engine(self.db_url)
            conn = engine.connect()
            tx = conn.begin()
            conn.execute(text(f"LOCK TABLE {self.tables} IN ACCESS EXCLUSIVE MODE"))

            def close() -> None:
                tx.rollback()
                conn.close()
                engine.dispose()

            self.close = close
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- SIGTERM -------------------------------------------------------------------------------

GRACE = 3.0


def test_sigterm_finishes_in_flight_and_releases_the_rest(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    ids = [f"job-{n:02d}" for n in range(30)]
    add_webhook_jobs(e2e_store, hook_target.url, ids)
    hook_target.delay = lambda job_id, attempt: 0.5
    renewald.write_config(workers=2, batch=8, shutdown_grace=f"{GRACE:g}s")
    proc = renewald.start()

    def claimed_beyond_workers() -> bool:
        running = sum(s == "running" for s in statuses(e2e_store).values())
        return hook_target.busy() == 2 and running > 2

    wait_for(claimed_beyond_workers, what="two deliveries in flight and more jobs claimed")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=GRACE + 1)
    assert proc.returncode == 0, renewald.stderr(proc)[-3000:]

    seen = hook_target.by_job()
    jobs = {r["job_id"]: r for r in table(e2e_store, renewal_jobs)}
    assert not [j for j, r in jobs.items() if r["status"] == "running"]
    for job_id, job in jobs.items():
        if job_id in seen:  # started before the signal: finished within the grace
            assert job["status"] == "done", job
        else:  # claimed but never started, or never claimed: as if untouched
            assert (job["status"], job["attempt_count"], job["lease_owner"]) == (
                "pending",
                0,
                None,
            ), job
    released = [x for x in renewald.log_lines() if x["event"] == "job.released"]
    assert released, "some claimed jobs were waiting for a worker when the signal came"
    assert {x["job_id"] for x in released}.isdisjoint(seen)
    attempts = table(e2e_store, renewal_job_attempts)
    assert sorted(a["job_id"] for a in attempts) == sorted(seen)
    assert e2e_store.list_daemons() == []
    assert "Traceback" not in renewald.stderr(proc)

    # What was released goes out on the next start, each job exactly once.
    hook_target.delay = lambda job_id, attempt: 0.0
    proc = renewald.start()
    wait_for(lambda: set(statuses(e2e_store).values()) == {"done"}, what="the rest delivered")
    assert renewald.stop(proc)[0] == 0
    assert all(len(v) == 1 for v in hook_target.by_job().values())
    assert len(hook_target.by_job()) == len(ids)


def test_sigterm_with_a_delivery_stuck_past_the_grace(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    """A delivery that outlives `shutdown_grace` is left to its lease; the process still
    exits 0 on time, and the next start rescues the job."""
    add_webhook_jobs(e2e_store, hook_target.url, ["stuck"])
    hook_target.delay = lambda job_id, attempt: 60.0 if attempt == 1 else 0.0
    renewald.write_config(shutdown_grace="1s", lease="2s", rescue_interval="200ms")
    proc = renewald.start()
    wait_for(hook_target.busy, what="the delivery in flight")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=1 + SHUTDOWN_TAIL + 1)  # the grace, the bounded tail, the exit
    assert proc.returncode == 0, renewald.stderr(proc)[-3000:]
    assert statuses(e2e_store) == {"stuck": "running"}
    assert e2e_store.list_daemons() == []

    hook_target.release.set()
    proc = renewald.start()
    wait_for(lambda: statuses(e2e_store) == {"stuck": "done"}, what="rescued and delivered")
    assert renewald.stop(proc)[0] == 0
    outcomes = [a["outcome"] for a in sorted(table(e2e_store, renewal_job_attempts),
                                             key=lambda a: a["attempt_no"])]  # fmt: skip
    assert outcomes == ["abandoned", "delivered"]
    assert [s.idempotency_key for s in hook_target.by_job()["stuck"]] == ["stuck", "stuck"]


def test_second_sigterm_stops_at_once(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    add_webhook_jobs(e2e_store, hook_target.url, ["slow"])
    hook_target.delay = lambda job_id, attempt: 60.0
    renewald.write_config(shutdown_grace="60s")
    proc = renewald.start()
    wait_for(hook_target.busy, what="the delivery in flight")
    proc.send_signal(signal.SIGTERM)
    wait_for(
        lambda: events(renewald, proc, "daemon.stopping"),
        what="the graceful stop waiting on the delivery",
    )
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)  # far inside the 60s grace
    assert proc.returncode == 1
    assert "second signal" in renewald.stderr(proc)
    assert statuses(e2e_store) == {"slow": "running"}  # its lease expires; rescue takes it


def test_sigterm_while_the_database_hangs(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    """The database stops answering mid-delivery, then SIGTERM: the process still exits 0
    on time (nothing it waits on is unbounded); the unrecorded delivery is rescued and
    sent again later, with the same Idempotency-Key."""
    add_webhook_jobs(e2e_store, hook_target.url, ["j"])
    hook_target.delay = lambda job_id, attempt: 0.0 if attempt > 1 else 30.0
    renewald.write_config(shutdown_grace="2s", lease="1500ms", rescue_interval="200ms")
    proc = renewald.start()
    proc_pid = proc.pid
    wait_for(hook_target.busy, what="the delivery in flight")
    with Hang(renewald.db_url, tables="renewal_jobs, renewald_daemons"):
        proc.send_signal(signal.SIGTERM)
        hook_target.release.set()  # the target answers; the record cannot be written
        # The answer waits for its record through the grace, then the tail, then exit.
        proc.wait(timeout=2 + SHUTDOWN_TAIL + 1)
    assert proc.returncode == 0, renewald.stderr(proc)[-3000:]
    assert statuses(e2e_store) == {"j": "running"}

    proc = renewald.start()
    wait_for(lambda: statuses(e2e_store) == {"j": "done"}, what="rescued and delivered")
    assert renewald.stop(proc)[0] == 0
    assert [s.idempotency_key for s in hook_target.by_job()["j"]] == ["j", "j"]
    # The first process could not remove its registry row: it stays, stale, and rescue
    # treated it as dead; the second removed its own.
    [stale] = e2e_store.list_daemons()
    assert stale.pid == proc_pid


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_sigterm_while_a_claim_waits(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget, systemd: FakeSystemd
) -> None:
    """SIGTERM lands while a poll is inside its claim (waiting on a table lock): the jobs
    it claims once the lock goes are given back, not held unstarted until the grace ends
    and not left running for rescue."""
    ids = [f"job-{n}" for n in range(5)]
    add_webhook_jobs(e2e_store, hook_target.url, ids)
    renewald.extra_env.update(systemd.env(0))
    renewald.write_config(shutdown_grace="5s")
    with Hang(renewald.db_url):
        proc = renewald.start()
        wait_for(lambda: systemd.where("READY", "1"), what="READY=1; the first poll waits")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: systemd.where("STOPPING", "1"), what="STOPPING=1")
    proc.wait(timeout=5 + 1)
    assert proc.returncode == 0, renewald.stderr(proc)[-3000:]
    jobs = table(e2e_store, renewal_jobs)
    assert {(r["status"], r["attempt_count"], r["lease_owner"]) for r in jobs} == {
        ("pending", 0, None)
    }
    assert hook_target.count() == 0
    [stopped] = events(renewald, proc, "daemon.stopped")
    assert stopped["released"] == len(ids)


def test_a_once_run_is_a_live_owner(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    """`run --once` registers and heartbeats like the daemon: a daemon rescuing every
    100ms leaves its delivery alone for longer than several leases."""
    add_webhook_jobs(e2e_store, hook_target.url, ["long"])
    hook_target.delay = lambda job_id, attempt: 3.0
    renewald.write_config(lease="900ms", rescue_interval="100ms")
    once = renewald.start("--once")
    wait_for(hook_target.busy, what="the once run delivering")
    daemon = renewald.start()
    wait_for(lambda: len(e2e_store.list_daemons()) == 2, what="both registered")
    once.wait(timeout=30)
    assert once.returncode == 0, renewald.stderr(once)[-3000:]
    [attempt] = table(e2e_store, renewal_job_attempts)
    assert attempt["outcome"] == "delivered" and attempt["lease_owner"] != ""
    assert statuses(e2e_store) == {"long": "done"}
    assert hook_target.count() == 1
    assert renewald.stop(daemon)[0] == 0
    assert not events(renewald, daemon, "job.rescued")


# -- PostgreSQL drops the daemon's connections ------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgresql_sessions_terminated_mid_run(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    """Every session of the daemon is terminated over and over while it delivers: pooled
    idle ones (pool_pre_ping replaces them) and ones in the middle of a statement (the
    transaction fails once and `Store._run` runs it again)."""
    ids = [f"job-{n:03d}" for n in range(150)]
    add_webhook_jobs(e2e_store, hook_target.url, ids)
    hook_target.delay = lambda job_id, attempt: 0.04
    renewald.db_url, app = pg_application_url(renewald.db_url)
    renewald.write_config(workers=4, batch=8, poll_interval="100ms")
    proc = renewald.start()
    wait_for(lambda: hook_target.count() >= 5, what="deliveries under way")

    terminated = [0, 0]
    stop = threading.Event()

    def storm() -> None:
        while not stop.wait(0.03):
            total, active = terminate_sessions(e2e_store, app)
            terminated[0] += total
            terminated[1] += active

    storming = threading.Thread(target=storm, daemon=True)
    storming.start()
    try:
        wait_for(lambda: hook_target.count() >= 100, timeout=60, what="deliveries go on")
        assert proc.poll() is None, renewald.stderr(proc)[-3000:]
    finally:
        stop.set()
        storming.join(timeout=10)
    print(f"terminated {terminated[0]} sessions, {terminated[1]} mid-statement")
    assert terminated[1] > 0, "no statement was cut off: the test proved nothing"

    wait_for(lambda: set(statuses(e2e_store).values()) == {"done"}, what="every job delivered")
    assert proc.poll() is None, "no crash, no restart: the same process carried on"
    code, err = renewald.stop(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "duty_died" not in err

    # Nothing lost, nothing recorded twice: one delivered attempt per job, numbered
    # attempts without gaps, and the target saw every job exactly once.
    attempts = table(e2e_store, renewal_job_attempts)
    delivered = sorted(a["job_id"] for a in attempts if a["outcome"] == "delivered")
    assert delivered == ids
    for job in table(e2e_store, renewal_jobs):
        numbers = sorted(a["attempt_no"] for a in attempts if a["job_id"] == job["job_id"])
        assert numbers == list(range(1, job["attempt_count"] + 1)), job
    assert sorted(hook_target.by_job()) == ids
    assert all(len(seen) == 1 for seen in hook_target.by_job().values())
    assert e2e_store.list_daemons() == []


# -- the job log cannot be written ------------------------------------------------------


def _deliver_some(renewald: Renewald, store: Store, target: HookTarget, n: int) -> list[str]:
    ids = [f"job-{n:02d}" for n in range(n)]
    add_webhook_jobs(store, target.url, ids)
    return ids


def _run_with_broken_log(
    renewald: Renewald, store: Store, target: HookTarget, *, expect: str
) -> subprocess.Popen[str]:
    ids = _deliver_some(renewald, store, target, 20)
    proc = renewald.start()
    wait_for(lambda: set(statuses(store).values()) == {"done"}, what="deliveries recorded")
    # More work after the first complaint: still no second line within the minute.
    more = [f"late-{n:02d}" for n in range(20)]
    add_webhook_jobs(store, target.url, more)
    wait_for(lambda: set(statuses(store).values()) == {"done"}, what="late deliveries recorded")
    assert len(table(store, renewal_job_attempts)) == len(ids) + len(more)
    complaints = events(renewald, proc, "job_log.unwritable")
    assert len(complaints) == 1, complaints
    assert expect in complaints[0]["error"] and complaints[0]["level"] == "error"
    code, err = renewald.stop(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    return proc


def test_log_dir_under_a_regular_file(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    blocker = renewald.dir / "not-a-dir"
    blocker.write_text("a file where the log directory's parent should be\n")
    renewald.log_dir = blocker / "logs"
    renewald.write_config()
    _run_with_broken_log(renewald, e2e_store, hook_target, expect="Not a directory")
    job = table(e2e_store, renewal_jobs)[0]
    assert job["log_path"].startswith(str(renewald.log_dir))


def test_log_disk_full(renewald: Renewald, e2e_store: Store, hook_target: HookTarget) -> None:
    renewald.log_dir.mkdir()
    now = datetime.now(UTC)
    for day in (now, now + timedelta(days=1)):  # the run may cross midnight UTC
        (renewald.log_dir / f"{day:%Y-%m-%d}.jsonl").symlink_to("/dev/full")
    _run_with_broken_log(renewald, e2e_store, hook_target, expect="No space left on device")


def test_log_dir_replaced_by_a_file_mid_run(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    add_webhook_jobs(e2e_store, hook_target.url, ["before"])
    proc = renewald.start()
    wait_for(lambda: statuses(e2e_store) == {"before": "done"}, what="the first delivery")
    wait_for(lambda: any(x["job_id"] == "before" for x in renewald.log_lines()), what="its line")
    shutil.rmtree(renewald.log_dir)
    renewald.log_dir.write_text("not a directory any more\n")

    add_webhook_jobs(e2e_store, hook_target.url, [f"after-{n}" for n in range(10)])
    wait_for(lambda: set(statuses(e2e_store).values()) == {"done"}, what="later deliveries")
    wait_for(lambda: events(renewald, proc, "job_log.unwritable"), what="the log says so loudly")

    # Put the directory back: the log recovers without a restart.
    renewald.log_dir.unlink()
    renewald.log_dir.mkdir()
    add_webhook_jobs(e2e_store, hook_target.url, ["recovered"])
    wait_for(
        lambda: any(x["job_id"] == "recovered" for x in renewald.log_lines()),
        what="lines in the restored directory",
    )
    code, err = renewald.stop(proc)
    assert code == 0, err[-3000:]
    assert len(events(renewald, proc, "job_log.unwritable")) == 1


# -- SIGHUP ------------------------------------------------------------------------------


def test_sighup_reopens_the_job_log(renewald: Renewald, e2e_store: Store) -> None:
    def conversations(path: Path) -> set[str]:
        return {x["conversation"] for x in read_lines(path) if "conversation" in x}

    proc = renewald.start()
    wait_for(e2e_store.list_daemons, what="daemon registered")
    renewald.enqueue("c1", "one", "--target-kind", "log")
    wait_for(lambda: renewald.log_lines(), what="the first line")
    [path] = renewald.log_dir.glob("*.jsonl")
    rotated = path.with_suffix(".jsonl.1")
    path.rename(rotated)
    proc.send_signal(signal.SIGHUP)
    renewald.enqueue("c2", "two", "--target-kind", "log")
    wait_for(lambda: path.exists() and "c2" in conversations(path), what="a fresh file")
    assert conversations(rotated) == {"c1"}
    assert proc.poll() is None
    code, err = renewald.stop(proc)
    assert code == 0, err
    assert events(renewald, proc, "job_log.reopened")


# -- health ------------------------------------------------------------------------------


def test_health(renewald: Renewald, e2e_store: Store) -> None:
    out = renewald.run("health")
    assert (out.returncode, out.stdout.count("\n"), out.stderr) == (0, 1, "")

    out = renewald.run("health", "--daemon")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "no daemon" in out.stderr

    proc = renewald.start()
    wait_for(e2e_store.list_daemons, what="daemon registered")
    out = renewald.run("health", "--daemon")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.startswith("ok: daemon ")

    # kill -9 leaves the registry row: unhealthy once its heartbeat is stale.
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    renewald.write_config(lease="1s")  # stale after three heartbeats of lease/3

    def unhealthy() -> subprocess.CompletedProcess[str] | None:
        out = renewald.run("health", "--daemon")
        return out if out.returncode == 1 else None

    out = wait_for(unhealthy, timeout=30, what="health to notice the dead daemon")
    assert out.stderr.count("\n") == 1 and "last heartbeat" in out.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_health_without_a_database(renewald: Renewald, tmp_path: Path) -> None:
    renewald.db_url = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    out = renewald.run("health")
    assert out.returncode == 1, out
    assert out.stdout == "" and out.stderr.count("\n") == 1
    assert "unhealthy" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_health_with_postgresql_down(renewald: Renewald) -> None:
    # A port nobody listens on: the database does not answer.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    renewald.db_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    out = renewald.run("health", timeout=30)
    assert out.returncode == 1, out
    assert out.stderr.count("\n") == 1 and "unhealthy" in out.stderr


# -- systemd notify ---------------------------------------------------------------------


class FakeSystemd:
    """A bound AF_UNIX datagram socket standing in for systemd; collects what arrives."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rnwd-"))  # sun_path is 108 bytes at most
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.messages.append(fields)

    def env(self, watchdog_usec: int) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(watchdog_usec)}

    def where(self, key: str, value: str | None = None) -> list[int]:
        """Indexes of the messages that carry `key` (with `value`, if given)."""
        with self._lock:
            return [
                i
                for i, m in enumerate(self.messages)
                if key in m and (value is None or m[key] == value)
            ]

    def count(self, key: str) -> int:
        return len(self.where(key))

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_notify_ready_status_watchdog_stopping(
    renewald: Renewald, e2e_store: Store, systemd: FakeSystemd
) -> None:
    renewald.extra_env.update(systemd.env(1_000_000))
    renewald.write_config(lease="1500ms")
    proc = renewald.start()
    wait_for(lambda: systemd.where("READY", "1"), what="READY=1")
    # READY=1 comes after start-up: schema checked, the daemon registered.
    assert e2e_store.list_daemons()
    for n in range(3):
        renewald.enqueue(f"c{n}", "hello", "--target-kind", "log")
    wait_for(
        lambda: any(
            m.get("STATUS", "").endswith("delivered 3, rescheduled 0, failed 0")
            for m in list(systemd.messages)
        ),
        what="STATUS= with the delivered count",
    )
    status = next(m["STATUS"] for m in systemd.messages if "delivered" in m.get("STATUS", ""))
    assert status.startswith("holding ") and "in flight " in status
    wait_for(lambda: systemd.count("WATCHDOG") >= 3, what="WATCHDOG=1 pings")
    assert min(systemd.where("WATCHDOG", "1")) > min(systemd.where("READY", "1"))

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 0, renewald.stderr(proc)[-3000:]
    [stopping] = systemd.where("STOPPING", "1")
    assert stopping > max(systemd.where("READY", "1"))


def test_no_ready_without_the_schema(renewald: Renewald, systemd: FakeSystemd) -> None:
    if renewald.db_url.startswith("sqlite"):
        sqlite3.connect(renewald.db_url.removeprefix("sqlite:///")).close()
    renewald.extra_env.update(systemd.env(1_000_000))
    proc = renewald.start()
    proc.wait(timeout=30)
    assert proc.returncode == 2
    err = renewald.stderr(proc)
    assert "renewald migrate" in err and err.count("\n") == 1
    assert systemd.where("READY") == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_watchdog_withheld_while_the_poll_hangs(
    renewald: Renewald, e2e_store: Store, systemd: FakeSystemd
) -> None:
    """A poll stuck on a table lock never ends: the watchdog is withheld. (A locked SQLite
    file is an outage instead: each poll gives up after busy_timeout and its retry budget,
    the ticks keep ending, and the watchdog keeps being fed; see test_outage.py.)"""
    renewald.extra_env.update(systemd.env(1_000_000))  # a ping every 0.5s
    renewald.write_config(lease="1500ms", poll_interval="100ms")
    proc = renewald.start()
    wait_for(lambda: systemd.count("WATCHDOG") >= 2, what="pings while healthy")

    with Hang(renewald.db_url):
        wait_for(
            lambda: withheld(renewald, proc),
            what="the watchdog withheld",
        )
        pings = systemd.count("WATCHDOG")
        # Three withheld ticks = 1.5s without a ping, past WATCHDOG_USEC (1s): systemd
        # would have fired.
        wait_for(
            lambda: withheld(renewald, proc) >= 4,
            what="the watchdog withheld for longer than its window",
        )
        assert systemd.count("WATCHDOG") == pings
        assert proc.poll() is None

    wait_for(lambda: systemd.count("WATCHDOG") > pings, what="pings again once the poll works")
    assert renewald.stop(proc)[0] == 0


# -- a daemon left alone for long does not grow ---------------------------------------


def test_idle_daemon_is_quiet(renewald: Renewald, e2e_store: Store) -> None:
    """Idle ticks say nothing: no line per poll, heartbeat or rescue."""
    renewald.write_config(poll_interval="50ms", rescue_interval="50ms", lease="300ms")
    proc = renewald.start()
    wait_for(e2e_store.list_daemons, what="daemon registered")
    beats = [d.heartbeat_at for d in e2e_store.list_daemons()]
    wait_for(
        lambda: [d.heartbeat_at for d in e2e_store.list_daemons()] != beats,
        what="a few heartbeats",
    )
    code, err = renewald.stop(proc)
    assert code == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 3, lines  # started, stopped, and nothing per tick
