"""The circuit breaker per delivery target, shared by every daemon on the database.

While a target's breaker is open its due jobs are deferred to the end of the pause
without spending attempts, and no connection is made; the rules (when it opens, the
half-open probe, what closes it) are pure functions in `breaker_rules`.

The state lives in `renewal_target_pauses`, one row per target in trouble, so that all
daemons count the same failures and honour the same pause. The probe is taken with a
fenced UPDATE (`Store.claim_target_probe`): it moves `paused_until` from the value every
daemon saw to the end of the probe window, and only one daemon's UPDATE can match. A
daemon that dies while probing leaves a window that simply runs out.

`Breakers` keeps a cache of the table so that the hot path reads nothing for targets
that are fine, and writes only when a delivery fails or a target in trouble recovers.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from renewald.adapters import Outcome, OutcomeKind
from renewald.daemon.breaker_rules import (
    DELIVER,
    BreakerSettings,
    BreakerState,
    Verdict,
    after_failure,
    after_inconclusive_probe,
    deferral,
    opened,
    state_of,
)
from renewald.logging import JobLog, emit
from renewald.store import Store
from renewald.store.models import TargetPause

# The settings and verdicts are part of what Breakers takes and returns: its callers
# (dispatcher, service) import the three from here.
__all__ = ["BreakerSettings", "Breakers", "TargetAttempt", "Verdict"]

_log = structlog.get_logger("renewald.breaker")


@dataclass(frozen=True)
class TargetAttempt:
    """The delivery a breaker decision is about: its target key, and the adapter, job and
    attempt its log lines name."""

    key: str
    adapter: str
    job_id: str
    attempt_id: str

    def log_keys(self) -> dict[str, Any]:
        keys = {"job_id": self.job_id, "attempt_id": self.attempt_id, "adapter": self.adapter}
        return {**keys, "target_key": self.key}


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

    def admit(self, at: TargetAttempt, now: int) -> Verdict:
        """Right before a delivery: deliver, deliver as the half-open probe, or defer."""
        key = at.key
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
                        at,
                        now,
                        "breaker.probe",
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

    def record(self, at: TargetAttempt, outcome: Outcome, verdict: Verdict, now: int) -> None:
        """Count what a delivery to `key` came to. Never raises for a database error:
        the breaker is a protection, and a lost count is better than a lost result."""
        probe = verdict.action == "probe"
        key = at.key
        try:
            if outcome.kind is OutcomeKind.delivered:
                if probe or self.cached(key) is not None:
                    self._close(at, now)
            elif outcome.is_transient:
                self._fail(at, now, error=outcome.reason, probe=probe)
            elif probe:
                probe_until = verdict.probe_until or now
                _, after = self.store.change_target_pause(
                    target_key=key,
                    adapter=at.adapter,
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

    def _close(self, at: TargetAttempt, now: int) -> None:
        before = self.store.clear_target_pause(target_key=at.key)
        self._remember(at.key, None)
        if before is not None and before.paused_until is not None:
            self._log_event(
                at,
                now,
                "breaker.closed",
                failures=before.failures,
                reason="the target accepted a delivery",
            )

    def _fail(self, at: TargetAttempt, now: int, *, error: str | None, probe: bool) -> None:
        settings = self.settings

        def change(row: TargetPause | None) -> TargetPause:
            return after_failure(
                row, at.key, at.adapter, error=error, now=now, settings=settings, probe=probe
            )

        before, after = self.store.change_target_pause(
            target_key=at.key, adapter=at.adapter, now=now, change=change
        )
        self._remember(at.key, after)
        if after is not None and opened(before, after):
            self._log_event(
                at,
                now,
                "breaker.opened",
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
        self, at: TargetAttempt, now: int, event: str, *, level: str = "info", **fields: Any
    ) -> None:
        emit(self.job_log, event, now_ms=now, level=level, **at.log_keys(), **fields)
        for observer in self.observers:
            observer(event.removeprefix("breaker."))

    def _store_error(self, during: str, key: str, exc: SQLAlchemyError) -> None:
        _log.error(
            "breaker.database_error",
            during=during,
            target_key=key,
            error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
        )
