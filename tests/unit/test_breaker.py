"""The breaker's decisions, pure: a row and an explicit `now` in, the next row out."""

from __future__ import annotations

import dataclasses

import pytest

from renewald.clock import iso_utc
from renewald.daemon.breaker_rules import (
    BreakerSettings,
    BreakerState,
    after_failure,
    after_inconclusive_probe,
    defer_until,
    deferral,
    opened,
    state_of,
)
from renewald.store.models import TargetPause

T0 = 1_800_000_000_000
KEY = "browser:firefox-claude"
SETTINGS = BreakerSettings(failures=3, pause_ms=1_000, probe_ms=60_000)


def fail(row: TargetPause | None, now: int, *, probe: bool = False, error: str = "HTTP 503"):
    return after_failure(
        row,
        target_key=KEY,
        adapter="browser.proxy_delivery",
        error=error,
        now=now,
        settings=SETTINGS,
        probe=probe,
    )


def row(**values: object) -> TargetPause:
    base = TargetPause(KEY, "browser.proxy_delivery", 0, None, None, None, T0)
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]


# -- state -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paused_until", "now", "state"),
    [
        (None, T0, BreakerState.closed),
        (T0 + 1, T0, BreakerState.open),
        (T0, T0, BreakerState.half_open),  # the pause ends at paused_until, inclusive
        (T0 - 1, T0, BreakerState.half_open),
    ],
)
def test_state_of_a_row(paused_until: int | None, now: int, state: BreakerState) -> None:
    assert state_of(row(failures=3, paused_until=paused_until), now) is state


def test_no_row_is_closed() -> None:
    assert state_of(None, T0) is BreakerState.closed


# -- counting and opening ----------------------------------------------------------------


def test_kth_consecutive_failure_opens_for_the_pause() -> None:
    first = fail(None, T0)
    assert (first.failures, first.paused_until, first.opened_at) == (1, None, None)
    second = fail(first, T0 + 10)
    assert (second.failures, second.paused_until) == (2, None)
    assert not opened(first, second)
    third = fail(second, T0 + 20, error="timeout")
    assert third.failures == 3
    assert third.paused_until == T0 + 20 + SETTINGS.pause_ms
    assert third.opened_at == T0 + 20
    assert third.last_error == "timeout"
    assert opened(second, third)
    assert state_of(third, T0 + 20 + SETTINGS.pause_ms - 1) is BreakerState.open
    assert state_of(third, T0 + 20 + SETTINGS.pause_ms) is BreakerState.half_open


def test_threshold_of_one_opens_on_the_first_failure() -> None:
    settings = dataclasses.replace(SETTINGS, failures=1)
    first = after_failure(None, target_key=KEY, adapter=None, error="x", now=T0, settings=settings)
    assert first.paused_until == T0 + settings.pause_ms and opened(None, first)


def test_failures_while_open_are_counted_but_do_not_extend_the_pause() -> None:
    open_row = row(failures=3, paused_until=T0 + 1_000, opened_at=T0)
    later = fail(open_row, T0 + 500)
    assert later.failures == 4
    assert (later.paused_until, later.opened_at) == (T0 + 1_000, T0)
    assert not opened(open_row, later)


def test_a_failure_while_half_open_opens_again() -> None:
    half_open = row(failures=3, paused_until=T0, opened_at=T0 - 1_000)
    again = fail(half_open, T0 + 5)
    assert again.paused_until == T0 + 5 + SETTINGS.pause_ms and again.opened_at == T0 + 5
    assert opened(half_open, again)


def test_a_failed_probe_opens_again_even_inside_its_window() -> None:
    probing = row(failures=3, paused_until=T0 + SETTINGS.probe_ms, opened_at=T0 - 1_000)
    again = fail(probing, T0 + 40, probe=True)
    assert again.paused_until == T0 + 40 + SETTINGS.pause_ms
    assert again.opened_at == T0 + 40 and again.failures == 4
    assert opened(probing, again)


