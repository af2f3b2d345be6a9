"""The rescuer and the lease protocol: a rewound delivered job is reconciled, never sent again."""

from __future__ import annotations

import random

from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.rescuer import Rescuer
from renewald.logging import JobLog, read_lines
from renewald.store import Store
from tests.store.factories import T0, delivered, make_job
from tests.store.test_lease_protocol import (
    LEASE,
    OTHER,
    OWNER,
    claim,
    send,
    tracker_upsert,
)


def rescuer(store: Store, job_log: JobLog) -> Rescuer:
    return Rescuer(
        store=store, job_log=job_log, policy=RetryPolicy(), owner=OTHER, rand=random.Random(1)
    )


def test_rewound_delivered_job_is_reconciled_not_resent(store: Store, job_log: JobLog) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    assert send(store, c)
    assert store.record_results([delivered(c, now=T0 + 1, owner=OWNER)], now=T0 + 1) == [True]
    for stale in ("pending", "running"):
        tracker_upsert(store, "j", status=stale, finished_at=None, attempt_count=0)
        assert claim(store, now=T0 + 2, owner=OTHER) == []
        assert rescuer(store, job_log).run_once(T0 + 3) == 1
        job = store.get_job("j")
        assert job is not None
        assert (job.status, job.terminal_reason, job.finished_at) == ("done", "delivered", T0 + 1)
        assert [a.outcome for a in store.list_attempts("j")] == ["delivered"]
    lines = [x for x in read_lines(job_log.path_for(T0 + 3)) if x["event"] == "job.reconciled"]
    assert [x["job_id"] for x in lines] == ["j", "j"]


def test_a_fresh_claim_is_not_taken_for_a_rewound_one(store: Store, job_log: JobLog) -> None:
    """A held job rewound to 'running' by the tracker is still held: rescue waits."""
    make_job(store, job_id="j")
    [c] = claim(store)
    assert send(store, c)
    tracker_upsert(store, "j", status="running")
    assert rescuer(store, job_log).run_once(T0 + LEASE - 1) == 0
    assert store.record_results([delivered(c, now=T0 + 5, owner=OWNER)], now=T0 + 5) == [True]
