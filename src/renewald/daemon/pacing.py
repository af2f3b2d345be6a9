"""When the poll and the schedule tick run next.

After every poll the next one is set to the earliest future `next_attempt_at`, so a job
is picked up within milliseconds of becoming due, but never later than the longest gap
between polls: one `poll_interval` without a change watcher, `Timings.watched_poll_ms`
(five intervals) while one is up, since another process's writes then wake the poller
(daemon/watching.py). The schedule tick sleeps until the next fire time, at most one
`schedule_tick_ms`, or the long safety interval while a watcher is up: both watchers see
schedule writes (SQLite's sees every commit; PostgreSQL's LISTEN is notified of schedule
rows as of jobs, migration 0006).

The pacer moves the ticks' next runs with APScheduler's `modify_job`; their intervals
remain the pace after a tick that failed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.base import BaseScheduler

from renewald.clock import Clock, ms_to_datetime
from renewald.config import Timings
from renewald.daemon.watching import WatchedChanges


class Pacer:
    """The next runs of the poll and of the schedule tick, and what moves them."""

    def __init__(
        self,
        clock: Clock,
        timings: Timings,
        *,
        stopping: Callable[[], bool],
    ) -> None:
        self.clock = clock
        self.timings = timings
        self.scheduler: BaseScheduler | None = None
        self.changes: WatchedChanges | None = None
        self._stopping = stopping
        # Held while a poll runs; a wake-up meanwhile asks it for one more round.
        self.poll_lock = threading.Lock()
        self.poll_again = threading.Event()
        self._wake_at: int | None = None
        self._wake_lock = threading.Lock()

    def watching(self) -> bool:
        """Whether a change watcher is up now: another process's writes then wake us."""
        return self.changes is not None and self.changes.watching

    def wake_at(self, at_ms: int, *, polled_at: int | None = None) -> None:
        """Make the next poll happen at `at_ms` (or at once), unless one is due sooner.
        After a poll (`polled_at`), set it whether sooner or later than the one planned.

        Never later than the longest gap between polls from now, whatever the earliest
        `next_attempt_at` is.
        """
        if self.scheduler is None:
            return
        now = self.clock.now_ms()
        t = self.timings
        at_ms = min(at_ms, now + (t.watched_poll_ms if self.watching() else t.poll_ms))
        with self._wake_lock:
            if polled_at is None and self._wake_at is not None and now < self._wake_at <= at_ms:
                return
            self._wake_at = at_ms
        self._move("poll", max(at_ms, now))

    def poll_soon(self) -> None:
        if self.poll_lock.locked():
            self.poll_again.set()
        else:
            self.wake_at(self.clock.now_ms())

    def after_schedule_tick(self, upcoming: int | None, now: int) -> None:
        """Run the schedule tick next at the next fire time `upcoming`, but no later than
        its interval unless the watcher would wake us for a schedule written meanwhile.
        A fire time still due after the tick (a row that could not be advanced) waits
        for the interval."""
        t = self.timings
        latest = now + (t.watched_poll_ms if self.watching() else t.schedule_tick_ms)
        if upcoming is None or upcoming <= now:
            upcoming = latest
        self._move("schedules", min(upcoming, latest))

    def on_change(self) -> None:
        """Another process wrote jobs or schedules (on SQLite, anything): poll now rather
        than at the next interval, and look at the schedules again."""
        if self._stopping():
            return
        self.poll_soon()
        self._move("schedules", self.clock.now_ms())

    def on_watch_lost(self) -> None:
        """The watch went down: what was planned for the end of the long safety interval
        runs now, and plans again at the short one."""
        if not self._stopping():
            self.poll_soon()
            self._move("schedules", self.clock.now_ms())

    def _move(self, job_id: str, at_ms: int) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
            scheduler.modify_job(job_id, next_run_time=ms_to_datetime(at_ms))