def test_last_error_is_kept_when_a_failure_has_none() -> None:
    counted = after_failure(
        row(failures=1, last_error="HTTP 502"),
        target_key=KEY,
        adapter=None,
        error=None,
        now=T0,
        settings=SETTINGS,
    )
    assert counted.last_error == "HTTP 502" and counted.adapter == "browser.proxy_delivery"


def test_opened_needs_a_new_opening() -> None:
    assert not opened(None, None)
    assert not opened(row(failures=1), row(failures=2))
    assert opened(None, row(failures=3, paused_until=T0 + 1, opened_at=T0))


# -- deferring ---------------------------------------------------------------------------


def test_deferred_to_the_end_of_the_pause() -> None:
    open_row = row(failures=3, paused_until=T0 + 700, opened_at=T0 - 300)
    assert defer_until(open_row, T0, SETTINGS) == T0 + 700


def test_deferred_during_a_long_probe_window_by_one_pause_at_most() -> None:
    probing = row(failures=3, paused_until=T0 + SETTINGS.probe_ms)
    assert defer_until(probing, T0, SETTINGS) == T0 + SETTINGS.pause_ms


@pytest.mark.parametrize("paused_until", [None, T0, T0 - 5])
def test_deferred_without_a_pause_ahead_by_one_pause(paused_until: int | None) -> None:
    assert defer_until(row(paused_until=paused_until), T0, SETTINGS) == T0 + SETTINGS.pause_ms
    assert defer_until(None, T0, SETTINGS) == T0 + SETTINGS.pause_ms


def test_deferral_says_until_when_and_why() -> None:
    open_row = row(failures=3, paused_until=T0 + 700, last_error="HTTP 503: maintenance")
    verdict = deferral(open_row, T0, SETTINGS)
    assert verdict.action == "defer" and not verdict.deliver
    assert verdict.until == T0 + 700
    assert verdict.reason == f"breaker open until {iso_utc(T0 + 700)}"
    assert verdict.detail is not None
    assert "3 consecutive transient failures" in verdict.detail
    assert "HTTP 503: maintenance" in verdict.detail


# -- probes that say nothing -------------------------------------------------------------


def test_an_inconclusive_probe_hands_the_probe_back() -> None:
    probing = row(failures=3, paused_until=T0 + 60_000, opened_at=T0 - 1_000)
    back = after_inconclusive_probe(probing, now=T0 + 30, probe_until=T0 + 60_000)
    assert back is not None and back.paused_until == T0 + 30
    assert state_of(back, T0 + 30) is BreakerState.half_open


def test_an_inconclusive_probe_leaves_a_changed_row_alone() -> None:
    reopened = row(failures=4, paused_until=T0 + 1_000, opened_at=T0)
    assert after_inconclusive_probe(reopened, now=T0 + 30, probe_until=T0 + 60_000) == reopened
    assert after_inconclusive_probe(None, now=T0, probe_until=T0 + 60_000) is None


# -- a whole story -----------------------------------------------------------------------


def test_open_half_open_probe_fail_reopen() -> None:
    state: TargetPause | None = None
    for n in range(SETTINGS.failures):
        state = fail(state, T0 + n)
    assert state is not None and state_of(state, T0 + 2) is BreakerState.open
    ends = T0 + 2 + SETTINGS.pause_ms
    assert state_of(state, ends) is BreakerState.half_open
    # The probe is claimed: its window looks like a pause to everyone else.
    probing = dataclasses.replace(state, paused_until=ends + SETTINGS.probe_ms)
    assert state_of(probing, ends + 1) is BreakerState.open
    again = fail(probing, ends + 50, probe=True)
    assert state_of(again, ends + 50 + SETTINGS.pause_ms - 1) is BreakerState.open
    assert state_of(again, ends + 50 + SETTINGS.pause_ms) is BreakerState.half_open
