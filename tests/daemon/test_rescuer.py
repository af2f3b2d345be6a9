"""Rescue against the owner's own finish, and the rescuer's boundaries, with explicit `now`.

The fence (job_id, lease_owner, lease_token) is what keeps a slow worker and a
rescuer from both writing a job's end: whichever commits first wins, the other matches
nothing and writes nothing — not even its attempt row.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from sqlalchemy import text

from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.rescuer import Rescuer
from renewald.logging import JobLog, read_lines
from renewald.store import ClaimedJob, Store
from renewald.store import attempts as attempt_sql
from tests.store.factories import T0, delivered, make_job

OWNER = "host-a:1:boot"
RESCUER = "host-b:2:boot"
LEASE = 60_000
HEARTBEAT = 1_000
POLICY = RetryPolicy(base=30.0, factor=2.0, cap=3600.0, jitter=0.0)


def rescuer_for(store: Store, job_log: JobLog, *, owner: str = RESCUER) -> Rescuer:
    return Rescuer(
        store=store,
        job_log=job_log,
        policy=POLICY,
        owner=owner,
        rand=random.Random(1),
    )


def claim_one(
    store: Store, *, now: int = T0, owner: str = OWNER, sent: bool = True, **job: object
) -> ClaimedJob:
    """Claim one job and, unless `sent` is False, begin its send (the attempt is spent)."""
    store.register_daemon(owner=owner, host="host-a", pid=1, version="t", now=now)
    make_job(store, now=now, **job)
    [claimed] = store.claim_due_jobs(owner=owner, now=now, lease_ms=LEASE, limit=1)
    if sent:
        assert store.begin_send(
            owner=owner,
            job_id=claimed.job.job_id,
            lease_token=claimed.lease_token,
            now=now,
            lease_ms=LEASE,
        )
    return claimed


def assert_one_end(store: Store, job_id: str, *, winner: str) -> None:
    """Exactly one attempt row, the winner's, and the job in the winner's state."""
    job = store.get_job(job_id)
    assert job is not None
    [attempt] = store.list_attempts(job_id)
    if winner == "owner":
        assert attempt.outcome == "delivered" and attempt.attempt_id.startswith("owner-")
        assert (job.status, job.terminal_reason) == ("done", "delivered")
    else:
        assert attempt.outcome == "abandoned" and attempt.error_class == "Abandoned"
        assert (job.status, job.terminal_reason, job.finished_at) == ("pending", None, None)
    assert job.lease_owner is None and job.lease_expires_at is None


# -- the race, both orders ---------------------------------------------------------------


def test_owner_finishes_first_rescue_matches_nothing(store: Store, job_log: JobLog) -> None:
    c = claim_one(store, job_id="j")
    expiry = T0 + LEASE
    rescuer = rescuer_for(store, job_log)
    # The rescuer has read the job as abandoned, then the owner's record lands first.
    found = store.find_abandoned(now=expiry)
    assert [j.job_id for j in found] == ["j"]
    rescue = rescuer.results_for(found, now=expiry)
    assert store.record_results([delivered(c, now=expiry, owner=OWNER)], now=expiry) == [True]
    assert store.record_results(rescue, now=expiry) == [False]
    assert_one_end(store, "j", winner="owner")
    # And the whole duty, run after the owner's write, finds nothing to take.
    assert rescuer.run_once(expiry + 1) == 0


def test_rescue_first_owner_record_matches_nothing(store: Store, job_log: JobLog) -> None:
    c = claim_one(store, job_id="j")
    expiry = T0 + LEASE
    rescuer = rescuer_for(store, job_log)
    assert rescuer.run_once(expiry) == 1
    assert store.record_results([delivered(c, now=expiry, owner=OWNER)], now=expiry) == [False]
    assert_one_end(store, "j", winner="rescuer")
    [line] = [x for x in read_lines(job_log.path_for(expiry)) if x["event"] == "job.rescued"]
    assert (line["job_id"], line["previous_owner"], line["owner"]) == ("j", OWNER, RESCUER)
    # The owner's lease is gone for its heartbeat too.
    assert store.extend_leases(
        owner=OWNER, held=[("j", c.lease_token)], now=expiry, lease_ms=LEASE
    ) == ["j"]


def test_rescue_never_overwrites_the_next_claim(store: Store, job_log: JobLog) -> None:
    """A rescue computed against an old lease cannot touch the job once it was claimed
    again (same status 'running', newer token)."""
    claim_one(store, job_id="j")
    expiry = T0 + LEASE
    rescuer = rescuer_for(store, job_log)
    stale_view = rescuer.results_for(store.find_abandoned(now=expiry), now=expiry)
    assert rescuer.run_once(expiry) == 1
    job = store.get_job("j")
    assert job is not None and job.next_attempt_at is not None
    [again] = store.claim_due_jobs(owner=OWNER, now=job.next_attempt_at, lease_ms=LEASE, limit=1)
    assert again.lease_token == stale_view[0].lease_token + 1
    assert store.record_results(stale_view, now=expiry) == [False]
    job = store.get_job("j")
    assert job is not None and (job.status, job.lease_token) == ("running", again.lease_token)
    assert len(store.list_attempts("j")) == 1


def _wait_until_blocked(store: Store, application_name: str) -> None:
    """Until the session named `application_name` waits on a row lock (PostgreSQL)."""
    deadline = time.monotonic() + 10
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = :app AND wait_event_type = 'Lock'"
    )
    while not store.read(lambda c: c.execute(query, {"app": application_name}).scalar()):
        assert time.monotonic() < deadline, "the second write never waited on the first"


@pytest.mark.parametrize("first", ["owner", "rescuer"])
def test_concurrent_writes_one_wins(
    store: Store, db_url: str, backend: str, job_log: JobLog, first: str
) -> None:
    """The second write starts while the first one's transaction still holds the row: it
    waits (PostgreSQL: row lock; SQLite: the write lock), then matches nothing."""
    c = claim_one(store, job_id="j")
    expiry = T0 + LEASE
    rescuer = rescuer_for(store, job_log)
    rescue = rescuer.results_for(store.find_abandoned(now=expiry), now=expiry)
    owner = [delivered(c, now=expiry, owner=OWNER)]
    first_batch, second_batch = (owner, rescue) if first == "owner" else (rescue, owner)

    app = f"renewald-race-{uuid.uuid4().hex[:8]}"
    second_store = Store.open(db_url + (f"&application_name={app}" if backend != "sqlite" else ""))
    outcome: list[list[bool]] = []
    try:
        with store.connection() as conn:
            prepared = attempt_sql.prepare_results(first_batch)
            assert attempt_sql.record_results(
                conn, prepared, backend=store.backend, now=expiry
            ).applied == [True]
            racer = threading.Thread(
                target=lambda: outcome.append(second_store.record_results(second_batch, now=expiry))
            )
            racer.start()
            if backend != "sqlite":
                _wait_until_blocked(store, app)
        racer.join(timeout=30)
        assert not racer.is_alive()
    finally:
        second_store.close()
    assert outcome == [[False]]
    assert_one_end(store, "j", winner=first)


# -- the rescuer's boundaries ------------------------------------------------------------


def test_lease_expiry_boundary(store: Store, job_log: JobLog) -> None:
    claim_one(store, job_id="j")
    rescuer = rescuer_for(store, job_log)
    expiry = T0 + LEASE
    assert rescuer.run_once(expiry - 1) == 0
    job = store.get_job("j")
    assert job is not None and job.status == "running"
    assert rescuer.run_once(expiry) == 1
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.attempt_count, job.lease_owner) == ("pending", 1, None)
    # Backoff from the moment of rescue: attempt 1 -> base.
    assert job.next_attempt_at == expiry + 30_000
    assert "expired" in (job.last_error or "")
    [a] = store.list_attempts("j")
    assert (a.outcome, a.finished_at, a.attempt_no, a.lease_owner) == (
        "abandoned",
        expiry,
        1,
        OWNER,
    )
    assert a.decision == "retry" and a.next_attempt_at == expiry + 30_000


def test_stale_heartbeat_does_not_shorten_the_lease(store: Store, job_log: JobLog) -> None:
    """Only the lease decides: an owner that stopped heartbeating (partitioned, stopping
    past its grace, its registry row deleted) keeps its jobs until their leases run out."""
    claim_one(store, job_id="j")
    rescuer = rescuer_for(store, job_log)
    assert rescuer.run_once(T0 + 10 * HEARTBEAT) == 0
    store.unregister_daemon(owner=OWNER)
    assert rescuer.run_once(T0 + LEASE - 1) == 0
    job = store.get_job("j")
    assert job is not None and (job.status, job.lease_owner) == ("running", OWNER)
    assert rescuer.run_once(T0 + LEASE) == 1


def test_rescuer_never_takes_what_its_own_dispatcher_holds(store: Store, job_log: JobLog) -> None:
    """After an outage longer than the lease, a daemon's own jobs look expired, but their
    results may still wait in its recorder: its own rescuer leaves them to it. A row of its
    own that its dispatcher does not hold (a claim whose commit answer was lost) is taken."""
    claim_one(store, job_id="j", owner=OWNER)
    claim_one(store, job_id="orphan", owner=OWNER)
    mine = Rescuer(
        store=store, job_log=job_log, policy=POLICY, owner=OWNER, rand=random.Random(1),
        held_here=lambda: {"j"},
    )  # fmt: skip
    assert mine.run_once(T0 + 2 * LEASE) == 1
    orphan = store.get_job("orphan")
    assert orphan is not None and orphan.lease_owner is None
    job = store.get_job("j")
    assert job is not None and job.lease_owner == OWNER
    assert rescuer_for(store, job_log).run_once(T0 + 2 * LEASE) == 1


def test_unsent_claim_is_put_back_unspent(store: Store, job_log: JobLog) -> None:
    """A claim whose send never began costs nothing when its owner dies: pending again,
    due as it was, the attempt handed back, and no attempt row."""
    claim_one(store, job_id="j", sent=False, max_attempts=1)
    assert rescuer_for(store, job_log).run_once(T0 + LEASE) == 1
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.attempt_count, job.lease_owner) == ("pending", 0, None)
    assert job.next_attempt_at == T0
    assert store.list_attempts("j") == []
    [line] = [x for x in read_lines(job_log.path_for(T0 + LEASE)) if x["event"] == "job.released"]
    assert (line["job_id"], line["previous_owner"]) == ("j", OWNER)


def test_running_row_without_a_lease_is_put_back(store: Store, job_log: JobLog) -> None:
    """The tracker upserting status='running' over a row nobody holds: not a claim, no
    attempt spent, pending again (and never 'owner None' abandoned)."""
    make_job(store, job_id="j")
    store.write(lambda c: c.execute(text("UPDATE renewal_jobs SET status='running'")))
    assert rescuer_for(store, job_log).run_once(T0 + 1) == 1
    job = store.get_job("j")
    assert job is not None and (job.status, job.attempt_count) == ("pending", 0)
    assert store.list_attempts("j") == []


def test_attempts_used_up_fail_abandoned(store: Store, job_log: JobLog) -> None:
    claim_one(store, job_id="j", max_attempts=1)
    expiry = T0 + LEASE
    assert rescuer_for(store, job_log).run_once(expiry) == 1
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.terminal_reason, job.finished_at) == ("failed", "abandoned", expiry)
    assert job.lease_owner is None
    [a] = store.list_attempts("j")
    assert (a.outcome, a.decision) == ("abandoned", "failed")
    assert "exhausted (1/1)" in (a.decision_reason or "")


def test_rescue_past_deadline_fails_expired(store: Store, job_log: JobLog) -> None:
    claim_one(store, job_id="j", deadline_at=T0 + LEASE + 1_000)
    assert rescuer_for(store, job_log).run_once(T0 + LEASE) == 1
    job = store.get_job("j")
    assert job is not None and (job.status, job.terminal_reason) == ("failed", "expired")


def test_one_pass_rescues_many_and_leaves_the_live(store: Store, job_log: JobLog) -> None:
    for n in range(5):
        claim_one(store, job_id=f"dead-{n}", owner="dead:1:x")
    claim_one(store, job_id="live", owner=OWNER, now=T0 + 1)
    rescuer = rescuer_for(store, job_log)
    assert rescuer.run_once(T0 + LEASE) == 5
    assert rescuer.run_once(T0 + LEASE) == 0
    live = store.get_job("live")
    assert live is not None and live.status == "running"


def test_leases_that_expired_during_an_outage_get_time_to_renew(
    store: Store, job_log: JobLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every owner lost its heartbeat in an outage: after a gap between its successful
    passes, the rescuer waits `settle_ms` before it takes leases that expired in the gap."""
    claim_one(store, job_id="j")
    rescuer = Rescuer(
        store=store, job_log=job_log, policy=POLICY, owner=RESCUER, settle_ms=5_000,
        gap_ms=10_000, rand=random.Random(1),
    )  # fmt: skip
    assert rescuer.run_once(T0 + 1_000) == 0

    def unreachable(**_: object) -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(store, "find_abandoned", unreachable)
    with pytest.raises(ConnectionError):
        rescuer.run_once(T0 + 1_200)
    monkeypatch.undo()
    back = T0 + LEASE + 30_000
    assert rescuer.run_once(back) == 0, "expired during the gap: not yet"
    assert rescuer.run_once(back + 4_999) == 0
    job = store.get_job("j")
    assert job is not None and job.status == "running"
    assert rescuer.run_once(back + 5_000) == 1


def test_a_lease_that_expired_before_the_gap_is_taken_at_once(
    store: Store, job_log: JobLog
) -> None:
    claim_one(store, job_id="j")
    rescuer = Rescuer(
        store=store, job_log=job_log, policy=POLICY, owner=RESCUER, settle_ms=5_000,
        gap_ms=1_000, rand=random.Random(1),
    )  # fmt: skip
    rescuer._last_ok = T0 + LEASE + 1  # a pass after expiry that found nothing (a race)
    assert rescuer.run_once(T0 + LEASE + 60_000) == 1
