"""Backoff (DESIGN §4), pure functions: attempt, outcome and now in; next state out.

The job's deadline is judged here and nowhere else: before an attempt
(`expired_before_attempt`), for a retry (`decide`) and for a deferral (`defer`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from renewald.durations import format_duration
from renewald.store import Decision


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 30.0
    factor: float = 2.0
    cap: float = 6 * 3600.0
    jitter: float = 0.1
    max_retry_after: float = 24 * 3600.0


DELIVERED = Decision("done", None, "delivered", "done", "delivered")
DEADLINE_PASSED = "the deadline passed before the attempt"


def _past(deadline_at: int | None, at: int) -> bool:
    return deadline_at is not None and at > deadline_at


def _expired(reason: str) -> Decision:
    return Decision("failed", None, "expired", "failed", reason)


def expired_before_attempt(deadline_at: int | None, now: int) -> Decision | None:
    """The decision that ends a job whose deadline passed before it could be tried;
    None while it may still be tried."""
    return _expired(DEADLINE_PASSED) if _past(deadline_at, now) else None


def defer(*, until: int, reason: str, deadline_at: int | None) -> Decision:
    """Put a job back, untried, to `until`; a deferral past its deadline ends it
    `failed/expired`, as a retry would."""
    if _past(deadline_at, until):
        return _expired(f"{reason}: past the deadline")
    return Decision("pending", until, None, "deferred", reason)


def backoff_delay(policy: RetryPolicy, attempt_no: int, rand: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt `attempt_no` (1 for the first)."""
    raw = min(policy.cap, policy.base * policy.factor ** max(0, attempt_no - 1))
    if policy.jitter and rand is not None:
        raw *= rand.uniform(1 - policy.jitter, 1 + policy.jitter)
    return raw


def decide(
    policy: RetryPolicy,
    outcome: str,
    attempt_no: int,
    max_attempts: int,
    now: int,
    *,
    after: float | None = None,
    reason: str | None = None,
    deadline_at: int | None = None,
    rand: random.Random | None = None,
) -> Decision:
    """The next state of a job whose attempt `attempt_no` ended with `outcome`.

    `outcome` is one of delivered, permanent, retry, rate_limited, abandoned (a rescued
    attempt counts as a transient failure). `after` is the target's Retry-After in
    seconds; it wins over the backoff, clamped to `max_retry_after`.
    """
    if outcome == "delivered":
        return DELIVERED
    if outcome == "permanent":
        return Decision("failed", None, "permanent", "failed", reason or "permanent failure")
    if attempt_no >= max_attempts:
        terminal = "abandoned" if outcome == "abandoned" else "exhausted"
        return Decision(
            "failed", None, terminal, "failed", f"attempts exhausted ({attempt_no}/{max_attempts})"
        )
    if after is not None and after >= 0:
        delay = min(after, policy.max_retry_after)
        why = f"retry_after={format_duration(delay)}"
        if after > policy.max_retry_after:
            why += f" (asked {format_duration(after)}, clamped)"
    else:
        delay = backoff_delay(policy, attempt_no, rand)
        exponent = max(0, attempt_no - 1)
        uncapped = policy.base * policy.factor**exponent
        why = (
            f"backoff=cap {format_duration(policy.cap)}"
            if uncapped >= policy.cap
            else f"backoff={policy.factor:g}^{exponent}*{format_duration(policy.base)}"
        )
    next_at = now + max(0, round(delay * 1000))
    if _past(deadline_at, next_at):
        return _expired(f"next attempt would pass the deadline ({why})")
    return Decision("pending", next_at, None, "retry", why)
