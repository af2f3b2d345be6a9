"""The process (DESIGN §6): ticks on APScheduler, signals, systemd notify, one-shot runs.

Signal handlers only set flags; the main thread acts on them. APScheduler runs the
periodic duties — poll, heartbeat, rescue, schedules, watchdog — each as one `*_tick`
that reads the clock once and passes `now` down (daemon/ticks.py). When the poll and the
schedule tick run next is daemon/pacing.py; the housekeeping ticks daemon/upkeep.py;
`run --once` daemon/once.py; stopping daemon/shutdown.py.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import structlog
from apscheduler.events import JobExecutionEvent
from sqlalchemy.exc import SQLAlchemyError

from renewald import __version__
from renewald.adapters import AdapterRegistry
from renewald.clock import Clock, SystemClock
from renewald.config import Config, Timings
from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.breaker import BreakerSettings
from renewald.daemon.dispatcher import Dispatcher, DispatchSettings
from renewald.daemon.once import run_once
from renewald.daemon.owner import make_owner_id
from renewald.daemon.pacing import Pacer
from renewald.daemon.parts import DaemonParts
from renewald.daemon.rescuer import Rescuer
from renewald.daemon.schedules import TickResult, fire_due_schedules, next_fire_time
from renewald.daemon.sdnotify import Notifier, WatchdogGate
from renewald.daemon.shutdown import SHUTDOWN_TAIL as SHUTDOWN_TAIL  # tests import it here
from renewald.daemon.shutdown import shut_down
from renewald.daemon.summary import Summary
from renewald.daemon.ticks import build_scheduler
from renewald.daemon.upkeep import Upkeep
from renewald.daemon.watching import WatchedChanges
from renewald.errors import DatabaseError
from renewald.logging import JobLog, Throttle
from renewald.store.decode import MAX_EPOCH_MS
from renewald.store.engine import describe, is_transient

if TYPE_CHECKING:
    from renewald.daemon.listener import MetricsServer

_log = structlog.get_logger("renewald.daemon")

EXIT_DUTY_DIED = 1
# How long one database call of a duty retries an unreachable or locked database before
# the tick gives up; the duty runs again at its next interval, so an outage of any length
# is waited out a few seconds at a time, and the ticks keep ending (the watchdog's proof).
DUTY_BUDGET = 3.0
TICK_ERROR_LOG_EVERY = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    once: bool = False
    workers: int | None = None
    max_jobs: int | None = None


class Service:
    def __init__(
        self,
        config: Config,
        store,  # type: ignore[no-untyped-def]
        *,
        options: RunOptions = RunOptions(),
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        on_record: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.options = options
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier.from_env()
        self.owner = make_owner_id()
        self.timings = Timings.of(config)
        self.job_log = JobLog(config.logging.dir)
        self.adapters = AdapterRegistry(config.adapters)
        self.summary = Summary()
        self.parts = DaemonParts(store, self.clock, self.job_log, self.owner, self.summary)
        self._make_duties(config, on_record)
        self.gate = WatchdogGate(("poll", "heartbeat"), started=self.clock.monotonic())
        self.stopped = threading.Event()
        self._signals = 0
        self.exit_code = 0
        self.pace = Pacer(
            self.clock,
            self.timings,
            stopping=lambda: self.dispatcher.stopping,
        )
        self.poll_lock = self.pace.poll_lock
        self._backlog = False
        # When a poll last succeeded (monotonic): /healthz. The watchdog gate is marked
        # also when a tick ends in a database error (see `guarded`).
        self.polled_ok_at: float | None = None
        # Repeated warnings (a tick failing every second through an outage): one line a
        # minute per tick, with how many were not said.
        self.throttle = Throttle(TICK_ERROR_LOG_EVERY, monotonic=self.clock.monotonic)
        # Called with what each schedule tick did (metrics).
        self.schedule_observers: list[Callable[[TickResult], None]] = []

    def _make_duties(self, config: Config, on_record: Callable[[int], None] | None) -> None:
        """The dispatcher (polls and deliveries) and the rescuer, on one retry policy."""
        d, r, t = config.daemon, config.retry, self.timings
        policy = RetryPolicy(
            base=r.base,
            factor=r.factor,
            cap=r.cap,
            jitter=r.jitter,
            max_retry_after=r.max_retry_after,
        )
        self.dispatcher = Dispatcher(
            self.parts,
            adapters=self.adapters,
            settings=DispatchSettings(
                workers=self.options.workers or d.workers,
                batch=d.batch,
                lease_ms=t.lease_ms,
                cooldown_ms=round(d.cooldown_after_delivery * 1000),
                max_jobs=self.options.max_jobs,
            ),
            policy=policy,
            rand=random.Random(),
            on_capacity=self._on_capacity,
            on_record=on_record,
            on_retry=self.wake_at,
            breaker=BreakerSettings(
                failures=config.breaker.failures,
                pause_ms=round(config.breaker.pause * 1000),
                probe_ms=t.probe_ms,
            ),
        )
        self.rescuer = Rescuer(
            store=self.store,
            job_log=self.job_log,
            policy=policy,
            owner=self.owner,
            settle_ms=t.settle_ms,
            gap_ms=t.gap_ms,
            held_here=self.dispatcher.held_ids,
        )
        self.upkeep = Upkeep(self.parts, config=config, rescuer=self.rescuer)

    # -- signals ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os.write(2, b"renewald: second signal, stopping now (leases expire and are rescued)\n")
            os._exit(1)
        self.stopped.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.job_log.reopen()

    def request_stop(self) -> None:
        self.stopped.set()

    # -- ticks -----------------------------------------------------------------------

    def poll_tick(self) -> None:
        if not self.poll_lock.acquire(blocking=False):
            self.pace.poll_again.set()
            return
        try:
            while True:
                self.pace.poll_again.clear()
                now = self.clock.now_ms()
                result = self.dispatcher.poll_once(now)
                self.mark_polled()
                self._backlog = result.more_waiting
                if result.more_waiting and self.dispatcher.has_room():
                    continue
                if self.pace.poll_again.is_set():
                    continue
                break
            if not result.more_waiting:
                due = result.next_due_at
                self.wake_at(MAX_EPOCH_MS if due is None else due, polled_at=now)
        finally:
            self.poll_lock.release()
        if self.pace.poll_again.is_set():
            # A wake-up after the last round's check: with a watcher up, the next poll
            # planned could be five intervals away.
            self.pace.poll_soon()
        if self.dispatcher.exhausted() and not self.options.once:
            self.stopped.set()

    def mark_polled(self) -> None:
        at = self.clock.monotonic()
        self.polled_ok_at = at
        self.gate.mark("poll", at)

    def heartbeat_tick(self) -> None:
        now = self.clock.now_ms()
        self.dispatcher.extend_leases(now)  # no transaction while nothing is held
        status = f"holding {self.dispatcher.holding()}, in flight {self.dispatcher.in_flight()}"
        if not self.store.heartbeat_daemon(owner=self.owner, now=now, status=status):
            self._register(now)
        self.gate.mark("heartbeat", self.clock.monotonic())
        done = self.summary
        self.notifier.status(
            f"{status}; delivered {done.delivered}, rescheduled {done.rescheduled}, "
            f"failed {done.failed}"
        )

    def schedule_tick(self) -> None:
        """Turn due schedule fires into jobs (daemon/schedules.py) and wake the poller for
        them; then sleep until the next fire time. Idle, it is one read."""
        now = self.clock.now_ms()
        upcoming = next_fire_time(self.store)
        fired = TickResult()
        if upcoming is not None and upcoming <= now:
            fired = fire_due_schedules(
                store=self.store, job_log=self.job_log, now=now, owner=self.owner
            )
            upcoming = next_fire_time(self.store)
        for observer in self.schedule_observers:
            observer(fired)
        if fired.earliest_job_at is not None:
            self.wake_at(fired.earliest_job_at)
        if not self.options.once:
            self.pace.after_schedule_tick(upcoming, now)

    def watchdog_tick(self) -> None:
        t = self.timings
        self.notifier.watchdog_if(
            self.gate,
            self.clock.monotonic(),
            {
                # A tick in an outage ends only after its retry budget is spent: that
                # is still a loop that is alive.
                "poll": t.healthy_within_ms / 1000 + DUTY_BUDGET,
                "heartbeat": t.stale_after_ms / 1000 + DUTY_BUDGET,
            },
        )

    # -- waking the poller -------------------------------------------------------------

    def wake_at(self, at_ms: int, *, polled_at: int | None = None) -> None:
        """Poll at `at_ms` unless sooner is planned (daemon/pacing.py)."""
        self.pace.wake_at(at_ms, polled_at=polled_at)

    def _on_capacity(self) -> None:
        if self._backlog and not self.dispatcher.stopping:
            self.pace.poll_soon()

    # -- the process -----------------------------------------------------------------

    @property
    def changes(self) -> WatchedChanges | None:
        return self.pace.changes

    def _register(self, now: int) -> None:
        self.store.register_daemon(
            owner=self.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            now=now,
        )

    def guarded(self, tick: Callable[[], None]) -> Callable[[], None]:
        """A database that is gone is a warning and a missed tick, not a crash: the next
        tick tries again, for as long as the outage lasts. A tick that ended, even in a
        database error, still marks the watchdog gate: the watchdog says the daemon's own
        loop is alive, not that the database is. Only a tick that hangs starves it."""
        name = tick.__name__.removesuffix("_tick")

        def run() -> None:
            try:
                tick()
            except (SQLAlchemyError, DatabaseError) as exc:
                now = self.clock.monotonic()
                self.throttle.warn(
                    f"tick:{name}",
                    _log,
                    "tick.database_error",
                    tick=tick.__name__,
                    error=describe(exc),
                )
                if name in self.gate.required:
                    self.gate.mark(name, now)
            else:
                if self.throttle.clear(f"tick:{name}"):
                    _log.info("tick.database_recovered", tick=tick.__name__)

        run.__name__ = tick.__name__
        return run

    def on_tick_error(self, event: JobExecutionEvent) -> None:
        _log.critical(
            "daemon.duty_died",
            tick=event.job_id,
            error=f"{type(event.exception).__name__}: {event.exception}",
        )
        self.exit_code = EXIT_DUTY_DIED
        self.stopped.set()

    def run(self) -> int:
        """Run until stopped (or, with `once`, until nothing due is left); returns the exit code."""
        metrics = self._start_http()
        self._patiently(lambda: self._register(self.clock.now_ms()))
        self.dispatcher.start()
        once = self.options.once
        scheduler = build_scheduler(self, once=once)
        self.pace.scheduler = scheduler
        scheduler.start()
        if not once:
            self.pace.changes = WatchedChanges(
                self.store, self.pace.on_change, on_lost=self.pace.on_watch_lost
            )
            self.pace.changes.start()
        d = self.config.daemon
        _log.info(
            "daemon.started",
            owner=self.owner,
            version=__version__,
            once=once,
            workers=self.dispatcher.settings.workers,
            batch=d.batch,
            lease=f"{d.lease:g}s",
            log_dir=str(self.config.logging.dir),
        )
        self.notifier.ready(status="ready")
        try:
            if once:
                run_once(self)
            else:
                while not self.stopped.wait(1.0):
                    if self.dispatcher.fatal is not None:
                        self.exit_code = EXIT_DUTY_DIED
                        break
        finally:
            shut_down(self, scheduler)
            if metrics is not None:
                metrics.close()
        if self.dispatcher.fatal is not None:
            return EXIT_DUTY_DIED
        if self.exit_code:
            return self.exit_code
        return self.summary.exit_code() if once else 0

    def _start_http(self) -> MetricsServer | None:
        """`/metrics`, `/healthz` and the status page, when `[http] listen` is set."""
        if not self.config.http.listen or self.options.once:
            return None
        from renewald.daemon.metrics import start_metrics
        from renewald.web.server import mount_pages, status_app

        metrics = start_metrics(self)
        app = status_app(self.config, self.store, self.clock, registry=self.adapters)
        mount_pages(metrics, app, token=self.config.http.token)
        return metrics

    def _patiently(self, step: Callable[[], T]) -> T:
        """Run a start-up step, waiting out a busy or briefly unreachable database for up
        to `[database] startup_wait`, as the start-up wait itself does."""
        until = time.monotonic() + self.config.database.startup_wait
        while True:
            try:
                return step()
            except SQLAlchemyError as exc:
                if not is_transient(exc) or time.monotonic() > until or self.stopped.is_set():
                    raise
                self.throttle.warn(
                    "start.retrying", _log, "start.retrying", error=describe(exc), retry_in="0.2s"
                )
                self.stopped.wait(0.2)
