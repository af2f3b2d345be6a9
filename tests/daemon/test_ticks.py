"""The ticks' executor: a daemon thread per tick, kept from run to run."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime

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
