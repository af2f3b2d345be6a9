"""The process (DESIGN §6): ticks on APScheduler, signals, systemd notify, one-shot runs.

Signal handlers only set flags; the main thread acts on them. APScheduler runs the
periodic duties — poll, heartbeat, rescue, watchdog — each as one `*_tick` that reads
the clock once and passes `now` down. After every poll the next poll is pulled forward to
the earliest future `next_attempt_at`, so a job is picked up within milliseconds of
becoming due while an idle daemon polls once per `poll_interval`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from types import FrameType
from typing import Any, TypeVar

import structlog
from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from renewald import __version__
from renewald.adapters import AdapterRegistry
from renewald.clock import Clock, SystemClock, iso_utc, ms_to_datetime
from renewald.config import Config, Timings
from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.breaker import BreakerSettings
from renewald.daemon.dispatcher import Dispatcher, DispatchSettings
from renewald.daemon.malformed import sweep as sweep_malformed
from renewald.daemon.owner import looks_gone, make_owner_id
from renewald.daemon.recovery import recover_lost_lines
from renewald.daemon.rescuer import Rescuer
from renewald.daemon.schedules import TickResult, fire_due_schedules
from renewald.daemon.sdnotify import Notifier, WatchdogGate
from renewald.daemon.summary import Summary
from renewald.errors import DatabaseError
from renewald.logging import JobLog, Throttle
from renewald.store.changes import ChangeWatcher
from renewald.store.engine import describe, is_transient

_log = structlog.get_logger("renewald.daemon")

EXIT_DUTY_DIED = 1
# How long one database call of a duty retries an unreachable or locked database before
# the tick gives up; the duty runs again at its next interval, so an outage of any length
# is waited out a few seconds at a time, and the ticks keep ending (the watchdog's proof).
DUTY_BUDGET = 3.0
TICK_ERROR_LOG_EVERY = 60.0
DEAD_DAEMON_ROW_KEPT_MS = 24 * 3600 * 1000
# After `shutdown_grace`, how long the last bookkeeping (give back unstarted jobs, stop the
# recorder, leave the registry) may take against a database that does not answer.
SHUTDOWN_TAIL = 0.75

T = TypeVar("T")


class _TickExecutor(BaseExecutor):
    """Runs each tick in a daemon thread of its own.

    concurrent.futures' pool threads (APScheduler's ThreadPoolExecutor) are joined when
    the interpreter exits, so one tick stuck in a database call that does not answer
    would hold a stopped daemon up until systemd's SIGKILL. `max_instances` still keeps
    each tick to one run at a time.
    """

    def _do_submit_job(self, job: Any, run_times: list[Any]) -> None:
        def run() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=run, name=f"renewald-tick-{job.id}", daemon=True).start()


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
        d = config.daemon
        r = config.retry
        t = self.timings = Timings.of(config)
        policy = RetryPolicy(
            base=r.base,
            factor=r.factor,
            cap=r.cap,
            jitter=r.jitter,
            max_retry_after=r.max_retry_after,
        )
        self.job_log = JobLog(config.logging.dir)
        self.adapters = AdapterRegistry(config.adapters)
        self.summary = Summary()
        self.dispatcher = Dispatcher(
            store=store,
            adapters=self.adapters,
            job_log=self.job_log,
            clock=self.clock,
            owner=self.owner,
            settings=DispatchSettings(
                workers=options.workers or d.workers,
                batch=d.batch,
                lease_ms=t.lease_ms,
                cooldown_ms=round(d.cooldown_after_delivery * 1000),
                max_jobs=options.max_jobs,
            ),
            policy=policy,
            summary=self.summary,
            rand=random.Random(),
            on_capacity=self._on_capacity,
            on_record=on_record,
            on_retry=self._on_retry_scheduled,
            breaker=BreakerSettings(
                failures=config.breaker.failures,
                pause_ms=round(config.breaker.pause * 1000),
                probe_ms=t.probe_ms,
            ),
        )
        self.rescuer = Rescuer(
            store=store,
            job_log=self.job_log,
            policy=policy,
            owner=self.owner,
            settle_ms=t.settle_ms,
            gap_ms=t.gap_ms,
            held_here=self.dispatcher.held_ids,
        )
        self.gate = WatchdogGate(("poll", "heartbeat"), started=self.clock.monotonic())
        self._stop = threading.Event()
        self._signals = 0
        self.exit_code = 0
        self._scheduler: BackgroundScheduler | None = None
        self._poll_lock = threading.Lock()
        self._poll_again = threading.Event()
        self._backlog = False
        self._wake_at: int | None = None
        self._wake_lock = threading.Lock()
        self._changes: ChangeWatcher | None = None
        # When a poll last succeeded (monotonic): /healthz. The watchdog gate is marked
        # also when a tick ends in a database error (see `_guarded`).
        self.polled_ok_at: float | None = None
        # Repeated warnings (a tick failing every second through an outage): one line a
        # minute per tick, with how many were not said.
        self._throttle = Throttle(TICK_ERROR_LOG_EVERY, monotonic=self.clock.monotonic)
        # Called with what each schedule tick did (metrics).
        self.schedule_observers: list[Callable[[TickResult], None]] = []

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
        self._stop.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.job_log.reopen()

    def request_stop(self) -> None:
        self._stop.set()

    # -- ticks -----------------------------------------------------------------------

    def poll_tick(self) -> None:
        if not self._poll_lock.acquire(blocking=False):
            self._poll_again.set()
            return
        try:
            while True:
                self._poll_again.clear()
                now = self.clock.now_ms()
                result = self.dispatcher.poll_once(now)
                self._polled()
                self._backlog = result.more_waiting
                if result.more_waiting and self.dispatcher.has_room():
                    continue
                if self._poll_again.is_set():
                    continue
                break
            if result.next_due_at is not None and not result.more_waiting:
                self.wake_at(result.next_due_at, polled_at=now)
        finally:
            self._poll_lock.release()
        if self.dispatcher.exhausted() and not self.options.once:
            self._stop.set()

    def _polled(self) -> None:
        at = self.clock.monotonic()
        self.polled_ok_at = at
        self.gate.mark("poll", at)

    def heartbeat_tick(self) -> None:
        now = self.clock.now_ms()
        self.dispatcher.extend_leases(now)
        status = f"holding {self.dispatcher.holding()}, in flight {self.dispatcher.in_flight()}"
        if not self.store.heartbeat_daemon(owner=self.owner, now=now, status=status):
            self._register(now)
        self.gate.mark("heartbeat", self.clock.monotonic())
        done = self.summary
        self.notifier.status(
            f"{status}; delivered {done.delivered}, rescheduled {done.rescheduled}, "
            f"failed {done.failed}"
        )

    def rescue_tick(self) -> None:
        now = self.clock.now_ms()
        self.rescuer.run_once(now)
        self.recover_lines(now)
        self._sweep(now)
        # A killed daemon's registry row stays for a day (health and stats show it), then goes.
        self.store.prune_daemons(stale_before=now - DEAD_DAEMON_ROW_KEPT_MS)

    def _sweep(self, now: int) -> None:
        """End pending jobs no claim can select failed/malformed (daemon/malformed.py)."""
        try:
            ended = sweep_malformed(
                store=self.store, job_log=self.job_log, owner=self.owner, now=now
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:  # rows' data never stops the rescue duty
            _log.error("sweep.failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return
        for _ in range(ended):
            self.summary.count("failed", "malformed")

    def recover_lines(self, now: int) -> int:
        """Write the job-log lines that dead daemons on this host committed but lost."""
        return recover_lost_lines(
            store=self.store,
            job_log=self.job_log,
            owner=self.owner,
            stale_before=now - self.timings.stale_after_ms,
        )

    def retention_tick(self) -> None:
        """Prune finished jobs past `[retention] older_than` (off unless configured)."""
        older_than = self.config.retention.older_than
        if older_than is None:
            return
        now = self.clock.now_ms()
        jobs, attempts = self.store.prune_finished(
            before=now - round(older_than * 1000), batch=self.config.retention.batch
        )
        if jobs or attempts:
            _log.info(
                "retention.pruned", jobs=jobs, attempts=attempts, older_than=f"{older_than:g}s"
            )

    def schedule_tick(self) -> None:
        """Turn due schedule fires into jobs (daemon/schedules.py); wake the poller for them."""
        fired = fire_due_schedules(
            store=self.store,
            job_log=self.job_log,
            now=self.clock.now_ms(),
            owner=self.owner,
        )
        for observer in self.schedule_observers:
            observer(fired)
        if fired.earliest_job_at is not None:
            self.wake_at(fired.earliest_job_at)

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

    # -- waking the poller -----------------------------------------------------------

    def wake_at(self, at_ms: int, *, polled_at: int | None = None) -> None:
        """Make the next poll happen at `at_ms` (or at once), unless one is due sooner.

        Never later than one `poll_interval` from now: the interval stays the upper bound
        between polls, whatever the earliest `next_attempt_at` is.
        """
        scheduler = self._scheduler
        if scheduler is None:
            return
        now = self.clock.now_ms()
        at_ms = min(at_ms, now + self.timings.poll_ms)
        with self._wake_lock:
            if polled_at is None and self._wake_at is not None and now < self._wake_at <= at_ms:
                return
            self._wake_at = at_ms
        with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
            scheduler.modify_job("poll", next_run_time=ms_to_datetime(max(at_ms, now)))

    def _on_capacity(self) -> None:
        if self._backlog and not self.dispatcher.stopping:
            if self._poll_lock.locked():
                self._poll_again.set()
            else:
                self.wake_at(self.clock.now_ms())

    def _on_external_change(self) -> None:
        """Another process wrote jobs: poll now rather than at the next interval."""
        if self.dispatcher.stopping:
            return
        if self._poll_lock.locked():
            self._poll_again.set()
        else:
            self.wake_at(self.clock.now_ms())

    def _on_retry_scheduled(self, at_ms: int) -> None:
        self.wake_at(at_ms)

    # -- the process -----------------------------------------------------------------

    def _register(self, now: int) -> None:
        self.store.register_daemon(
            owner=self.owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            now=now,
        )

    def _scheduler_for(self, *, once: bool) -> BackgroundScheduler:
        d = self.config.daemon
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": _TickExecutor()},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        now = ms_to_datetime(self.clock.now_ms())
        guarded = self._guarded
        if not once:
            scheduler.add_job(
                guarded(self.poll_tick),
                "interval",
                seconds=d.poll_interval,
                id="poll",
                next_run_time=now,
            )
            scheduler.add_job(
                guarded(self.rescue_tick),
                "interval",
                seconds=d.rescue_interval,
                id="rescue",
                next_run_time=now,
            )
            if self.config.retention.older_than is not None:
                scheduler.add_job(
                    guarded(self.retention_tick),
                    "interval",
                    seconds=self.config.retention.interval,
                    id="retention",
                )

            scheduler.add_job(
                guarded(self.schedule_tick),
                "interval",
                seconds=min(d.poll_interval, 1.0),
                id="schedules",
                next_run_time=now,
            )
        scheduler.add_job(
            guarded(self.heartbeat_tick), "interval", seconds=d.heartbeat_interval, id="heartbeat"
        )
        if self.notifier.watchdog_interval:
            scheduler.add_job(
                guarded(self.watchdog_tick),
                "interval",
                seconds=self.notifier.watchdog_interval,
                id="watchdog",
            )
        scheduler.add_listener(self._on_tick_error, EVENT_JOB_ERROR)
        return scheduler

    def _guarded(self, tick: Callable[[], None]) -> Callable[[], None]:
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
                self._throttle.warn(
                    f"tick:{name}",
                    _log,
                    "tick.database_error",
                    tick=tick.__name__,
                    error=describe(exc),
                )
                if name in self.gate.required:
                    self.gate.mark(name, now)
            else:
                if self._throttle.clear(f"tick:{name}"):
                    _log.info("tick.database_recovered", tick=tick.__name__)

        run.__name__ = tick.__name__
        return run

    def _on_tick_error(self, event: JobExecutionEvent) -> None:
        _log.critical(
            "daemon.duty_died",
            tick=event.job_id,
            error=f"{type(event.exception).__name__}: {event.exception}",
        )
        self.exit_code = EXIT_DUTY_DIED
        self._stop.set()

    def run(self) -> int:
        """Run until stopped (or, with `once`, until nothing due is left); returns the exit code."""
        metrics = None
        if self.config.http.listen and not self.options.once:
            from renewald.daemon.metrics import start_metrics

            metrics = start_metrics(self)
            from renewald.web.server import mount_pages, status_app

            app = status_app(self.config, self.store, self.clock, registry=self.adapters)
            mount_pages(metrics, app, token=self.config.http.token)
        self._patiently(lambda: self._register(self.clock.now_ms()))
        self.dispatcher.start()
        once = self.options.once
        scheduler = self._scheduler_for(once=once)
        self._scheduler = scheduler
        scheduler.start()
        if not once:
            self._changes = ChangeWatcher(self.config.database.url, self._on_external_change)
            self._changes.start()
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
                # As the daemon's rescue tick would: a killed one-shot's jobs come back.
                self._guarded(self.rescue_tick)()
                self._guarded(self.schedule_tick)()
                self._drain()
                deadline = self.clock.now_ms() + 2 * self.dispatcher.settings.lease_ms
                while self._await_departed(deadline):
                    self._drain()
            else:
                while not self._stop.wait(1.0):
                    if self.dispatcher.fatal is not None:
                        self.exit_code = EXIT_DUTY_DIED
                        break
        finally:
            self._shutdown(scheduler)
            if metrics is not None:
                metrics.close()
        if self.dispatcher.fatal is not None:
            return EXIT_DUTY_DIED
        if self.exit_code:
            return self.exit_code
        return self.summary.exit_code() if once else 0

    def _patiently(self, step: Callable[[], T]) -> T:
        """Run a start-up step, waiting out a busy or briefly unreachable database for up
        to `[database] startup_wait`, as the start-up wait itself does."""
        until = time.monotonic() + self.config.database.startup_wait
        while True:
            try:
                return step()
            except SQLAlchemyError as exc:
                if not is_transient(exc) or time.monotonic() > until or self._stop.is_set():
                    raise
                self._throttle.warn(
                    "start.retrying", _log, "start.retrying", error=describe(exc), retry_in="0.2s"
                )
                self._stop.wait(0.2)

    def _drain(self) -> None:
        """`run --once`: deliver everything due now; retries due later are not waited for."""
        dispatcher = self.dispatcher
        waited_until = time.monotonic() + self.config.database.startup_wait
        self._sweep(self.clock.now_ms())
        while not self._stop.is_set() and dispatcher.fatal is None:
            held_before = dispatcher.holding()
            try:
                result = dispatcher.poll_once(self.clock.now_ms())
            except SQLAlchemyError as exc:
                # A busy or briefly unreachable database is waited out, as at start-up.
                if not is_transient(exc) or time.monotonic() > waited_until:
                    raise
                self._throttle.warn(
                    "poll.failed", _log, "poll.failed", error=describe(exc), retry_in="0.2s"
                )
                self._stop.wait(0.2)
                continue
            self._polled()
            if result.claimed == 0 and held_before == 0:
                break  # nothing due is left that our own running jobs could be holding back
            if result.more_waiting or result.claimed == 0:
                dispatcher.wait_for_capacity(0.2)
                if result.claimed == 0:
                    dispatcher.wait_idle(0.2)
            if dispatcher.exhausted():
                dispatcher.wait_idle(None)
                break

    def _await_departed(self, deadline: int) -> bool:
        """`run --once`: jobs that a gone owner (a killed run, a daemon stopped past its
        grace) still holds come back when their leases expire. Wait for the first of those
        before `deadline`, rescue, wait for what the rescue made due again; True: drain."""
        now = self.clock.now_ms()
        stale_before = now - self.timings.stale_after_ms
        expiries = [
            now if h.first_expiry is None else h.first_expiry
            for h in self.store.held_leases(exclude_owner=self.owner)
            if looks_gone(h.owner, heartbeat_at=h.heartbeat_at, stale_before=stale_before)
        ]
        soon = [at for at in expiries if at <= deadline]
        if not soon or self._stop.is_set():
            return False
        _log.info("once.awaiting_leases", owners=len(expiries), until=iso_utc(min(soon)))
        if self._stop.wait(max(0, min(soon) - now) / 1000):
            return False
        self._guarded(self.rescue_tick)()
        due = [at for at in self.rescuer.retries_at if at <= deadline]
        if due:
            self._stop.wait(max(0, max(due) - self.clock.now_ms()) / 1000)
        return not self._stop.is_set()

    def _shutdown(self, scheduler: BackgroundScheduler) -> None:
        """Stop claiming, give back what never started, let in-flight deliveries finish
        within `shutdown_grace`, leave the registry. Bounded throughout: a database that
        stops answering costs at most SHUTDOWN_TAIL beyond the grace, never a hang."""
        d = self.config.daemon
        deadline = time.monotonic() + d.shutdown_grace
        self.dispatcher.stop_claiming()
        if self._changes is not None:
            self._changes.stop()
        self.notifier.stopping(status="stopping")
        for job_id in ("poll", "rescue", "schedules", "retention"):
            if scheduler.get_job(job_id):
                scheduler.remove_job(job_id)
        # A poll already inside its claim would hand us jobs after the release below;
        # they would sit unstarted, held, until the grace ran out. Let it land first.
        if self._poll_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._poll_lock.release()
        released = self._bounded(
            "release",
            lambda: self.dispatcher.release_unstarted(now=self.clock.now_ms()),
            deadline,
        )
        in_flight = self.dispatcher.in_flight()
        if in_flight:
            _log.info("daemon.stopping", in_flight=in_flight, grace=f"{d.shutdown_grace:g}s")
        finished = self.dispatcher.wait_idle(max(0.0, deadline - time.monotonic()))
        scheduler.shutdown(wait=False)
        tail = max(deadline, time.monotonic()) + SHUTDOWN_TAIL
        more = self._bounded("close", lambda: self.dispatcher.close(now=self.clock.now_ms()), tail)
        self._bounded("unregister", lambda: self.store.unregister_daemon(owner=self.owner), tail)
        self.job_log.close()
        self.adapters.close()
        _log.info(
            "daemon.stopped",
            owner=self.owner,
            released=len(released or []) + len(more or []),
            abandoned=0 if finished else self.dispatcher.in_flight(),
            **self.summary.as_dict(),
        )

    def _bounded(self, what: str, step: Callable[[], T], deadline: float) -> T | None:
        """Run one shutdown step, giving up at `deadline` (monotonic): the step goes on in
        a daemon thread that dies with the process. None when it failed or timed out."""
        out: list[T] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                out.append(step())
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=run, name=f"renewald-shutdown-{what}", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            _log.error(
                f"shutdown.{what}_timed_out",
                reason="the database did not answer in time; leases expire and are rescued",
            )
            return None
        if error:
            exc = error[0]
            lines = str(exc).strip().splitlines()
            _log.error(
                f"shutdown.{what}_failed",
                error=f"{type(exc).__name__}: {lines[0] if lines else ''}",
            )
            return None
        return out[0]
