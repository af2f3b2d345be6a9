"""The circuit breaker's decisions, pure: a `renewal_target_pauses` row and `now` in,
the next row or a `Verdict` out (unit-tested with no database and no clock).

The rule (DESIGN §4): after `[breaker] failures` (K) consecutive transient failures
(retry, rate_limited) of one target, the target is paused for `[breaker] pause` (T); when
the pause is over the breaker is *half-open* and exactly one delivery, the probe, is let
through. A delivered probe closes the breaker; a failed one opens it again for T. Any
delivered outcome resets the count. `breaker.Breakers` applies these to the shared table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from renewald.clock import iso_utc
from renewald.controls import escape_controls
from renewald.store.models import TargetPause


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
    target_key: str,
    adapter: str | None,
    *,
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
