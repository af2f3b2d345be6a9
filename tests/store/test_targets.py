"""The breaker's shared table (`renewal_target_pauses`), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from renewald.store import Store
from renewald.store.models import TargetPause
from tests.store.factories import T0

KEY = "browser:firefox-claude"


def bump(row: TargetPause | None, *, now: int = T0, error: str = "HTTP 503") -> TargetPause:
    """One more failure, nothing else: the store applies whatever the change says."""
    failures = (row.failures if row else 0) + 1
    return TargetPause(KEY, "browser.proxy_delivery", failures, None, None, error, now)


def pause(store: Store, *, until: int, failures: int = 3) -> TargetPause:
    def change(row: TargetPause | None) -> TargetPause:
        return TargetPause(KEY, "browser.proxy_delivery", failures, until, T0, "HTTP 503", T0)

    _, after = store.change_target_pause(
        target_key=KEY, adapter="browser.proxy_delivery", now=T0, change=change
    )
    assert after is not None
    return after


def test_no_rows_until_a_target_is_in_trouble(store: Store) -> None:
    assert store.list_target_pauses() == []
    assert store.get_target_pause(target_key=KEY) is None
    assert store.clear_target_pause(target_key=KEY) is None


def test_change_inserts_updates_and_deletes(store: Store) -> None:
    seen: list[TargetPause | None] = []

    def first(row: TargetPause | None) -> TargetPause:
        seen.append(row)
        return bump(row)

    before, after = store.change_target_pause(
        target_key=KEY, adapter="browser.proxy_delivery", now=T0, change=first
    )
    assert seen == [None] and before is None
    assert after == TargetPause(KEY, "browser.proxy_delivery", 1, None, None, "HTTP 503", T0)
    assert store.get_target_pause(target_key=KEY) == after

    before, after = store.change_target_pause(
        target_key=KEY,
        adapter="browser.proxy_delivery",
        now=T0 + 7,
        change=lambda row: bump(row, error="timeout"),
    )
    assert before is not None and before.failures == 1
    assert after is not None and (after.failures, after.last_error) == (2, "timeout")
    assert after.updated_at == T0 + 7, "updated_at is the `now` passed, whatever the change said"
    assert store.list_target_pauses() == [after]

    before, after = store.change_target_pause(
        target_key=KEY, adapter="browser.proxy_delivery", now=T0 + 8, change=lambda row: None
    )
    assert before is not None and before.failures == 2 and after is None
    assert store.list_target_pauses() == []


def test_a_change_that_deletes_a_missing_row_leaves_nothing(store: Store) -> None:
    before, after = store.change_target_pause(
        target_key=KEY, adapter=None, now=T0, change=lambda row: None
    )
    assert (before, after) == (None, None)
    assert store.list_target_pauses() == []


def test_a_change_for_another_key_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="returned a row for"):
        store.change_target_pause(
            target_key="webhook:http://x:80",
            adapter=None,
            now=T0,
            change=lambda row: bump(row),
        )
    assert store.list_target_pauses() == []


def test_concurrent_failures_are_all_counted(store: Store) -> None:
    """Daemons count failures of one target at once: the row lock loses none."""
    threads, each = 6, 10
    start = threading.Barrier(threads)

    def count() -> None:
        start.wait()
        for _ in range(each):
            store.change_target_pause(
                target_key=KEY, adapter="browser.proxy_delivery", now=T0, change=bump
            )

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(count) for _ in range(threads)]:
            future.result()
    row = store.get_target_pause(target_key=KEY)
    assert row is not None and row.failures == threads * each


def test_probe_is_claimed_once_the_pause_is_over(store: Store) -> None:
    until = T0 + 1_000
    pause(store, until=until)
    # Open: one millisecond before the end nobody may probe.
    assert not store.claim_target_probe(
        target_key=KEY, paused_until=until, now=until - 1, probe_until=until + 60_000
    )
    # Half-open at the very millisecond it ends: the first claim wins ...
    assert store.claim_target_probe(
        target_key=KEY, paused_until=until, now=until, probe_until=until + 60_000
    )
    row = store.get_target_pause(target_key=KEY)
    assert row is not None and row.paused_until == until + 60_000 and row.updated_at == until
    # ... and a second daemon that saw the same row finds it changed.
    assert not store.claim_target_probe(
        target_key=KEY, paused_until=until, now=until + 1, probe_until=until + 60_001
    )


def test_probe_claim_needs_the_row_as_seen(store: Store) -> None:
    assert not store.claim_target_probe(
        target_key=KEY, paused_until=T0, now=T0 + 1, probe_until=T0 + 10
    ), "no row, no probe"
    pause(store, until=T0)
    assert not store.claim_target_probe(
        target_key=KEY, paused_until=T0 - 5, now=T0 + 1, probe_until=T0 + 10
    ), "a stale view of paused_until matches nothing"


def test_concurrent_probe_claims_let_exactly_one_through(store: Store) -> None:
    until = T0 + 1_000
    pause(store, until=until)
    threads = 8
    start = threading.Barrier(threads)

    def claim(n: int) -> bool:
        start.wait()
        return store.claim_target_probe(
            target_key=KEY, paused_until=until, now=until + n, probe_until=until + 60_000 + n
        )

    with ThreadPoolExecutor(threads) as pool:
        won = list(pool.map(claim, range(threads)))
    assert won.count(True) == 1


def test_clear_returns_what_was_there(store: Store) -> None:
    row = pause(store, until=T0 + 500)
    assert store.clear_target_pause(target_key=KEY) == row
    assert store.get_target_pause(target_key=KEY) is None
    assert store.clear_target_pause(target_key=KEY) is None


def test_rows_are_per_target(store: Store) -> None:
    other = "webhook:https://hooks.example:443"
    store.change_target_pause(target_key=KEY, adapter="a", now=T0, change=bump)
    store.change_target_pause(
        target_key=other,
        adapter="http.webhook",
        now=T0,
        change=lambda row: dataclasses.replace(bump(None), target_key=other),
    )
    assert [r.target_key for r in store.list_target_pauses()] == sorted([KEY, other])
    store.clear_target_pause(target_key=KEY)
    assert [r.target_key for r in store.list_target_pauses()] == [other]
