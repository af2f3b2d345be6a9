"""Breakers over the shared target rows: failures open a target, one probe across daemons,
on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event

from renewald.adapters import Outcome
from renewald.daemon.breaker import Breakers, TargetAttempt
from renewald.daemon.breaker_rules import DELIVER, BreakerSettings, Verdict
from renewald.logging import JobLog, read_lines
from renewald.store import Store
from tests.store.factories import T0
from tests.store.test_targets import KEY

SETTINGS = BreakerSettings(failures=2, pause_ms=1_000, probe_ms=60_000)
FAILED = Outcome.retry("HTTP 503: maintenance", error_class="HTTP503")
DELIVERED = Outcome.delivered("HTTP 200")


def breakers(store: Store, job_log: JobLog) -> Breakers:
    return Breakers(store=store, settings=SETTINGS, job_log=job_log, refresh_ms=0)


def record(b: Breakers, outcome: Outcome, now: int, verdict: Verdict = DELIVER) -> None:
    at = TargetAttempt(KEY, "browser.proxy_delivery", f"job-{now}", f"att-{now}")
    b.record(at, outcome, verdict, now)


def admit(b: Breakers, now: int) -> Verdict:
    return b.admit(TargetAttempt(KEY, "browser.proxy_delivery", f"job-{now}", "a"), now)


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


def open_then_probe(b: Breakers) -> Verdict:
    """Two failures at T0 open the breaker; at the end of the pause this delivery probes."""
    record(b, FAILED, T0)
    record(b, FAILED, T0)
    probe = admit(b, T0 + 1_000)
    assert probe.action == "probe"
    return probe


def test_a_failed_probe_opens_again(store: Store, job_log: JobLog) -> None:
    b = breakers(store, job_log)
    probe = open_then_probe(b)
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
    probe = open_then_probe(b)
    record(b, Outcome.permanent("HTTP 400: bad payload"), T0 + 1_010, probe)
    assert admit(b, T0 + 1_011).action == "probe"


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
