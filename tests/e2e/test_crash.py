"""kill -9 at random points during deliveries, restart, repeat: nothing is lost or doubled.

The real `renewald run` delivers to a real HTTP target on 127.0.0.1 that records every
request the moment it arrives and answers after a small random delay, so most kills land
between a send and its record. Each restart has a new owner id; the short lease and
rescue interval let the next process rescue what the dead one held. At the end:

- every job is `done` or `failed`, none `running` (or still pending);
- every attempt the target saw is an attempt row, and every attempt row is finished;
- per job, attempt rows are numbered 1..attempt_count with no gap and no repeat, and
  exactly one of them ended the job (the job's terminal write);
- a job the target saw more than once carried the same `Idempotency-Key` every time.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest

from renewald.store import Store
from renewald.store.schema import renewal_job_attempts, renewal_jobs
from tests.e2e.conftest import HookTarget, Renewald, add_webhook_jobs, table
from tests.waiting import wait_for

# One daemon at a time; a dead one's jobs come back after the lease (and its heartbeat
# going stale, three heartbeats = the lease).
CRASH_CONFIG: dict[str, Any] = {
    "workers": 4,
    "batch": 8,
    "poll_interval": "100ms",
    "lease": "1s",
    "rescue_interval": "200ms",
    "shutdown_grace": "3s",
}
CRASH_ENV = {
    "RENEWALD_RETRY_BASE": "100ms",
    "RENEWALD_RETRY_CAP": "500ms",
    "RENEWALD_RETRY_JITTER": "0.0",
    # Every job shares one target: a few 503s in a row must not pause it for minutes.
    "RENEWALD_BREAKER_FAILURES": "1000",
}


def _outcome_by_job(job_id: str, attempt: int) -> int:
    """The target's answer: a few jobs are refused for good, a few fail once first."""
    n = int(job_id.rsplit("-", 1)[1])
    if n % 23 == 0:
        return 400  # permanent
    if n % 7 == 0 and attempt == 1:
        return 503  # retry
    return 200


def crash_run(
    renewald: Renewald, store: Store, target: HookTarget, *, jobs: int, kills: int, seed: int
) -> None:
    rng = random.Random(seed)
    print(f"crash run: seed={seed} jobs={jobs} kills={kills}")
    delays = random.Random(seed + 1)
    target.delay = lambda job_id, attempt: delays.uniform(0.01, 0.12)
    target.status = _outcome_by_job
    job_ids = [f"job-{n:04d}" for n in range(jobs)]
    add_webhook_jobs(store, target.url, job_ids, max_attempts=25)
    renewald.write_config(**CRASH_CONFIG)
    renewald.extra_env.update(CRASH_ENV)

    where = Counter[str]()
    for n in range(kills):
        before = target.count()
        proc = renewald.start()
        point = rng.random()
        if point < 0.15:
            # Anywhere in the first half second: start-up, registration, the first claim.
            where["early"] += 1
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            # Mid-delivery: the target holds a request this process sent and has not
            # recorded yet, after a few deliveries went through.
            where["mid-delivery"] += 1
            k = rng.randint(0, 4)

            def in_flight(before: int = before, k: int = k) -> bool:
                return target.count() > before + k and bool(target.busy())

            wait_for(
                in_flight,
                timeout=30,
                what=f"kill {n}: a delivery in flight",
            )
            time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    print(f"kill points: {dict(where)}; target saw {target.count()} requests")

    proc = renewald.start()

    def settled() -> bool:
        rows = table(store, renewal_jobs)
        return all(r["status"] in ("done", "failed") for r in rows)

    wait_for(settled, timeout=90, what="every job done or failed")
    code, err = renewald.stop(proc)
    assert code == 0, err[-3000:]
    check_invariants(store, target, jobs=jobs)
    # The JSONL lines follow their commits; a kill between the two loses a line, never
    # adds one: at most one line per job says it ended.
    ends = Counter(
        x["job_id"]
        for x in renewald.log_lines()
        if x["event"] in ("attempt.finished", "job.rescued") and x["status"] in ("done", "failed")
    )
    assert not [j for j, n in ends.items() if n > 1], ends.most_common(3)


def check_invariants(store: Store, target: HookTarget, *, jobs: int) -> None:
    rows = {r["job_id"]: r for r in table(store, renewal_jobs)}
    attempts = table(store, renewal_job_attempts)
    seen = target.by_job()
    assert len(rows) == jobs

    statuses = Counter(r["status"] for r in rows.values())
    assert set(statuses) <= {"done", "failed"}, statuses
    by_job: dict[str, list[dict]] = {}
    for a in attempts:
        assert a["finished_at"] is not None and a["outcome"], a
        by_job.setdefault(a["job_id"], []).append(a)

    doubles = 0
    for job_id, job in rows.items():
        mine = sorted(by_job.get(job_id, []), key=lambda a: a["attempt_no"])
        # Every claim ended in exactly one attempt row: recorded by its owner or rescued.
        assert [a["attempt_no"] for a in mine] == list(range(1, job["attempt_count"] + 1)), (
            job_id,
            [(a["attempt_no"], a["outcome"]) for a in mine],
        )
        terminal = [a for a in mine if a["decision"] in ("done", "failed")]
        assert len(terminal) == 1, (job_id, [(a["attempt_no"], a["decision"]) for a in mine])
        assert terminal[0] is mine[-1], job_id
        assert job["finished_at"] == terminal[0]["finished_at"], job_id
        assert job["lease_owner"] is None and job["lease_expires_at"] is None, job_id
        if job["status"] == "done":
            assert job["terminal_reason"] == "delivered"
            assert terminal[0]["outcome"] == "delivered"
        else:
            assert job["terminal_reason"] in ("permanent", "exhausted", "abandoned"), job
        # What the target saw: the same key every time, and only attempts the database
        # knows about. A delivered attempt reached the target.
        requests = seen.get(job_id, [])
        assert {r.idempotency_key for r in requests} <= {job_id}, (job_id, requests)
        numbers = {a["attempt_no"] for a in mine}
        assert {r.attempt for r in requests} <= numbers, (job_id, requests, numbers)
        for a in mine:
            if a["outcome"] == "delivered":
                assert any(r.attempt == a["attempt_no"] for r in requests), (job_id, a)
        if len(requests) > 1:
            doubles += 1
    print(
        f"statuses {dict(statuses)}; attempts {len(attempts)} "
        f"({dict(Counter(a['outcome'] for a in attempts))}); jobs seen more than once {doubles}"
    )
    assert doubles > 0, "no kill landed mid-delivery: the run proved nothing"


def _seed() -> int:
    return int(os.environ.get("RENEWALD_CRASH_SEED") or random.SystemRandom().randrange(10**6))


def test_kill9_during_deliveries(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    crash_run(renewald, e2e_store, hook_target, jobs=150, kills=20, seed=_seed())


@pytest.mark.slow
def test_kill9_during_deliveries_long(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    crash_run(renewald, e2e_store, hook_target, jobs=800, kills=100, seed=_seed())
