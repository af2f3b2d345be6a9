"""Sending planned jobs: by a worker thread, or by the sender thread a claim at a time.

An adapter that waits on the network or a child process (`blocking`, the default) gets a
thread of the bounded pool (`workers`), and its send is marked begun through the send
gate (`sendgate.py`), which writes the marks of all waiting workers at once. An adapter
that returns at once (`blocking = False`: `log`) is sent by one sender thread, a whole
claim at a time: one write marks every send of the claim begun, then each is sent and
the claim's results go to the recorder together, with one thread hand-off per claim at
either end rather than one per job, while the polling thread claims the next. Right
before a send the job's deadline and its target's breaker are checked again (`_admit`).
Every finished attempt goes to the recorder.

`Sending` is the send half of the `Dispatcher` (dispatcher.py), which owns the state
declared here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

import structlog

from renewald.adapters import Adapter, Delivery, Outcome
from renewald.clock import Clock
from renewald.daemon.backoff import expired_before_attempt
from renewald.daemon.breaker import Breakers, Verdict
from renewald.daemon.limits import TargetLimits
from renewald.daemon.malformed import handling_failed
from renewald.daemon.planning import Planned
from renewald.daemon.recorder import Recorder
from renewald.daemon.results import ResultMaker
from renewald.daemon.sendgate import SendGate
from renewald.logging import JobLog, emit
from renewald.store import AttemptResult, ClaimedJob

_log = structlog.get_logger("renewald.daemon")


class Sending:
    owner: str
    clock: Clock
    job_log: JobLog
    breakers: Breakers
    results: ResultMaker
    recorder: Recorder
    _gate: SendGate | None
    _stopping: threading.Event
    _held_lock: threading.Condition
    _held: dict[str, int]
    _started: set[str]
    _finishing: set[str]
    _tasks: queue.Queue[Planned | None]
    _at_once: queue.Queue[list[Planned] | None]
    _limits: TargetLimits[Planned]
    _with_workers: int
    _on_capacity: Callable[[], None] | None

    def _handling_failed(self, claimed: ClaimedJob, exc: Exception) -> AttemptResult:
        return handling_failed(
            claimed, exc, owner=self.owner, now=self.clock.now_ms(), job_log=self.job_log
        )

    def _finish_now(self, claimed: ClaimedJob, result: AttemptResult) -> None:
        # Started like a delivery, so that a shutdown does not release the job under the
        # recorder; when shutdown released it first, the result is dropped with it.
        if self._begin(claimed):
            self._queue_results([result])

    def _begin(self, claimed: ClaimedJob) -> bool:
        """Mark a held job as being worked on; False when it was released meanwhile."""
        with self._held_lock:
            if self._stopping.is_set() or self._held.get(claimed.job.job_id) != claimed.lease_token:
                return False
            self._started.add(claimed.job.job_id)
            return True

    def _to_workers(self, planned: Planned) -> None:
        with self._held_lock:
            self._with_workers += 1
        self._tasks.put(planned)

    def _deliver_loop(self) -> None:
        while True:
            planned = self._tasks.get()
            if planned is None:
                return
            try:
                if self._begin(planned.claimed):
                    self._run(planned)
                else:  # released at shutdown
                    self._free_slot(planned.key)
            finally:
                with self._held_lock:
                    self._with_workers -= 1
                    self._held_lock.notify_all()
                if self._on_capacity:  # a free worker: the next job can be claimed
                    self._on_capacity()

    def _run(self, planned: Planned) -> None:
        """Deliver a job that holds a slot of its target (in a worker), then pass the slot on."""
        verdict = self._admitted(planned)
        if verdict is not None:
            result = self._send_begun(planned, verdict, lambda: self._gate_begin(planned.claimed))
            if result is not None:
                self._queue_results([result])

    def _send_at_once_loop(self) -> None:
        """The sender thread: the claims of jobs sent at once, in claim order."""
        while True:
            batch = self._at_once.get()
            if batch is None:
                return
            self._send_at_once(batch)

    def _send_at_once(self, batch: Sequence[Planned]) -> None:
        """Send a claim's jobs for non-blocking adapters in this thread: one write marks
        every send begun, then each is sent; their results go to the recorder together."""
        ready: list[tuple[Planned, Verdict]] = []
        for planned in batch:
            if not self._begin(planned.claimed):  # released at shutdown
                self._free_slot(planned.key)
                continue
            verdict = self._admitted(planned)
            if verdict is not None:
                ready.append((planned, verdict))
        begun = self._gate_begin_all([p.claimed for p, _ in ready])
        results: list[AttemptResult] = []
        try:
            for (planned, verdict), ok in zip(ready, begun, strict=True):
                result = self._send_begun(planned, verdict, lambda ok=ok: ok)  # type: ignore[misc]
                if result is not None:
                    results.append(result)
        finally:
            self._queue_results(results)

    def _admitted(self, planned: Planned) -> Verdict | None:
        """`_admit`, where a job not to be sent now (or whose handling failed) has its
        result queued and its slot passed on: None."""
        try:
            step = self._admit(planned)
        except Exception as exc:  # one job's handling, never the thread
            step = self._handling_failed(planned.claimed, exc)
        if isinstance(step, AttemptResult):
            self._free_slot(planned.key)
            self._queue_results([step])
            return None
        return step

    def _send_begun(
        self, planned: Planned, verdict: Verdict, begin: Callable[[], bool | None]
    ) -> AttemptResult | None:
        """Send an admitted job once `begin()` has marked its send begun and pass its slot
        on; what came of it, for the recorder (None: not sent, nothing to record)."""
        result: AttemptResult | None = None
        try:
            if self._may_send(planned.claimed, begin()):
                result = self._send(planned, verdict)
        except Exception as exc:  # one job's handling, never the thread
            result = self._handling_failed(planned.claimed, exc)
        finally:
            self._free_slot(planned.key)
        return result

    def _admit(self, planned: Planned) -> AttemptResult | Verdict:
        """Right before the send: the job's deadline (it may have waited in line past it)
        and its target's breaker. A result when the job is not to be sent now."""
        job = planned.claimed.job
        now = self.clock.now_ms()
        expired = expired_before_attempt(job.deadline_at, now)
        if expired is not None:
            return self.results.expired(planned, now, expired)
        verdict = self.breakers.admit(planned.at_target, now)
        if not verdict.deliver:
            return self._deferred_by_breaker(planned, verdict)
        return verdict

    def _gate_begin(self, claimed: ClaimedJob) -> bool | None:
        gate = self._gate
        return gate.begin(claimed.job.job_id, claimed.lease_token) if gate is not None else None

    def _gate_begin_all(self, claimed: Sequence[ClaimedJob]) -> list[bool | None]:
        gate = self._gate
        if gate is None or not claimed:
            return [None] * len(claimed)
        return gate.begin_now([(c.job.job_id, c.lease_token) for c in claimed])

    def _may_send(self, claimed: ClaimedJob, begun: bool | None) -> bool:
        """Whether the send-begun mark (the attempt spent in the database, fenced, lease
        renewed) was written. A database outage is waited out by the gate, without
        sending: once it is back, the job is sent if it is still ours.

        None (the daemon stopped meanwhile): not sent, nothing spent; its lease runs out
        and rescue gives it back unspent. False: it was taken away; not sent.
        """
        if begun:
            return True
        if begun is False:
            emit(
                self.job_log,
                "lease.lost",
                now_ms=self.clock.now_ms(),
                level="warning",
                job_id=claimed.job.job_id,
                owner=self.owner,
                reason="the job was taken away before its send began; not sent",
                during="send",
            )
        self._forget(claimed.job.job_id, claimed.lease_token)
        return False

    def _forget(self, job_id: str, lease_token: int) -> None:
        """Let go of a held job that will have no result: it was never sent."""
        with self._held_lock:
            self._started.discard(job_id)
            if self._held.get(job_id) == lease_token:
                del self._held[job_id]
            self._held_lock.notify_all()
        if self._on_capacity:
            self._on_capacity()

    def _send(self, planned: Planned, verdict: Verdict) -> AttemptResult:
        """Send a job whose send is marked begun; what came of it."""
        started = self.clock.now_ms()
        emit(
            self.job_log,
            "attempt.started",
            now_ms=started,
            **planned.log_keys(),
            adapter=planned.kind,
            owner=self.owner,
        )
        if planned.blocking:
            self.job_log.flush()  # a long delivery is visible in the job log while it runs
        outcome = self._deliver(planned.adapter, planned.delivery)
        finished = self.clock.now_ms()
        self.breakers.record(planned.at_target, outcome, verdict, finished)
        return self.results.sent(planned, started, finished, outcome)

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

    def _deferred_by_breaker(self, planned: Planned, verdict: Verdict) -> AttemptResult:
        now = self.clock.now_ms()
        assert verdict.until is not None
        return self.results.deferred(
            planned,
            now=now,
            until=max(verdict.until, now),
            reason=verdict.reason or "breaker open",
            error_class="BreakerOpen",
            error=verdict.detail or verdict.reason,
        )

    def _free_slot(self, key: str) -> None:
        with self._held_lock:
            following = self._limits.release(key)
        if following is not None:
            # Behind whatever is already queued: a busy target does not jump ahead of
            # other targets' jobs.
            self._to_workers(following)

    def _queue_results(self, results: Sequence[AttemptResult]) -> None:
        if not results:
            return
        with self._held_lock:
            self._finishing.update(r.job_id for r in results)
        self.recorder.put(results)
