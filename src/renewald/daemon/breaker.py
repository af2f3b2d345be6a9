"""The circuit breaker per delivery target, shared by every daemon on the database.

After `[breaker] failures` (K) consecutive transient failures (retry, rate_limited) of one
target, the target is paused for `[breaker] pause` (T): its due jobs are deferred to the
end of the pause without spending attempts, and no connection is made. When the pause
is over the breaker is *half-open*: exactly one delivery, the probe, is let through. A
delivered probe closes the breaker; a failed one opens it again for T. Any delivered
outcome resets the count.

The state lives in `renewal_target_pauses`, one row per target in trouble, so that all
daemons count the same failures and honour the same pause. The probe is taken with a
fenced UPDATE (`Store.claim_target_probe`): it moves `paused_until` from the value every
daemon saw to the end of the probe window, and only one daemon's UPDATE can match. A
daemon that dies while probing leaves a window that simply runs out.

The top half of this module is pure decisions on a row and `now` (unit-tested with no
database and no clock); `Breakers` below keeps a cache of the table so that the hot path
reads nothing for targets that are fine, and writes only when a delivery fails or a
target in trouble recovers.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from renewald.adapters import Outcome, OutcomeKind
from renewald.clock import iso_utc
from renewald.controls import escape_controls
from renewald.logging import JobLog, emit
from renewald.store import Store
from renewald.store.models import TargetPause

_log = structlog.get_logger("renewald.breaker")


@dataclass(frozen=True)
class BreakerSettings:
    """`failures` (K) and `pause_ms` (T) from `[breaker]`; `probe_ms` is how long a
    claimed probe keeps a half-open target to itself (the daemon's lease: after that
    the probing job would be rescued anyway)."""

    failures: int = 5
    pause_ms: int = 300_000
    probe_ms: int = 60_000


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


def state_of(row: TargetPause | None, now: int) -> BreakerState:
    """Closed without a pause, open while `paused_until` is ahead, half-open once it passed.

    A probe in flight looks open: its window is a pause that only the prober ignores.
    """
    if row is None or row.paused_until is None:
        return BreakerState.closed
    if row.paused_until > now:
        return BreakerState.open
    return BreakerState.half_open


def defer_until(row: TargetPause | None, now: int, settings: BreakerSettings) -> int:
    """When a job deferred now by this breaker should be tried again.

    The end of the pause; but never later than one pause from now, so that jobs deferred
    during a probe window (which can be longer than T) come back soon after the probe.
    """
    horizon = now + settings.pause_ms
    if row is None or row.paused_until is None or row.paused_until <= now:
        return horizon
    return min(row.paused_until, horizon)


def after_failure(
    row: TargetPause | None,
    *,
    target_key: str,
    adapter: str | None,
    error: str | None,
    now: int,
    settings: BreakerSettings,
    probe: bool = False,
) -> TargetPause:
    """The row after one more transient failure.

    The K-th consecutive failure opens the breaker for T; a failure while it is open is
    counted but does not extend the pause; a failed probe, or any failure while
    half-open, opens it again for T.
    """
    failures = (row.failures if row else 0) + 1
    paused_until = row.paused_until if row else None
    opened_at = row.opened_at if row else None
    if probe or (failures >= settings.failures and (paused_until is None or paused_until <= now)):
        paused_until = now + settings.pause_ms
        opened_at = now
    return TargetPause(
        target_key=target_key,
        adapter=adapter or (row.adapter if row else None),
        failures=failures,
        paused_until=paused_until,
        opened_at=opened_at,
        last_error=escape_controls(error)
        if error is not None
        else (row.last_error if row else None),
        updated_at=now,
    )


def after_inconclusive_probe(
    row: TargetPause | None, *, now: int, probe_until: int
) -> TargetPause | None:
    """A probe that ended neither delivered nor transient (a permanent outcome says
    something about the job, not the target): hand the probe back, half-open again, so
    that the next due job probes at once. A row someone else changed is left alone."""
    if row is None or row.paused_until != probe_until:
        return row
    return dataclasses.replace(row, paused_until=now, updated_at=now)


def opened(before: TargetPause | None, after: TargetPause | None) -> bool:
    """Whether the change from `before` to `after` (re)opened the breaker."""
    if after is None or after.opened_at is None:
        return False
    return before is None or before.opened_at != after.opened_at


@dataclass(frozen=True)
class Verdict:
    """What to do with one job of a target: deliver, deliver as the probe, or defer."""

    action: str  # "deliver" | "probe" | "defer"
    until: int | None = None
    reason: str | None = None
    detail: str | None = None
    probe_until: int | None = None

    @property
    def deliver(self) -> bool:
        return self.action in ("deliver", "probe")


DELIVER = Verdict("deliver")


def deferral(row: TargetPause | None, now: int, settings: BreakerSettings) -> Verdict:
    until = defer_until(row, now, settings)
    detail = (
        f"{row.target_key} paused after {row.failures} consecutive transient failures"
        if row
        else None
    )
    if row is not None and row.last_error:
        detail = f"{detail}; last: {row.last_error}"
    return Verdict(
        "defer", until=until, reason=f"breaker open until {iso_utc(until)}", detail=detail
    )


# --- the daemon's view of the shared table --------------------------------------------


class Breakers:
    """The breakers of every target this daemon delivers to, thread-safe.

    The cache holds the rows of targets in trouble, as of the last `refresh` (once per
    poll, at most every `refresh_ms`) and every write made here. A target with no cached
    row is taken as closed without a query: another daemon's fresh pause is seen at the
    next refresh, and until then its failures are still counted in the shared row.
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: BreakerSettings,
        job_log: JobLog,
        refresh_ms: int = 250,
    ) -> None:
        self.store = store
        self.settings = settings
        self.job_log = job_log
        self.refresh_ms = refresh_ms
        self._rows: dict[str, TargetPause] = {}
        self._probing: set[str] = set()
        self._written: set[str] | None = None
        self._refreshed_at: int | None = None
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        # Called with each transition this daemon makes ("opened", "probe", "closed").
        self.observers: list[Callable[[str], None]] = []

    def cached(self, key: str) -> TargetPause | None:
        with self._lock:
            return self._rows.get(key)

    def refresh(self, now: int, *, force: bool = False) -> None:
        """Reload the rows of targets in trouble (written by any daemon)."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            if (
                not force
                and self._refreshed_at is not None
                and now - self._refreshed_at < self.refresh_ms
            ):
                return
            with self._lock:
                self._written = set()
            try:
                rows = self.store.list_target_pauses()
            finally:
                with self._lock:
                    written, self._written = self._written or set(), None
            with self._lock:
                fresh = {row.target_key: row for row in rows}
                # A write made here while the snapshot was read is newer than the snapshot.
                for key in written:
                    if key in self._rows:
                        fresh[key] = self._rows[key]
                    else:
                        fresh.pop(key, None)
                self._rows = fresh
                self._refreshed_at = now
        finally:
            self._refreshing.release()

    def _remember(self, key: str, row: TargetPause | None) -> None:
        with self._lock:
            if row is None:
                self._rows.pop(key, None)
            else:
                self._rows[key] = row
            if self._written is not None:
                self._written.add(key)

    def check(self, key: str, now: int) -> Verdict:
        """From the cache only: defer while the target is open, else go on (to `admit`)."""
        row = self.cached(key)
        if state_of(row, now) is BreakerState.open:
            return deferral(row, now, self.settings)
        return DELIVER

    def admit(self, key: str, *, adapter: str, now: int, job_id: str, attempt_id: str) -> Verdict:
        """Right before a delivery: deliver, deliver as the half-open probe, or defer."""
        row = self.cached(key)
        for _ in range(3):
            state = state_of(row, now)
            if state is BreakerState.closed:
                return DELIVER
            if state is BreakerState.open:
                return deferral(row, now, self.settings)
            assert row is not None and row.paused_until is not None
            with self._lock:
                if key in self._probing:  # our own probe outlived its window: still one probe
                    return deferral(None, now, self.settings)
            probe_until = now + self.settings.probe_ms
            try:
                if self.store.claim_target_probe(
                    target_key=key, paused_until=row.paused_until, now=now, probe_until=probe_until
                ):
                    with self._lock:
                        self._probing.add(key)
                    self._remember(key, dataclasses.replace(row, paused_until=probe_until))
                    self._log_event(
                        "breaker.probe",
                        now=now,
                        key=key,
                        adapter=adapter,
                        job_id=job_id,
                        attempt_id=attempt_id,
                        failures=row.failures,
                        reason="half-open: this delivery probes the target",
                    )
                    return Verdict("probe", probe_until=probe_until)
                row = self.store.get_target_pause(target_key=key)  # another daemon moved first
            except SQLAlchemyError as exc:
                self._store_error("admit", key, exc)
                return deferral(row, now, self.settings)
            self._remember(key, row)
        return deferral(row, now, self.settings)

    def record(
        self,
        key: str,
        *,
        adapter: str,
        outcome: Outcome,
        verdict: Verdict,
        now: int,
        job_id: str,
        attempt_id: str,
    ) -> None:
        """Count what a delivery to `key` came to. Never raises for a database error:
        the breaker is a protection, and a lost count is better than a lost result."""
        probe = verdict.action == "probe"
        try:
            if outcome.kind is OutcomeKind.delivered:
                if probe or self.cached(key) is not None:
                    self._close(key, adapter=adapter, now=now, job_id=job_id, attempt_id=attempt_id)
            elif outcome.is_transient:
                self._fail(
                    key,
                    adapter=adapter,
                    outcome=outcome,
                    probe=probe,
                    now=now,
                    job_id=job_id,
                    attempt_id=attempt_id,
                )
            elif probe:
                probe_until = verdict.probe_until or now
                _, after = self.store.change_target_pause(
                    target_key=key,
                    adapter=adapter,
                    now=now,
                    change=lambda row: after_inconclusive_probe(
                        row, now=now, probe_until=probe_until
                    ),
                )
                self._remember(key, after)
        except SQLAlchemyError as exc:
            self._store_error("record", key, exc)
        finally:
            if probe:
                with self._lock:
                    self._probing.discard(key)

    def _close(self, key: str, *, adapter: str, now: int, job_id: str, attempt_id: str) -> None:
        before = self.store.clear_target_pause(target_key=key)
        self._remember(key, None)
        if before is not None and before.paused_until is not None:
            self._log_event(
                "breaker.closed",
                now=now,
                key=key,
                adapter=adapter,
                job_id=job_id,
                attempt_id=attempt_id,
                failures=before.failures,
                reason="the target accepted a delivery",
            )

    def _fail(
        self,
        key: str,
        *,
        adapter: str,
        outcome: Outcome,
        probe: bool,
        now: int,
        job_id: str,
        attempt_id: str,
    ) -> None:
        settings = self.settings
        error = outcome.reason

        def change(row: TargetPause | None) -> TargetPause:
            return after_failure(
                row,
                target_key=key,
                adapter=adapter,
                error=error,
                now=now,
                settings=settings,
                probe=probe,
            )

        before, after = self.store.change_target_pause(
            target_key=key, adapter=adapter, now=now, change=change
        )
        self._remember(key, after)
        if after is not None and opened(before, after):
            self._log_event(
                "breaker.opened",
                now=now,
                key=key,
                adapter=adapter,
                job_id=job_id,
                attempt_id=attempt_id,
                failures=after.failures,
                paused_until=after.paused_until,
                probe=probe or None,
                reason=(
                    f"the probe failed: {error}"
                    if probe
                    else f"{after.failures} consecutive transient failures; last: {error}"
                ),
                level="warning",
            )

    def _log_event(
        self,
        event: str,
        *,
        now: int,
        key: str,
        adapter: str,
        job_id: str,
        attempt_id: str,
        level: str = "info",
        **fields: Any,
    ) -> None:
        emit(
            self.job_log,
            event,
            now_ms=now,
            level=level,
            job_id=job_id,
            attempt_id=attempt_id,
            adapter=adapter,
            target_key=key,
            **fields,
        )
        for observer in self.observers:
            observer(event.removeprefix("breaker."))

    def _store_error(self, during: str, key: str, exc: SQLAlchemyError) -> None:
        _log.error(
            "breaker.database_error",
            during=during,
            target_key=key,
            error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
        )
