"""Recording finished attempts: one thread writes results in batches, then their lines.

Every finished attempt becomes an `AttemptResult` queued here (a claim sent at once hands
over all its results in one go). The recorder writes whatever has gathered (up to
`RECORD_BATCH`; a few results wait briefly for more, `RECORD_LINGER`) in one fenced
transaction — the jobs' next states and the attempt rows (`Store.record_results`) — and
appends the JSONL lines right after the commit, flushed once per batch. A result whose
fence matched nothing is logged `lease.lost` and changes nothing. A database outage is
waited out: no result is ever dropped.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from renewald.daemon.batches import gather
from renewald.daemon.parts import DaemonParts, Part
from renewald.daemon.results import attempt_keys
from renewald.logging import Throttle, emit
from renewald.store import AttemptResult, Recorded
from renewald.store.attempts import CANCELLED

_log = structlog.get_logger("renewald.daemon")

RECORD_BATCH = 256
# Results that trickle in (one per finishing worker, the I/O-bound case) would each cost a
# transaction of five statements: a batch of fewer than RECORD_SMALL waits up to
# RECORD_LINGER for company. A claim's worth of results (sent at once) never waits.
RECORD_SMALL = 16
RECORD_LINGER = 0.02

OnRecorded = Callable[[Sequence[AttemptResult], Sequence[bool]], None]


class Recorder(Part):
    def __init__(
        self, parts: DaemonParts, *, on_recorded: OnRecorded, linger: float = RECORD_LINGER
    ) -> None:
        super().__init__(parts)
        self._on_recorded = on_recorded
        self._linger = linger
        self._queue: queue.Queue[list[AttemptResult] | None] = queue.Queue()
        # Attempts whose lines were flushed; their unlogged marks go with the next batch's
        # transaction (or `close`).
        self._logged: list[str] = []
        self._throttle = Throttle()
        self._observers: list[Callable[[AttemptResult, bool], None]] = []

    def add_observer(self, observer: Callable[[AttemptResult, bool], None]) -> None:
        self._observers.append(observer)

    def put(self, results: Sequence[AttemptResult]) -> None:
        """Queue results in one hand-off (a claim's worth sent at once, or a worker's one):
        they are written in the same batch."""
        self._queue.put(list(results))

    def finish(self) -> None:
        """Write what is queued, then end `run` (the thread)."""
        self._queue.put(None)

    def close(self) -> None:
        """Forget the marks of the lines flushed last (after `run` has returned)."""
        self.job_log.flush()
        logged, self._logged = self._logged, []
        self.store.mark_logged(logged)

    def run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            batch = [] if first is None else first
            closing = first is None or gather(self._queue, batch, RECORD_BATCH)
            if not closing and len(batch) < RECORD_SMALL:
                closing = gather(self._queue, batch, RECORD_SMALL, wait=self._linger)
            if batch:
                self.record(batch)

    def record(self, batch: Sequence[AttemptResult]) -> None:
        """Write a batch of results; retry through database outages without dropping any."""
        recorded, now = self._write(batch)
        applied, cancelled = recorded.applied, recorded.cancelled
        for result, ok in zip(batch, applied, strict=True):
            self._log_result(result, ok, now, cancelled=result.job_id in cancelled)
            if result.job_id in cancelled:  # what the database holds now
                ended = dataclasses.replace(
                    result.decided, status="failed", terminal_reason=CANCELLED
                )
                result = dataclasses.replace(result, decided=ended)
            for observer in self._observers:
                observer(result, ok)
        self.job_log.flush()
        self._logged = [r.attempt_id for r, ok in zip(batch, applied, strict=True) if ok]
        self._on_recorded(batch, applied)

    def _write(self, batch: Sequence[AttemptResult]) -> tuple[Recorded, int]:
        delay = 0.2
        while True:
            try:
                now = self.clock.now_ms()
                recorded = self.store.record_batch(
                    batch, now=now, writer=self.owner, logged=self._logged
                )
                self._throttle.clear("record.failed")
                return recorded, now
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

    def _line(self, event: str, r: AttemptResult, now: int, **fields: Any) -> None:
        """One line about the attempt `r`: its keys, adapter, outcome and owner first."""
        keys = {**attempt_keys(r), "adapter": r.adapter, "outcome": r.outcome}
        emit(self.job_log, event, now_ms=now, **keys, **fields, owner=r.lease_owner)

    def _log_result(self, r: AttemptResult, applied: bool, now: int, *, cancelled: bool) -> None:
        if not applied:
            self._line(
                "lease.lost",
                r,
                now,
                level="warning",
                reason="the job was taken away before its result was recorded",
            )
            self.summary.count("lost", "lease_lost")
            return
        # A deferral hands its attempt back: its `attempt` is the number the next real
        # attempt will have, as its database row says.
        self._line(
            "attempt.finished",
            r,
            r.finished_at,
            level="warning" if r.status == "failed" and not cancelled else "info",
            duration_ms=r.finished_at - r.started_at,
            reason=r.decision_reason,
            status=r.status,
            decision=r.decision,
            next_attempt_at=r.next_attempt_at,
            error=r.error_message,
            summary=r.response_summary,
        )
        if cancelled:
            why = f"cancelled by operator while running (the attempt was {r.outcome})"
            self._line("job.cancelled", r, now, reason=why, status="failed")
            self.summary.count("failed", "cancelled")
            return
        reason = r.terminal_reason or r.decision_reason or ""
        if r.outcome == "deferred" and r.status == "pending":
            reason = "deferred"
        self.summary.count(r.status, reason)
