"""The recorder's batches: results that trickle in (one per finishing worker) are written
together, a few at a time, rather than each in a transaction of its own; stopping never
waits for company. A real store on both backends, a manual clock."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from renewald.daemon import recorder as recorder_module
from renewald.daemon.parts import DaemonParts
from renewald.daemon.recorder import RECORD_SMALL, Recorder
from renewald.logging import JobLog
from renewald.store import AttemptResult, Store
from tests.clock import ManualClock
from tests.store.factories import T0, attempt_result, make_job
from tests.waiting import wait_for

OWNER = "test-host:1:recorder"


def _results(store: Store, n: int) -> list[AttemptResult]:
    for _ in range(n):
        make_job(store)
    claimed = store.claim_due_jobs(owner=OWNER, now=T0, lease_ms=60_000, limit=n)
    assert len(claimed) == n
    return [attempt_result(c.job, now=T0) for c in claimed]


@pytest.fixture
def writes(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The jobs of each `record_batch` call."""
    seen: list[list[str]] = []
    real = store.record_batch

    def record_batch(batch: Sequence[AttemptResult], **kw: Any) -> Any:
        seen.append([r.job_id for r in batch])
        return real(batch, **kw)

    monkeypatch.setattr(store, "record_batch", record_batch)
    return seen


def _recorder(store: Store, job_log: JobLog, recorded: list[str]) -> Recorder:
    parts = DaemonParts(store, ManualClock(T0), job_log, OWNER)

    def on_recorded(batch: Sequence[AttemptResult], applied: Sequence[bool]) -> None:
        recorded.extend(r.job_id for r, ok in zip(batch, applied, strict=True) if ok)

    # A linger far longer than the test: only a full small batch or the end can cut it.
    return Recorder(parts, on_recorded=on_recorded, linger=60.0)


def _start(recorder: Recorder) -> threading.Thread:
    thread = threading.Thread(target=recorder.run, name="recorder", daemon=True)
    thread.start()
    return thread


def test_results_that_trickle_in_are_written_together(
    store: Store, job_log: JobLog, writes: list[list[str]]
) -> None:
    results = _results(store, RECORD_SMALL)
    recorded: list[str] = []
    recorder = _recorder(store, job_log, recorded)
    thread = _start(recorder)
    recorder.put([results[0]])
    wait_for(recorder._queue.empty, timeout=5, what="the first result to be taken")
    for result in results[1:]:
        recorder.put([result])
    wait_for(lambda: len(recorded) == RECORD_SMALL, timeout=10, what="the batch to be written")
    assert writes == [[r.job_id for r in results]]
    recorder.finish()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_stopping_writes_what_is_in_hand_without_waiting_for_company(
    store: Store, job_log: JobLog, writes: list[list[str]]
) -> None:
    [result] = _results(store, 1)
    recorded: list[str] = []
    recorder = _recorder(store, job_log, recorded)
    thread = _start(recorder)
    recorder.put([result])
    wait_for(recorder._queue.empty, timeout=5, what="the result to be taken")
    recorder.finish()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the recorder waited out its linger after finish()"
    assert writes == [[result.job_id]] and recorded == [result.job_id]


def test_a_claims_worth_of_results_is_written_at_once(
    store: Store, job_log: JobLog, writes: list[list[str]]
) -> None:
    results = _results(store, RECORD_SMALL + 1)
    recorded: list[str] = []
    recorder = _recorder(store, job_log, recorded)
    for result in results:
        recorder.put([result])
    thread = _start(recorder)
    wait_for(lambda: len(recorded) == len(results), timeout=10, what="the batch to be written")
    assert writes == [[r.job_id for r in results]]
    recorder.finish()
    thread.join(timeout=10)


def test_results_handed_over_together_are_never_split_across_batches(
    store: Store, job_log: JobLog, writes: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim sent at once hands over its results in one list: a batch takes whole lists,
    and stops growing once it holds `RECORD_BATCH` or more."""
    monkeypatch.setattr(recorder_module, "RECORD_BATCH", 4)
    monkeypatch.setattr(recorder_module, "RECORD_SMALL", 2)
    results = _results(store, 9)
    recorded: list[str] = []
    recorder = _recorder(store, job_log, recorded)
    for handed in (results[:3], results[3:6], results[6:]):
        recorder.put(handed)
    thread = _start(recorder)
    wait_for(lambda: len(recorded) == len(results), timeout=10, what="the batches to be written")
    assert writes == [[r.job_id for r in results[:6]], [r.job_id for r in results[6:]]]
    recorder.finish()
    thread.join(timeout=10)
