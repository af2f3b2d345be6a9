"""Claim, plan, deliver: the part of the daemon that moves jobs.

The poll thread claims due jobs and plans each in claim order (`planning.py`): its
delivery, adapter and target (the adapter's `target_key`). Two guards stand between a
job and its target: the circuit breaker (`breaker.py`: a paused target's jobs are
deferred without spending attempts, checked again right before the send) and the
per-target in-flight limit (`limits.py`: a job whose target is busy waits in that
target's line, holding its lease but no thread, until a finishing delivery hands it the
slot). An adapter that cannot be built (bad config) defers its jobs like an open breaker.

Jobs that hold a slot are sent by a worker thread, or by the sender thread a claim at a
time for adapters that do not block (`sending.py`). Every finished attempt goes to the
recorder (`recorder.py`), which writes results in batches. Claiming, sending at once and
recording are three threads, so a drain of such jobs runs them side by side: each waits on
its own round trips to the database while the others work.

The dispatcher never reads the clock on its own: every time comes from the injected
clock, and every periodic duty takes `now`.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from renewald.adapters import AdapterRegistry
from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.breaker import Breakers, BreakerSettings
from renewald.daemon.limits import TargetLimits
from renewald.daemon.parts import DaemonParts, Part
from renewald.daemon.planning import Planned, Planner
from renewald.daemon.recorder import Recorder
from renewald.daemon.results import ResultMaker
from renewald.daemon.sendgate import SendGate
from renewald.daemon.sending import Sending
from renewald.logging import emit
from renewald.store import AttemptResult, ClaimedJob

_log = structlog.get_logger("renewald.daemon")


@dataclass(frozen=True)
class DispatchSettings:
    workers: int = 8
    batch: int = 128
    lease_ms: int = 60_000
    cooldown_ms: int = 0
    max_jobs: int | None = None


@dataclass(frozen=True)
class PollResult:
    claimed: int
    next_due_at: int | None
    more_waiting: bool


class Dispatcher(Sending, Part):
    def __init__(
        self,
        parts: DaemonParts,
        *,
        adapters: AdapterRegistry,
        settings: DispatchSettings,
        policy: RetryPolicy,
        rand: random.Random | None = None,
        on_capacity: Callable[[], None] | None = None,
        on_record: Callable[[int], None] | None = None,
        on_retry: Callable[[int], None] | None = None,
        breaker: BreakerSettings | None = None,
    ) -> None:
        super().__init__(parts)
        self.adapters = adapters
        self.settings = settings
        self.policy = policy
        self._on_capacity = on_capacity
        self._on_record = on_record
        self._on_retry = on_retry
        self._build_parts(rand, breaker)
        self._init_holding()
        self._stopping = threading.Event()
        self._gate: SendGate | None = None
        self._claimed_total = 0
        self._threads: list[threading.Thread] = []
        self.fatal: BaseException | None = None

    def _build_parts(self, rand: random.Random | None, breaker: BreakerSettings | None) -> None:
        self.results = ResultMaker(
            owner=self.owner,
            policy=self.policy,
            job_log=self.job_log,
            cooldown_ms=self.settings.cooldown_ms,
            rand=rand,
        )
        self.recorder = Recorder(self.parts, on_recorded=self._recorded)
        self.breakers = Breakers(
            store=self.store,
            settings=breaker or BreakerSettings(probe_ms=self.settings.lease_ms),
            job_log=self.job_log,
        )
        self.planner = Planner(
            self.parts,
            adapters=self.adapters,
            results=self.results,
            pause_ms=self.breakers.settings.pause_ms,
        )

    def _init_holding(self) -> None:
        workers, batch = self.settings.workers, self.settings.batch
        # Held jobs at most: a claim being recorded, the next being sent at once and the
        # one after that being claimed, beside what the workers hold.
        self.capacity = workers + 3 * batch
        # Jobs handed to the worker threads and not yet done with them.
        self._with_workers = 0
        # Claims are sized to what can start now: while the jobs claimed last needed
        # worker threads, to the free workers plus a lead (a worker that frees finds its
        # next job waiting rather than waiting for a claim), refilled a lead at a time
        # while every worker is busy; else (jobs sent at once) to a whole batch. A lead
        # of one job per worker halves the claims a lead of half that makes (each a
        # transaction of four statements): 13 % less CPU per delivery with three
        # daemons on two cores (bench/results.md, stop 30).
        self._size_to_workers = True
        self._lead = workers
        self._held: dict[str, int] = {}
        self._started: set[str] = set()
        # Jobs whose result is queued for the recorder: a heartbeat that cannot extend
        # their lease is racing the recorder's own write, not losing the job.
        self._finishing: set[str] = set()
        self._held_lock = threading.Condition()
        self._tasks: queue.Queue[Planned | None] = queue.Queue()
        # Claims of jobs sent at once, in claim order, for the sender thread.
        self._at_once: queue.Queue[list[Planned] | None] = queue.Queue()
        self._limits: TargetLimits[Planned] = TargetLimits()

    def add_observer(self, observer: Callable[[AttemptResult, bool], None]) -> None:
        """Call `observer(result, applied)` for every recorded result (metrics, tests)."""
        self.recorder.add_observer(observer)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._gate = SendGate(self.parts, lease_ms=self.settings.lease_ms, stopping=self._stopping)
        for n in range(self.settings.workers):
            self._spawn(self._deliver_loop, f"renewald-worker-{n}")
        self._spawn(self.recorder.run, "renewald-recorder")
        self._spawn(self._send_at_once_loop, "renewald-sender")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=self._guard(target), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a dead duty must end the process (supervisor restarts)
                self.fatal = exc
                _log.critical(
                    "daemon.duty_died",
                    thread=threading.current_thread().name,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=True,
                )
                with self._held_lock:
                    self._held_lock.notify_all()
                if self._on_capacity:
                    self._on_capacity()

        return run

    def stop_claiming(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def held(self) -> list[tuple[str, int]]:
        with self._held_lock:
            return list(self._held.items())

    def in_flight(self) -> int:
        with self._held_lock:
            return len(self._started)

    def held_ids(self) -> frozenset[str]:
        """The jobs this dispatcher holds: claimed and not yet recorded."""
        with self._held_lock:
            return frozenset(self._held)

    def holding(self) -> int:
        with self._held_lock:
            return len(self._held)

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until nothing is held (every claimed job recorded or released)."""
        with self._held_lock:
            return (
                self._held_lock.wait_for(lambda: not self._held or self.fatal is not None, timeout)
                and self.fatal is None
            )

    def wait_for_capacity(self, timeout: float) -> None:
        with self._held_lock:
            self._held_lock.wait_for(lambda: self._room() > 0 or self.fatal is not None, timeout)

    def has_room(self) -> bool:
        """Whether a claim could take a job now."""
        with self._held_lock:
            return self._room() > 0

    def _room(self) -> int:
        """How many jobs a claim may take now (under `_held_lock`)."""
        room = self.capacity - len(self._held)
        if self._size_to_workers:
            # Jobs in a busy target's line are the lead: claiming on behind them would
            # hoard jobs other daemons could start now. Free workers still get a claim,
            # so one slow target does not hold back every other target's jobs.
            lead = self._lead - min(self._limits.waiting(), self._lead)
            room = min(room, self.settings.workers + lead - self._with_workers)
            if room < self._lead and self._with_workers >= self.settings.workers:
                return 0  # every worker has a job: refill the lead in one claim, not one by one
        return room

    def close(self, *, now: int) -> list[str]:
        """Stop the threads; give back jobs claimed but never started. Returns released ids."""
        self._stopping.set()
        released = self.release_unstarted(now=now)
        for _ in range(self.settings.workers):
            self._tasks.put(None)
        self._at_once.put(None)
        # The sender first: the results of a claim it is sending go to the recorder.
        self._join("renewald-sender")
        self.recorder.finish()
        self._join("renewald-recorder")
        self.recorder.close()
        return released

    def _join(self, name: str) -> None:
        for thread in self._threads:
            if thread.name == name:
                thread.join(timeout=10)

    # -- polling ---------------------------------------------------------------------

    def poll_once(self, now: int) -> PollResult:
        """Claim what fits in the free capacity, hand each job on (what can be sent at once
        to the sender thread); say when to look again."""
        if self._stopping.is_set() or self.fatal is not None:
            return PollResult(0, None, False)
        with self._held_lock:
            room = self._room()
        limit = min(self.settings.batch, room)
        if self.settings.max_jobs is not None:
            limit = min(limit, self.settings.max_jobs - self._claimed_total)
        if limit <= 0:
            return PollResult(0, None, room <= 0)
        self.breakers.refresh(now)
        claimed = self.store.claim_due_jobs(
            owner=self.owner,
            now=self.clock.now_ms,
            lease_ms=self.settings.lease_ms,
            limit=limit,
        )
        self._claimed_total += len(claimed)
        with self._held_lock:
            for c in claimed:
                self._held[c.job.job_id] = c.lease_token
        at_once: list[Planned] = []
        # In claim order, so each target's line is in due order.
        blocking = [self._dispatch_guarded(c, at_once) for c in claimed]
        if claimed:
            self._size_to_workers = any(blocking)
        if at_once:
            self._at_once.put(at_once)
        if len(claimed) == limit:
            return PollResult(len(claimed), now, True)
        return PollResult(len(claimed), self.store.next_due_at(now=now), False)

    def exhausted(self) -> bool:
        """True once `max_jobs` jobs have been claimed."""
        return self.settings.max_jobs is not None and self._claimed_total >= self.settings.max_jobs

    # -- heartbeat -------------------------------------------------------------------

    def extend_leases(self, now: int) -> list[str]:
        """Extend the lease of every job held; jobs whose lease was taken are let go."""
        held = self.held()
        lost = self.store.extend_leases(
            owner=self.owner, held=held, now=now, lease_ms=self.settings.lease_ms
        )
        with self._held_lock:
            tokens = dict(held)
            # Finished by our own recorder meanwhile (or about to be): not lost.
            lost = [j for j in lost if self._held.get(j) == tokens[j] and j not in self._finishing]
        for job_id in lost:
            emit(
                self.job_log,
                "lease.lost",
                now_ms=now,
                level="warning",
                job_id=job_id,
                owner=self.owner,
                reason="lease could not be extended: the job was taken away",
                during="heartbeat",
            )
        return lost

    def release_unstarted(self, *, now: int) -> list[str]:
        with self._held_lock:
            unstarted = [(j, t) for j, t in self._held.items() if j not in self._started]
            for job_id, _ in unstarted:
                del self._held[job_id]
            self._held_lock.notify_all()
        if not unstarted:
            return []
        flags = self.store.release_jobs(owner=self.owner, held=unstarted, now=now)
        released = [j for (j, _), ok in zip(unstarted, flags, strict=True) if ok]
        for job_id in released:
            emit(
                self.job_log,
                "job.released",
                now_ms=now,
                job_id=job_id,
                owner=self.owner,
                reason="shutting down before the delivery started",
            )
        self.job_log.flush()
        return released

    # -- planning --------------------------------------------------------------------

    def _dispatch_guarded(self, claimed: ClaimedJob, at_once: list[Planned]) -> bool:
        """`_dispatch`, where an error in one job's handling ends that job, not the poll."""
        try:
            return self._dispatch(claimed, at_once)
        except Exception as exc:
            self._finish_now(claimed, self._handling_failed(claimed, exc))
            return False

    def _dispatch(self, claimed: ClaimedJob, at_once: list[Planned]) -> bool:
        """Plan a freshly claimed job and send it on: to the recorder when it needs no
        delivery (bad row, open breaker, misconfigured adapter); when its target has a
        free slot, to `at_once` (a non-blocking adapter) or a worker; else into its
        target's line. True when the job needs a worker thread."""
        step = self._plan(claimed)
        if isinstance(step, AttemptResult):
            self._finish_now(claimed, step)
            return False
        verdict = self.breakers.check(step.key, self.clock.now_ms())
        if not verdict.deliver:  # no need to wait for a slot to learn that
            self._finish_now(claimed, self._deferred_by_breaker(step, verdict))
            return False
        with self._held_lock:
            # In line, a job holds its lease (the heartbeat extends it) but no thread.
            free = self._limits.acquire(step.key, step.limit, step)
        if free and not step.blocking:
            at_once.append(step)
        elif free:
            self._to_workers(step)
        return step.blocking

    def _plan(self, claimed: ClaimedJob) -> Planned | AttemptResult:
        return self.planner.plan(claimed)

    # -- recording -------------------------------------------------------------------

    def _recorded(self, batch: Sequence[AttemptResult], applied: Sequence[bool]) -> None:
        """The recorder wrote `batch`: its jobs are no longer held."""
        with self._held_lock:
            for result in batch:
                if self._held.get(result.job_id) == result.lease_token:
                    del self._held[result.job_id]
                self._started.discard(result.job_id)
                self._finishing.discard(result.job_id)
            self._held_lock.notify_all()
        if self._on_record:
            self._on_record(len(batch))
        retries = [
            r.next_attempt_at
            for r, ok in zip(batch, applied, strict=True)
            if ok and r.status == "pending" and r.next_attempt_at is not None
        ]
        if retries and self._on_retry:
            self._on_retry(min(retries))
        if self._on_capacity:
            self._on_capacity()
