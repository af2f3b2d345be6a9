"""The ticks' executor: a daemon thread per tick, kept from run to run."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED
from apscheduler.schedulers.background import BackgroundScheduler

from renewald.daemon.ticks import TickExecutor


def test_each_tick_keeps_one_daemon_thread_across_runs() -> None:
    ran: queue.SimpleQueue[tuple[str, threading.Thread]] = queue.SimpleQueue()
    scheduler = BackgroundScheduler(timezone=UTC, executors={"default": TickExecutor()})
    for job_id in ("poll", "rescue"):
        scheduler.add_job(
            lambda job_id=job_id: ran.put((job_id, threading.current_thread())),
            "interval",
            hours=1,
            id=job_id,
            next_run_time=datetime.now(UTC),
        )
    scheduler.start()
    try:
        seen: dict[str, set[threading.Thread]] = {"poll": set(), "rescue": set()}
        for _ in range(5):
            for _ in range(2):
                job_id, thread = ran.get(timeout=10)
                seen[job_id].add(thread)
            for job_id in seen:
                scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))
    finally:
        scheduler.shutdown(wait=False)
    [poll] = seen["poll"]
    [rescue] = seen["rescue"]
    assert poll is not rescue and poll.daemon and rescue.daemon
    assert poll.name == "renewald-tick-poll"
    poll.join(timeout=10)
    assert not poll.is_alive(), "shutdown lets the tick's thread end"


def test_a_run_asked_for_while_the_tick_runs_waits_behind_it_instead_of_being_skipped() -> None:
    """The pacer moves the poll to "now" from inside the poll; APScheduler's own check
    would skip that run and wait a whole interval (an hour here)."""
    runs: queue.SimpleQueue[int] = queue.SimpleQueue()
    submitted = threading.Event()
    scheduler = BackgroundScheduler(timezone=UTC, executors={"default": TickExecutor()})
    scheduler.add_listener(
        lambda event: submitted.set(), EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES
    )
    count = iter(range(1, 100))

    def tick() -> None:
        n = next(count)
        if n == 1:
            submitted.clear()
            scheduler.modify_job("poll", next_run_time=datetime.now(UTC))
            assert submitted.wait(timeout=10), "the scheduler saw the move while we ran"
        runs.put(n)

    scheduler.add_job(tick, "interval", hours=1, id="poll", next_run_time=datetime.now(UTC))
    scheduler.start()
    try:
        assert runs.get(timeout=10) == 1
        assert runs.get(timeout=10) == 2
    finally:
        scheduler.shutdown(wait=False)
