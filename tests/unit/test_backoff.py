from __future__ import annotations

import random

import pytest
from freezegun import freeze_time

from renewald.clock import SystemClock
from renewald.daemon.backoff import (
    RetryPolicy,
    backoff_delay,
    decide,
    defer,
    expired_before_attempt,
)

NO_JITTER = RetryPolicy(base=30, factor=2, cap=6 * 3600, jitter=0)
T = 1_800_000_000_000


def test_exact_schedule_without_jitter() -> None:
    assert [backoff_delay(NO_JITTER, n) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert backoff_delay(NO_JITTER, 30) == 6 * 3600


def test_jitter_stays_in_bounds_and_is_seeded() -> None:
    policy = RetryPolicy(jitter=0.1)
    delays = [backoff_delay(policy, 3, random.Random(seed)) for seed in range(200)]
    assert all(108 <= d <= 132 for d in delays)
    assert backoff_delay(policy, 3, random.Random(7)) == backoff_delay(policy, 3, random.Random(7))


@freeze_time("2026-03-28 12:00:00", tick=False)
def test_a_job_retried_to_exhaustion_under_a_frozen_clock() -> None:
    clock = SystemClock()
    start = clock.now_ms()
    schedule = []
    for attempt in (1, 2):
        d = decide(NO_JITTER, outcome="retry", attempt_no=attempt, max_attempts=3, now=start)
        assert d.next_attempt_at is not None
        schedule.append((d.status, d.next_attempt_at - start, d.reason))
    last = decide(NO_JITTER, outcome="retry", attempt_no=3, max_attempts=3, now=start)
    assert schedule == [
        ("pending", 30_000, "backoff=2^0*30s"),
        ("pending", 60_000, "backoff=2^1*30s"),
    ]
    assert (last.status, last.terminal_reason) == ("failed", "exhausted")


def test_retry_after_wins_and_is_clamped() -> None:
    d = decide(NO_JITTER, outcome="rate_limited", attempt_no=1, max_attempts=3, now=T, after=120)
    assert (d.next_attempt_at, d.reason) == (T + 120_000, "retry_after=2m")
    policy = RetryPolicy(jitter=0, max_retry_after=600)
    d = decide(policy, outcome="retry", attempt_no=1, max_attempts=3, now=T, after=86400)
    assert d.next_attempt_at == T + 600_000 and "clamped" in d.reason


@pytest.mark.parametrize(
    ("outcome", "status", "terminal"),
    [("delivered", "done", "delivered"), ("permanent", "failed", "permanent")],
)
def test_terminal_outcomes(outcome: str, status: str, terminal: str) -> None:
    d = decide(NO_JITTER, outcome=outcome, attempt_no=1, max_attempts=3, now=T, reason="HTTP 404")
    assert (d.status, d.terminal_reason, d.next_attempt_at) == (status, terminal, None)


def test_abandoned_when_attempts_used_up() -> None:
    d = decide(NO_JITTER, outcome="abandoned", attempt_no=3, max_attempts=3, now=T)
    assert (d.status, d.terminal_reason) == ("failed", "abandoned")


def test_deadline_boundary() -> None:
    at_deadline = decide(
        NO_JITTER, outcome="retry", attempt_no=1, max_attempts=3, now=T, deadline_at=T + 30_000
    )
    assert at_deadline.status == "pending"
    past = decide(
        NO_JITTER, outcome="retry", attempt_no=1, max_attempts=3, now=T, deadline_at=T + 29_999
    )
    assert (past.status, past.terminal_reason) == ("failed", "expired")


def test_cap_is_named() -> None:
    d = decide(NO_JITTER, outcome="retry", attempt_no=20, max_attempts=50, now=T)
    assert d.reason == "backoff=cap 6h" and d.next_attempt_at == T + 6 * 3600 * 1000


def test_the_deadline_before_an_attempt() -> None:
    assert expired_before_attempt(None, T) is None
    assert expired_before_attempt(T, T) is None  # at the deadline it may still be tried
    expired = expired_before_attempt(T, T + 1)
    assert expired is not None
    assert (expired.status, expired.terminal_reason, expired.decision) == (
        "failed",
        "expired",
        "failed",
    )
    assert expired.reason == "the deadline passed before the attempt"


def test_a_deferral_past_the_deadline_ends_the_job() -> None:
    kept = defer(until=T + 5, reason="breaker open", deadline_at=T + 5)
    assert (kept.status, kept.next_attempt_at, kept.decision) == ("pending", T + 5, "deferred")
    assert kept.reason == "breaker open"
    ended = defer(until=T + 6, reason="breaker open", deadline_at=T + 5)
    assert (ended.status, ended.next_attempt_at, ended.terminal_reason) == (
        "failed",
        None,
        "expired",
    )
    assert ended.reason == "breaker open: past the deadline"
    assert defer(until=T, reason="x", deadline_at=None).status == "pending"
