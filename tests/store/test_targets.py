"""The breaker's shared table (`renewal_target_pauses`), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event

from renewald.adapters import Outcome
from renewald.daemon.breaker import DELIVER, Breakers, BreakerSettings, Verdict
from renewald.logging import JobLog, read_lines
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


# -- the daemon's cache over this table (renewald.daemon.breaker.Breakers) ---------------

SETTINGS = BreakerSettings(failures=2, pause_ms=1_000, probe_ms=60_000)
FAILED = Outcome.retry("HTTP 503: maintenance", error_class="HTTP503")
DELIVERED = Outcome.delivered("HTTP 200")


@pytest.fixture
def job_log(tmp_path: Path) -> Iterator[JobLog]:
    log = JobLog(tmp_path / "logs")
    yield log
    log.close()


def breakers(store: Store, job_log: JobLog) -> Breakers:
    return Breakers(store=store, settings=SETTINGS, job_log=job_log, refresh_ms=0)


def record(b: Breakers, outcome: Outcome, now: int, verdict: Verdict = DELIVER) -> None:
    b.record(
        KEY,
        adapter="browser.proxy_delivery",
        outcome=outcome,
        verdict=verdict,
        now=now,
        job_id=f"job-{now}",
        attempt_id=f"att-{now}",
    )


def admit(b: Breakers, now: int) -> Verdict:
    return b.admit(
        KEY, adapter="browser.proxy_delivery", now=now, job_id=f"job-{now}", attempt_id="a"
    )


def events(job_log: JobLog) -> list[dict]:
    job_log.flush()
    return [
        dict(line)
        for path in sorted(job_log.directory.glob("*.jsonl"))
        for line in read_lines(path)
        if str(line["event"]).startswith("breaker.")
    ]


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement the store's engine runs (instrumentation, not a mock)."""
    seen: list[str] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", on_execute)
    yield seen
    event.remove(store.engine, "before_cursor_execute", on_execute)


def test_a_healthy_target_costs_no_query(store: Store, job_log: JobLog, statements) -> None:
    b = breakers(store, job_log)
    b.refresh(T0)
    statements.clear()
    for n in range(20):
        assert b.check(KEY, T0 + n) is DELIVER
        assert admit(b, T0 + n) is DELIVER
        record(b, DELIVERED, T0 + n)
    assert statements == []


def test_failures_open_the_breaker_and_defer(store: Store, job_log: JobLog) -> None:
    b = breakers(store, job_log)
    record(b, FAILED, T0)
    assert b.check(KEY, T0 + 1) is DELIVER, "one failure of two: still closed"
    record(b, FAILED, T0 + 10)
    row = store.get_target_pause(target_key=KEY)
    assert row is not None and (row.failures, row.paused_until) == (2, T0 + 10 + 1_000)
    verdict = b.check(KEY, T0 + 20)
    assert (verdict.action, verdict.until) == ("defer", T0 + 1_010)
    assert admit(b, T0 + 1_009).action == "defer"
    [opened_line] = events(job_log)
    assert opened_line["event"] == "breaker.opened"
    assert opened_line["target_key"] == KEY and opened_line["paused_until"] == T0 + 1_010
    assert opened_line["job_id"] == f"job-{T0 + 10}" and opened_line["failures"] == 2


def test_a_delivery_resets_the_count(store: Store, job_log: JobLog) -> None:
    b = breakers(store, job_log)
    record(b, FAILED, T0)
    record(b, DELIVERED, T0 + 1)
    assert store.list_target_pauses() == []
    record(b, FAILED, T0 + 2)
    assert b.check(KEY, T0 + 3) is DELIVER, "not two consecutive failures"
    assert events(job_log) == [], "closing a breaker that never opened says nothing"


def test_one_probe_across_daemons_then_closed(store: Store, job_log: JobLog) -> None:
    here, there = breakers(store, job_log), breakers(store, job_log)
    record(here, FAILED, T0)
    record(here, FAILED, T0)
    there.refresh(T0 + 1)
    assert there.check(KEY, T0 + 1).action == "defer", "the other daemon sees the pause"
    half_open = T0 + 1_000
    probe = admit(here, half_open)
    assert probe.action == "probe" and probe.probe_until == half_open + 60_000
    assert admit(here, half_open + 1).action == "defer", "one probe in this daemon"
    there_verdict = admit(there, half_open + 1)
    assert there_verdict.action == "defer", "and one across daemons"
    assert there_verdict.until == half_open + 1 + 1_000, "deferred by a pause, not the window"
    record(here, DELIVERED, half_open + 5, probe)
    assert store.list_target_pauses() == []
    there.refresh(half_open + 6)
    assert admit(there, half_open + 6) is DELIVER
    assert [e["event"] for e in events(job_log)] == [
        "breaker.opened",
        "breaker.probe",
        "breaker.closed",
    ]


def test_a_failed_probe_opens_again(store: Store, job_log: JobLog) -> None:
    b = breakers(store, job_log)
    record(b, FAILED, T0)
    record(b, FAILED, T0)
    probe = admit(b, T0 + 1_000)
    assert probe.action == "probe"
    record(b, FAILED, T0 + 1_050, probe)
    row = store.get_target_pause(target_key=KEY)
    assert row is not None and row.paused_until == T0 + 1_050 + 1_000
    assert admit(b, T0 + 2_049).action == "defer"
    assert admit(b, T0 + 2_050).action == "probe", "half-open again after the new pause"
    assert [e["event"] for e in events(job_log)] == [
        "breaker.opened",
        "breaker.probe",
        "breaker.opened",
        "breaker.probe",
    ]


def test_an_inconclusive_probe_lets_the_next_job_probe(store: Store, job_log: JobLog) -> None:
    b = breakers(store, job_log)
    record(b, FAILED, T0)
    record(b, FAILED, T0)
    probe = admit(b, T0 + 1_000)
    record(b, Outcome.permanent("HTTP 400: bad payload"), T0 + 1_010, probe)
    assert admit(b, T0 + 1_011).action == "probe"
