"""A job an operator cancelled while it ran ends cancelled when the rescuer takes it back."""

from __future__ import annotations

import random
from pathlib import Path

from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.rescuer import Rescuer
from renewald.logging import JobLog
from renewald.store import Store
from tests.store.factories import T0, attempt_rows, make_job
from tests.store.test_ops import LEASE, OPERATOR, claim


def test_rescued_cancelled_job_ends_cancelled(store: Store, tmp_path: Path) -> None:
    make_job(store, job_id="j", max_attempts=3)
    claim(store)
    store.cancel_job("j", now=T0 + 1, action=OPERATOR)
    job_log = JobLog(tmp_path)
    rescuer = Rescuer(
        store=store,
        job_log=job_log,
        policy=RetryPolicy(),
        owner="rescuer",
        rand=random.Random(1),
    )
    try:
        assert rescuer.run_once(T0 + LEASE) == 1
    finally:
        job_log.close()
    job = store.get_job("j")
    assert job is not None and (job.status, job.terminal_reason) == ("failed", "cancelled")
    [row] = attempt_rows(store, "j")
    assert row["outcome"] == "abandoned" and row["decision"] == "failed"
