"""The Dispatcher in-process: a real store, the `log` adapter (and one that always asks
for a retry), and a manual clock, so every time it writes comes from the test."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from renewald.adapters import Adapter, AdapterRegistry, Delivery, Outcome
from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.dispatcher import Dispatcher, DispatchSettings
from renewald.daemon.parts import DaemonParts
from renewald.logging import JobLog
from renewald.store import AttemptResult, Store
from tests.clock import ManualClock
from tests.store.factories import T0, make_job
from tests.store.test_hostile_rows import attempts

OWNER = "test-host:1:dispatcher"
POLICY = RetryPolicy(base=30, factor=2, cap=3600, jitter=0)


class BusyAdapter:
    """A target that is always busy: every delivery asks to be retried."""

    kind = "busy"
    max_in_flight_per_target = 1

    def target_key(self, delivery: Delivery) -> str:
        return f"busy:{delivery.conversation.local_id}"

    def deliver(self, delivery: Delivery) -> Outcome:
        return Outcome.retry("target busy", error_class="Busy")

    def close(self) -> None:
        pass


def _busy(settings: Mapping[str, Any]) -> Adapter:
    return BusyAdapter()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def recorded() -> list[tuple[AttemptResult, bool]]:
    return []


@pytest.fixture
def dispatcher(
    store: Store, job_log: JobLog, clock: ManualClock, recorded: list[tuple[AttemptResult, bool]]
) -> Iterator[Dispatcher]:
    adapters = AdapterRegistry({})
    adapters.register("busy", _busy)
    d = Dispatcher(
        DaemonParts(store, clock, job_log, OWNER),
        adapters=adapters,
        settings=DispatchSettings(workers=2, batch=8),
        policy=POLICY,
    )
    d.add_observer(lambda result, applied: recorded.append((result, applied)))
    d.start()
    yield d
    d.wait_idle(10)
    d.close(now=clock.now)


def _run(dispatcher: Dispatcher, now: int) -> int:
    claimed = dispatcher.poll_once(now).claimed
    assert dispatcher.wait_idle(10)
    return claimed


def _log_lines(job_log: JobLog) -> list[dict[str, Any]]:
    job_log.flush()
    return [
        json.loads(line)
        for path in sorted(job_log.directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_claim_deliver_record(
    dispatcher: Dispatcher,
    store: Store,
    job_log: JobLog,
    clock: ManualClock,
    recorded: list[tuple[AttemptResult, bool]],
) -> None:
    job = make_job(store, target_kind="log")
    clock.now = T0 + 1_500
    assert _run(dispatcher, clock.now) == 1
    done = store.get_job(job.job_id)
    assert done is not None
    assert (done.status, done.terminal_reason, done.attempt_count) == ("done", "delivered", 1)
    [row] = attempts(store, job.job_id)
    assert (row["outcome"], row["started_at"], row["finished_at"]) == (
        "delivered",
        T0 + 1_500,
        T0 + 1_500,
    )
    [(result, applied)] = recorded
    assert applied and result.lease_owner == OWNER and result.adapter == "log"
    finished = [r for r in _log_lines(job_log) if r.get("event") == "attempt.finished"]
    assert [(r["job_id"], r["status"], r["outcome"]) for r in finished] == [
        (job.job_id, "done", "delivered")
    ]


def test_a_retry_is_due_after_the_backoff_from_the_injected_clock(
    dispatcher: Dispatcher, store: Store, clock: ManualClock
) -> None:
    job = make_job(store, target_kind="busy", max_attempts=3)
    clock.now = T0 + 7_000
    _run(dispatcher, clock.now)
    again = store.get_job(job.job_id)
    assert again is not None
    assert again.status == "pending"
    assert again.next_attempt_at == T0 + 7_000 + 30_000  # base 30s, no jitter
    [row] = attempts(store, job.job_id)
    assert (row["outcome"], row["decision"], row["error_class"]) == ("retry", "retry", "Busy")
    clock.now = T0 + 40_000
    _run(dispatcher, clock.now)
    twice = store.get_job(job.job_id)
    assert twice is not None and twice.next_attempt_at == T0 + 40_000 + 60_000  # 2^1 * 30s


def test_a_job_past_its_deadline_ends_expired_unsent(
    dispatcher: Dispatcher, store: Store, clock: ManualClock
) -> None:
    job = make_job(store, target_kind="log", deadline_at=T0 + 1_000)
    clock.now = T0 + 2_000
    _run(dispatcher, clock.now)
    ended = store.get_job(job.job_id)
    assert ended is not None
    assert (ended.status, ended.terminal_reason) == ("failed", "expired")
    [row] = attempts(store, job.job_id)
    assert (row["outcome"], row["error_class"]) == ("expired", "DeadlinePassed")
    assert row["decision_reason"] == "the deadline passed before the attempt"


def test_a_retry_that_would_pass_the_deadline_ends_the_job(
    dispatcher: Dispatcher, store: Store, clock: ManualClock
) -> None:
    job = make_job(store, target_kind="busy", deadline_at=T0 + 10_000)
    _run(dispatcher, clock.now)
    ended = store.get_job(job.job_id)
    assert ended is not None
    assert (ended.status, ended.terminal_reason) == ("failed", "expired")
    [row] = attempts(store, job.job_id)
    assert row["decision_reason"].startswith("next attempt would pass the deadline")
