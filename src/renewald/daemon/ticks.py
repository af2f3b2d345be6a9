"""The daemon's periodic duties as APScheduler jobs, and the threads they run on.

Each duty is one `*_tick` method of the service, wrapped by `Service._guarded`. The poll
and the schedule tick are interval jobs whose next run the service moves (`modify_job`)
after each run: sooner for a due time it knows, later while a change watcher is up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError, run_job
from apscheduler.schedulers.background import BackgroundScheduler

from renewald.clock import ms_to_datetime

if TYPE_CHECKING:
    from renewald.daemon.service import Service

_Run = Callable[[], None]


class TickExecutor(BaseExecutor):
    """Runs each tick on a daemon thread of its own, kept for that tick.

    concurrent.futures' pool threads (APScheduler's ThreadPoolExecutor) are joined when
    the interpreter exits, so one tick stuck in a database call that does not answer
    would hold a stopped daemon up until systemd's SIGKILL: these are daemon threads.
    A tick's thread is started at its first run and fed through a queue afterwards, so
    an idle daemon does not start a thread per tick; one thread runs one run at a time.

    A run asked for while the tick still runs waits behind it instead of being skipped:
    the pacer moves a tick's next run from inside that tick (a job due a millisecond
    after the poll), and APScheduler would skip that run and wait a whole interval.
    At most one waits (`max_instances` + 1 in all), so a stuck tick piles up nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._queues: dict[str, queue.SimpleQueue[_Run | None]] = {}
        self._queues_lock = threading.Lock()

    def submit_job(self, job: Any, run_times: list[Any]) -> None:
        assert self._lock is not None, "the scheduler starts its executors"
        with self._lock:
            if self._instances[job.id] > job.max_instances:
                raise MaxInstancesReachedError(job)
            self._do_submit_job(job, run_times)
            self._instances[job.id] += 1

    def _do_submit_job(self, job: Any, run_times: list[Any]) -> None:
        def run() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        self._queue_of(job.id).put(run)

    def _queue_of(self, job_id: str) -> queue.SimpleQueue[_Run | None]:
        with self._queues_lock:
            runs = self._queues.get(job_id)
            if runs is None:
                runs = self._queues[job_id] = queue.SimpleQueue()
                threading.Thread(
                    target=_serve, args=(runs,), name=f"renewald-tick-{job_id}", daemon=True
                ).start()
            return runs

    def shutdown(self, wait: bool = True) -> None:
        """Let each tick's thread end after its current run; never waits for one."""
        with self._queues_lock:
            queues, self._queues = list(self._queues.values()), {}
        for runs in queues:
            runs.put(None)


def _serve(runs: queue.SimpleQueue[_Run | None]) -> None:
    while (run := runs.get()) is not None:
        run()


def build_scheduler(service: Service, *, once: bool) -> BackgroundScheduler:
    """The service's ticks as jobs: all of them for `run`, heartbeat and watchdog only for
    `run --once` (which polls, rescues and fires schedules itself)."""
    d = service.config.daemon
    t = service.timings
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": TickExecutor()},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
    )
    now = ms_to_datetime(service.clock.now_ms())
    guarded = service.guarded

    def every(tick: _Run, seconds: float, job_id: str, *, at_once: bool = False) -> None:
        start = {"next_run_time": now} if at_once else {}
        scheduler.add_job(guarded(tick), "interval", seconds=seconds, id=job_id, **start)

    if not once:
        # The poll's and the schedule tick's intervals are their pace after an error;
        # after a run that ended, the service sets their next run itself.
        every(service.poll_tick, d.poll_interval, "poll", at_once=True)
        every(service.upkeep.rescue_tick, d.rescue_interval, "rescue", at_once=True)
        if service.config.retention.older_than is not None:
            every(service.upkeep.retention_tick, service.config.retention.interval, "retention")
        every(service.schedule_tick, t.schedule_tick_ms / 1000, "schedules", at_once=True)
    every(service.heartbeat_tick, d.heartbeat_interval, "heartbeat")
    if service.notifier.watchdog_interval:
        every(service.watchdog_tick, service.notifier.watchdog_interval, "watchdog")
    scheduler.add_listener(service.on_tick_error, EVENT_JOB_ERROR)
    return scheduler
