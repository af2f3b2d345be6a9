"""The send gate's group commit: a lone mark is written on its worker's own thread; marks
that arrive while one is written are written together next, by one of their workers. A
real store on both backends, a manual clock."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from renewald.daemon.parts import DaemonParts
from renewald.daemon.sendgate import SendGate
from renewald.logging import JobLog
from renewald.store import Store
from tests.clock import ManualClock
from tests.store.factories import T0, make_job
from tests.waiting import wait_for

OWNER = "test-host:1:gate"
LEASE_MS = 60_000


def _claim(store: Store, n: int) -> list[tuple[str, int]]:
    for _ in range(n):
        make_job(store)
    claimed = store.claim_due_jobs(owner=OWNER, now=lambda: T0, lease_ms=LEASE_MS, limit=n)
    assert len(claimed) == n
    return [(c.job.job_id, c.lease_token) for c in claimed]


def _writes(store: Store, monkeypatch: pytest.MonkeyPatch, before: Any = None) -> list[Any]:
    """Each `begin_sends` call: its thread and its jobs (`before` runs first)."""
    writes: list[tuple[str, list[str]]] = []
    real = store.begin_sends

    def begin_sends(**kw: Any) -> Sequence[bool]:
        writes.append((threading.current_thread().name, sorted(j for j, _ in kw["held"])))
        if before is not None:
            before()
        return real(**kw)

    monkeypatch.setattr(store, "begin_sends", begin_sends)
    return writes


@pytest.fixture
def gate(store: Store, job_log: JobLog) -> SendGate:
    parts = DaemonParts(store, ManualClock(T0), job_log, OWNER)
    return SendGate(parts, lease_ms=LEASE_MS, stopping=threading.Event())


def test_a_lone_mark_is_written_on_its_workers_own_thread(
    gate: SendGate, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    [(job_id, token)] = _claim(store, 1)
    writes = _writes(store, monkeypatch)
    assert gate.begin(job_id, token) is True
    assert writes == [(threading.current_thread().name, [job_id])]
    assert _attempts(store, job_id) == 1


def test_marks_that_arrive_during_a_write_are_written_together_next(
    gate: SendGate, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, *rest = _claim(store, 6)
    writing, go = threading.Event(), threading.Event()

    def hold_the_first_write() -> None:
        if not writing.is_set():
            writing.set()
            assert go.wait(10)

    writes = _writes(store, monkeypatch, before=hold_the_first_write)
    answers: dict[str, bool | None] = {}

    def worker(job_id: str, token: int) -> None:
        answers[job_id] = gate.begin(job_id, token)

    lead = threading.Thread(target=worker, args=first, name="worker-lead")
    lead.start()
    assert writing.wait(10)
    followers = [
        threading.Thread(target=worker, args=held, name=f"worker-{n}")
        for n, held in enumerate(rest)
    ]
    for thread in followers:
        thread.start()
    wait_for(lambda: len(gate._waiting) == len(rest), timeout=10, what="the marks to wait")
    go.set()
    for thread in [lead, *followers]:
        thread.join(10)
    assert answers == {job_id: True for job_id, _ in [first, *rest]}
    assert len(writes) == 2, writes
    assert writes[0] == ("worker-lead", [first[0]])
    thread_name, jobs = writes[1]
    assert jobs == sorted(j for j, _ in rest)
    assert thread_name.startswith("worker-") and thread_name != "worker-lead"
    for job_id, _ in [first, *rest]:
        assert _attempts(store, job_id) == 1


def test_a_mark_for_a_job_no_longer_held_says_so_and_the_gate_stays_open(
    gate: SendGate, store: Store
) -> None:
    (job_id, token), (other_id, other_token) = _claim(store, 2)
    assert gate.begin(job_id, token + 1) is False
    assert gate.begin(other_id, other_token) is True


def _attempts(store: Store, job_id: str) -> int:
    job = store.get_job(job_id)
    assert job is not None
    return job.attempt_count
