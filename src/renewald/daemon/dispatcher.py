"""Claim, dispatch, record: the part of the daemon that moves jobs.

Claimed jobs go to a bounded pool of delivery threads (`workers`). Each finished
attempt becomes an `AttemptResult`; one recorder thread writes results in batches — the
job update and the attempt row in one fenced transaction — and appends their JSONL lines
right after the commit. A result whose fence matched nothing is logged `lease.lost` and
changes nothing.

The poll thread plans each claimed job in claim order: its delivery, adapter and target
(the adapter's `target_key`). Two guards stand between a job and its target: the
circuit breaker (`breaker.py`: a paused target's jobs are deferred without spending
attempts, checked again right before the send) and the per-target in-flight limit
(`limits.py`: a job whose target is busy waits in that target's line, holding its lease
but no worker thread, until a finishing delivery hands it the slot). An adapter that
cannot be built (bad config) defers its jobs like an open breaker. Only jobs that hold
a slot reach the workers.

The dispatcher never reads the clock on its own: every time comes from the injected
clock, and every periodic duty takes `now`.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from renewald.adapters import Adapter, AdapterRegistry, Delivery, Outcome
from renewald.clock import Clock
from renewald.daemon.backoff import (
    DEADLINE_PASSED,
    Decision,
    RetryPolicy,
    decide,
    defer,
    expired_before_attempt,
)
from renewald.daemon.breaker import Breakers, BreakerSettings, Verdict
from renewald.daemon.limits import TargetLimits
from renewald.daemon.malformed import handling_failed, malformed_result
from renewald.daemon.results import attempt_result
from renewald.daemon.sendgate import SendGate
from renewald.daemon.summary import Summary
from renewald.daemon.target import breaker_key, build_delivery, target_kind_of
from renewald.errors import ConfigError
from renewald.logging import JobLog, Throttle, emit
from renewald.redact import redact_value
from renewald.store import AttemptResult, ClaimedJob, Store

_log = structlog.get_logger("renewald.daemon")

RECORD_BATCH = 256


@dataclass(frozen=True)
class DispatchSettings:
    workers: int = 8
    batch: int = 32
    lease_ms: int = 60_000
    cooldown_ms: int = 0
    max_jobs: int | None = None


@dataclass(frozen=True)
class PollResult:
    claimed: int
    next_due_at: int | None
    more_waiting: bool


@dataclass(frozen=True)
class _Planned:
    """A claimed job ready to be delivered: its delivery, adapter and target."""

    claimed: ClaimedJob
    attempt_id: str
    kind: str
    delivery: Delivery
    adapter: Adapter
    target_text: str
    key: str
    limit: int


class Dispatcher:
    def __init__(
        self,
        *,
        store: Store,
        adapters: AdapterRegistry,
        job_log: JobLog,
        clock: Clock,
        owner: str,
        settings: DispatchSettings,
        policy: RetryPolicy,
        summary: Summary | None = None,
        rand: random.Random | None = None,
        on_capacity: Callable[[], None] | None = None,
        on_record: Callable[[int], None] | None = None,
        on_retry: Callable[[int], None] | None = None,
        breaker: BreakerSettings | None = None,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.job_log = job_log
        self.clock = clock
        self.owner = owner
        self.settings = settings
        self.policy = policy
        self.summary = summary or Summary()
        self._rand = rand or random.Random()
        self._on_capacity = on_capacity
        self._on_record = on_record
        self._on_retry = on_retry
        self.capacity = settings.workers + settings.batch
        self._held: dict[str, int] = {}
        self._started: set[str] = set()
        # Jobs whose result is queued for the recorder: a heartbeat that cannot extend
        # their lease is racing the recorder's own write, not losing the job.
        self._finishing: set[str] = set()
        # Attempts whose lines the recorder flushed; their unlogged marks go with the
        # next batch's transaction.
        self._logged: list[str] = []
        self._held_lock = threading.Condition()
        self._tasks: queue.Queue[_Planned | None] = queue.Queue()
        self._limits: TargetLimits[_Planned] = TargetLimits()
        self.breakers = Breakers(
            store=store,
            settings=breaker or BreakerSettings(probe_ms=settings.lease_ms),
            job_log=job_log,
        )
        self._config_errors: set[str] = set()
        self._results: queue.Queue[AttemptResult | None] = queue.Queue()
        self._stopping = threading.Event()
        self._gate: SendGate | None = None
        self._claimed_total = 0
        self._threads: list[threading.Thread] = []
        self._observers: list[Callable[[AttemptResult, bool], None]] = []
        self._throttle = Throttle()
        self.fatal: BaseException | None = None

    def add_observer(self, observer: Callable[[AttemptResult, bool], None]) -> None:
        """Call `observer(result, applied)` for every recorded result (metrics, tests)."""
        self._observers.append(observer)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._gate = SendGate(
            store=self.store,
            owner=self.owner,
            lease_ms=self.settings.lease_ms,
            now_ms=self.clock.now_ms,
            stopping=self._stopping,
        )
        for n in range(self.settings.workers):
            self._spawn(self._deliver_loop, f"renewald-worker-{n}")
        self._spawn(self._record_loop, "renewald-recorder")

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
            self._held_lock.wait_for(
                lambda: len(self._held) < self.capacity or self.fatal is not None, timeout
            )

    def close(self, *, now: int) -> list[str]:
        """Stop the threads; give back jobs claimed but never started. Returns released ids."""
        self._stopping.set()
        released = self.release_unstarted(now=now)
        for _ in range(self.settings.workers):
            self._tasks.put(None)
        self._results.put(None)
        for thread in self._threads:
            if thread.name == "renewald-recorder":
                thread.join(timeout=10)
        self.job_log.flush()
        if self._gate is not None:
            self._gate.close()
        logged, self._logged = self._logged, []
        self.store.mark_logged(logged)
        return released

    # -- polling ---------------------------------------------------------------------

    def poll_once(self, now: int) -> PollResult:
        """Claim what fits in the free capacity; say when to look again."""
        if self._stopping.is_set() or self.fatal is not None:
            return PollResult(0, None, False)
        room = self.capacity - self.holding()
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
        for c in claimed:  # in claim order, so each target's line is in due order
            self._dispatch_guarded(c)
        if len(claimed) == limit:
            return PollResult(len(claimed), now, True)
        return PollResult(len(claimed), self.store.next_due_at(now=now), False)

    @property
    def claimed_total(self) -> int:
        return self._claimed_total

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

    # -- delivering ------------------------------------------------------------------

    def _dispatch_guarded(self, claimed: ClaimedJob) -> None:
        """`_dispatch`, where an error in one job's handling ends that job, not the poll."""
        try:
            self._dispatch(claimed)
        except Exception as exc:
            self._finish_now(claimed, self._handling_failed(claimed, exc))

    def _handling_failed(self, claimed: ClaimedJob, exc: Exception) -> AttemptResult:
        return handling_failed(
            claimed, exc, owner=self.owner, now=self.clock.now_ms(), job_log=self.job_log
        )

    def _dispatch(self, claimed: ClaimedJob) -> None:
        """Plan a freshly claimed job and send it on: to the recorder when it needs no
        delivery (bad row, open breaker, misconfigured adapter), to a worker when its
        target has a free slot, else into its target's line."""
        step = self._plan(claimed)
        if isinstance(step, AttemptResult):
            self._finish_now(claimed, step)
            return
        verdict = self.breakers.check(step.key, self.clock.now_ms())
        if not verdict.deliver:  # no need to wait for a slot to learn that
            self._finish_now(claimed, self._deferred_by_breaker(step, verdict))
            return
        with self._held_lock:
            # In line, a job holds its lease (the heartbeat extends it) but no thread.
            free = self._limits.acquire(step.key, step.limit, step)
        if free:
            self._tasks.put(step)

    def _finish_now(self, claimed: ClaimedJob, result: AttemptResult) -> None:
        # Started like a delivery, so that a shutdown does not release the job under the
        # recorder; when shutdown released it first, the result is dropped with it.
        if self._begin(claimed):
            self._queue_result(result)

    def _deliver_loop(self) -> None:
        while True:
            planned = self._tasks.get()
            if planned is None:
                return
            if self._begin(planned.claimed):
                self._run(planned)
            else:  # released at shutdown
                self._free_slot(planned.key)

    def _begin(self, claimed: ClaimedJob) -> bool:
        """Mark a held job as being worked on; False when it was released meanwhile."""
        with self._held_lock:
            if self._stopping.is_set() or self._held.get(claimed.job.job_id) != claimed.lease_token:
                return False
            self._started.add(claimed.job.job_id)
            return True

    def _run(self, planned: _Planned) -> None:
        """Deliver a job that holds a slot of its target, then pass the slot on."""
        try:
            result = self._attempt_planned(planned)
        except Exception as exc:  # one job's handling, never the worker
            result = self._handling_failed(planned.claimed, exc)
        finally:
            self._free_slot(planned.key)
        if result is not None:
            self._queue_result(result)

    def _queue_result(self, result: AttemptResult) -> None:
        with self._held_lock:
            self._finishing.add(result.job_id)
        self._results.put(result)

    def _free_slot(self, key: str) -> None:
        with self._held_lock:
            following = self._limits.release(key)
        if following is not None:
            # Behind whatever is already queued: a busy target does not jump ahead of
            # other targets' jobs.
            self._tasks.put(following)

    def _plan(self, claimed: ClaimedJob) -> _Planned | AttemptResult:
        """The job's delivery, adapter and target; or its result when it cannot have one."""
        job = claimed.job
        attempt_id = uuid.uuid4().hex
        now = self.clock.now_ms()
        if claimed.problems:  # a row that does not fit is never sent (DESIGN §2)
            return malformed_result(
                claimed,
                owner=self.owner,
                now=now,
                log_path=self.job_log.path_for(now),
                attempt_id=attempt_id,
            )
        kind = target_kind_of(claimed)
        expired = expired_before_attempt(job.deadline_at, now)
        if expired is not None:
            return self._expired(claimed, attempt_id, kind, None, now, expired)
        planned = build_delivery(claimed, attempt_id=attempt_id)
        if isinstance(planned, Outcome):
            return self._result(claimed, attempt_id, kind, None, now, now, planned)
        kind = planned.target_kind
        target_text = json.dumps(redact_value(dict(planned.target)), sort_keys=True)
        try:
            adapter = self.adapters.get(kind)
        except ConfigError as exc:
            self._say_config_error(kind, exc)
            return self._deferred(
                claimed,
                attempt_id=attempt_id,
                kind=kind,
                target_text=target_text,
                now=now,
                until=now + self.breakers.settings.pause_ms,
                reason=f"adapter {kind} is misconfigured, not tried",
                error_class="AdapterConfigError",
                error=f"adapter {kind} cannot be built: {exc}",
            )
        if adapter is None:
            outcome = Outcome.permanent(
                f"no adapter for target kind {kind!r} (known: {', '.join(self.adapters.kinds())})",
                error_class="UnknownTargetKind",
            )
            return self._result(claimed, attempt_id, kind, target_text, now, now, outcome)
        key, limit = self._target_of(adapter, planned)
        return _Planned(claimed, attempt_id, kind, planned, adapter, target_text, key, limit)

    @staticmethod
    def _target_of(adapter: Adapter, delivery: Delivery) -> tuple[str, int]:
        key = breaker_key(adapter, delivery)
        limit = getattr(adapter, "max_in_flight_per_target", 1)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            limit = 1
        return key, limit

    def _say_config_error(self, kind: str, exc: ConfigError) -> None:
        """Once per kind and process: every later job of the kind is deferred quietly."""
        with self._held_lock:
            if kind in self._config_errors:
                return
            self._config_errors.add(kind)
        _log.error(
            "adapter.config_error",
            adapter=kind,
            error=str(exc),
            hint=f"jobs for {kind} are deferred without spending attempts; "
            "fix the configuration and restart renewald",
        )

    def _begin_send(self, claimed: ClaimedJob) -> bool:
        """Spend the attempt in the database right before the send (fenced, lease renewed;
        written with the other workers' marks by the send gate, daemon/sendgate.py).

        A database outage is waited out there, without sending: once it is back, the job
        is sent if it is still ours. False (no send, no result) when it was taken away or
        the daemon stops meanwhile; a stopping daemon's release gives it back.
        """
        job = claimed.job
        gate = self._gate
        ok = gate.begin(job.job_id, job.lease_token) if gate is not None else None
        if ok is None:
            # Not sent: its lease runs out and rescue gives it back unspent.
            self._forget(job.job_id, job.lease_token)
            return False
        if not ok:
            emit(
                self.job_log,
                "lease.lost",
                now_ms=self.clock.now_ms(),
                level="warning",
                job_id=job.job_id,
                owner=self.owner,
                reason="the job was taken away before its send began; not sent",
                during="send",
            )
            self._forget(job.job_id, job.lease_token)
        return ok

    def _forget(self, job_id: str, lease_token: int) -> None:
        """Let go of a held job that will have no result: it was never sent."""
        with self._held_lock:
            self._started.discard(job_id)
            if self._held.get(job_id) == lease_token:
                del self._held[job_id]
            self._held_lock.notify_all()
        if self._on_capacity:
            self._on_capacity()

    def _attempt_planned(self, planned: _Planned) -> AttemptResult | None:
        claimed, job = planned.claimed, planned.claimed.job
        now = self.clock.now_ms()
        args = (claimed, planned.attempt_id, planned.kind, planned.target_text)
        expired = expired_before_attempt(job.deadline_at, now)  # waited in line past it
        if expired is not None:
            return self._expired(*args, now, expired)
        verdict = self.breakers.admit(
            planned.key,
            adapter=planned.kind,
            now=now,
            job_id=job.job_id,
            attempt_id=planned.attempt_id,
        )
        if not verdict.deliver:
            return self._deferred_by_breaker(planned, verdict)
        if not self._begin_send(planned.claimed):
            return None
        started = self.clock.now_ms()
        emit(
            self.job_log,
            "attempt.started",
            now_ms=started,
            job_id=job.job_id,
            attempt_id=planned.attempt_id,
            attempt=job.attempt_count,
            conversation=job.local_conversation_id,
            adapter=planned.kind,
            owner=self.owner,
        )
        self.job_log.flush()  # a long delivery is visible in the job log while it runs
        outcome = self._deliver(planned.adapter, planned.delivery)
        finished = self.clock.now_ms()
        self.breakers.record(
            planned.key,
            adapter=planned.kind,
            outcome=outcome,
            verdict=verdict,
            now=finished,
            job_id=job.job_id,
            attempt_id=planned.attempt_id,
        )
        return self._result(*args, started, finished, outcome)

    def _result(
        self,
        claimed: ClaimedJob,
        attempt_id: str,
        kind: str | None,
        target_text: str | None,
        started: int,
        finished: int,
        outcome: Outcome,
    ) -> AttemptResult:
        """What an attempt's outcome makes of the job (DESIGN §2, §4)."""
        job = claimed.job
        decision = decide(
            self.policy,
            outcome=outcome.kind.value,
            attempt_no=job.attempt_count,
            max_attempts=job.max_attempts,
            now=finished,
            after=outcome.after,
            reason=outcome.reason,
            deadline_at=job.deadline_at,
            rand=self._rand,
        )
        delivered = decision.status == "done"
        cooldown = self.settings.cooldown_ms
        return attempt_result(
            job,
            decision,
            attempt_id=attempt_id,
            lease_owner=self.owner,
            outcome=outcome.kind.value,
            adapter=kind,
            target=target_text,
            started=started,
            finished=finished,
            log_path=self.job_log.path_for(finished),
            error_class=None if delivered else outcome.error_class,
            error=None if delivered else outcome.reason,
            summary=outcome.summary,
            cooldown_until=finished + cooldown if delivered and cooldown > 0 else None,
        )

    def _expired(
        self,
        claimed: ClaimedJob,
        attempt_id: str,
        kind: str | None,
        target_text: str | None,
        now: int,
        decision: Decision,
    ) -> AttemptResult:
        """The job's deadline passed before it could be tried: ended, never sent."""
        return self._untried(
            claimed, decision, attempt_id, kind, target_text, now,
            outcome="expired", error_class="DeadlinePassed", error=DEADLINE_PASSED,
        )  # fmt: skip

    def _untried(
        self,
        claimed: ClaimedJob,
        decision: Decision,
        attempt_id: str,
        kind: str | None,
        target_text: str | None,
        now: int,
        *,
        outcome: str,
        error_class: str,
        error: str | None,
        refund: bool = False,
    ) -> AttemptResult:
        """The result of an attempt that ended at `now` without a send."""
        return attempt_result(
            claimed.job,
            decision,
            attempt_id=attempt_id,
            lease_owner=self.owner,
            outcome=outcome,
            adapter=kind,
            target=target_text,
            started=now,
            finished=now,
            log_path=self.job_log.path_for(now),
            error_class=error_class,
            error=error,
            refund=refund,
        )

    def _deferred_by_breaker(self, planned: _Planned, verdict: Verdict) -> AttemptResult:
        now = self.clock.now_ms()
        assert verdict.until is not None
        return self._deferred(
            planned.claimed,
            attempt_id=planned.attempt_id,
            kind=planned.kind,
            target_text=planned.target_text,
            now=now,
            until=max(verdict.until, now),
            reason=verdict.reason or "breaker open",
            error_class="BreakerOpen",
            error=verdict.detail or verdict.reason,
        )

    def _deferred(
        self,
        claimed: ClaimedJob,
        *,
        attempt_id: str,
        kind: str | None,
        target_text: str | None,
        now: int,
        until: int,
        reason: str,
        error_class: str,
        error: str | None,
    ) -> AttemptResult:
        """Put a job back, untried, to `until` (`backoff.defer`); the claim's attempt is
        handed back. The attempt row says why (outcome `deferred`); no connection was made."""
        decision = defer(until=until, reason=reason, deadline_at=claimed.job.deadline_at)
        return self._untried(
            claimed, decision, attempt_id, kind, target_text, now,
            outcome="deferred", error_class=error_class, error=error, refund=True,
        )  # fmt: skip

    def _deliver(self, adapter: Adapter, delivery: Delivery) -> Outcome:
        try:
            return adapter.deliver(delivery)
        except Exception as exc:  # an adapter bug must not take the daemon down
            _log.error(
                "adapter.crashed",
                adapter=delivery.target_kind,
                job_id=delivery.job_id,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=True,
            )
            return Outcome.retry(
                f"adapter raised {type(exc).__name__}: {exc}", error_class=type(exc).__name__
            )

    # -- recording -------------------------------------------------------------------

    def _record_loop(self) -> None:
        closing = False
        while not closing:
            first = self._results.get()
            if first is None:
                closing = True
                batch: list[AttemptResult] = []
            else:
                batch = [first]
            while len(batch) < RECORD_BATCH:
                try:
                    more = self._results.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            if batch:
                self.record(batch)

    def record(self, batch: Sequence[AttemptResult]) -> None:
        """Write a batch of results; retry through database outages without dropping any."""
        delay = 0.2
        while True:
            try:
                now = self.clock.now_ms()
                applied = self.store.record_results(
                    batch, now=now, writer=self.owner, logged=self._logged
                )
                break
            except Exception as exc:
                self._throttle.warn(
                    "record.failed",
                    _log,
                    "record.failed",
                    level="error",
                    count=len(batch),
                    error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                    retry_in=f"{delay:.1f}s",
                )
                threading.Event().wait(delay)
                delay = min(delay * 2, 5.0)
        self._throttle.clear("record.failed")
        cancelled = self._cancelled(batch, applied)
        for result, ok in zip(batch, applied, strict=True):
            self._log_result(result, ok, now, cancelled=result.job_id in cancelled)
            if result.job_id in cancelled:  # what the database holds now
                result = dataclasses.replace(result, status="failed", terminal_reason="cancelled")
            for observer in self._observers:
                observer(result, ok)
        self.job_log.flush()
        self._logged = [r.attempt_id for r, ok in zip(batch, applied, strict=True) if ok]
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

    def _cancelled(self, batch: Sequence[AttemptResult], applied: Sequence[bool]) -> set[str]:
        """The jobs of this batch that an operator cancelled while they ran."""
        ids = [r.job_id for r, ok in zip(batch, applied, strict=True) if ok]
        try:
            return self.store.cancelled_among(ids)
        except Exception as exc:  # only the log line depends on it; the record is made
            _log.warning("record.cancel_check_failed", error=f"{type(exc).__name__}: {exc}")
            return set()

    def _log_result(self, r: AttemptResult, applied: bool, now: int, *, cancelled: bool) -> None:
        if not applied:
            emit(
                self.job_log,
                "lease.lost",
                now_ms=now,
                level="warning",
                job_id=r.job_id,
                attempt_id=r.attempt_id,
                attempt=r.attempt_no,
                conversation=r.local_conversation_id,
                adapter=r.adapter,
                outcome=r.outcome,
                reason="the job was taken away before its result was recorded",
                owner=r.lease_owner,
            )
            self.summary.count("lost", "lease_lost")
            return
        deferred = r.outcome == "deferred"
        emit(
            self.job_log,
            "attempt.finished",
            now_ms=r.finished_at,
            level="warning" if r.status == "failed" and not cancelled else "info",
            job_id=r.job_id,
            attempt_id=r.attempt_id,
            # A deferral hands its attempt back: it carries the number the next real
            # attempt will have, as its database row does.
            attempt=r.attempt_no,
            conversation=r.local_conversation_id,
            adapter=r.adapter,
            outcome=r.outcome,
            duration_ms=r.finished_at - r.started_at,
            reason=r.decision_reason,
            owner=r.lease_owner,
            status=r.status,
            decision=r.decision,
            next_attempt_at=r.next_attempt_at,
            error=r.error_message,
            summary=r.response_summary,
        )
        if cancelled:
            emit(
                self.job_log,
                "job.cancelled",
                now_ms=now,
                job_id=r.job_id,
                attempt_id=r.attempt_id,
                conversation=r.local_conversation_id,
                reason=f"cancelled by operator while running (the attempt was {r.outcome})",
                owner=r.lease_owner,
                status="failed",
            )
            self.summary.count("failed", "cancelled")
            return
        reason = r.terminal_reason or r.decision_reason or ""
        if deferred and r.status == "pending":
            reason = "deferred"
        self.summary.count(r.status, reason)
