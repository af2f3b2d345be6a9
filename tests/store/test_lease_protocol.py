"""The lease is the only key and the ledger decides, against the tracker's own writes.

The tracker upserts all 17 of its columns (`INSERT … ON CONFLICT(job_id) DO UPDATE`)
with whatever it last saw, so `status` can be rewound under renewald at any moment. It
never writes the lease columns, so those (and the attempt ledger) decide.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import Connection, select, text

from renewald.store import ClaimedJob, Store
from renewald.store.schema import TRACKER_JOB_COLUMNS, renewal_jobs
from tests.store.factories import T0, delivered, make_job

OWNER = "host-a:1:boot"
OTHER = "host-b:2:boot"
LEASE = 10_000

UPSERT = text(
    f"INSERT INTO renewal_jobs ({', '.join(TRACKER_JOB_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in TRACKER_JOB_COLUMNS)}) "
    "ON CONFLICT(job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TRACKER_JOB_COLUMNS if c != "job_id")
)


def tracker_upsert(store: Store, job_id: str, **changes: object) -> None:
    """The tracker writing back the row as it last saw it, with `changes` applied."""
    job = store.get_job(job_id)
    assert job is not None
    row = {c: getattr(job, c) for c in TRACKER_JOB_COLUMNS} | changes
    store.write(lambda conn: conn.execute(UPSERT, row))


def claim(store: Store, *, now: int = T0, owner: str = OWNER) -> list[ClaimedJob]:
    return store.claim_due_jobs(owner=owner, now=now, lease_ms=LEASE, limit=10)


def send(store: Store, c: ClaimedJob, *, now: int = T0, owner: str = OWNER) -> bool:
    return store.begin_send(
        owner=owner, job_id=c.job.job_id, lease_token=c.lease_token, now=now, lease_ms=LEASE
    )


def test_pending_written_over_a_held_job_is_not_claimable(store: Store) -> None:
    make_job(store, job_id="j", conversation="c")
    make_job(store, job_id="k", conversation="c", next_attempt_at=T0 + 1)
    [c] = claim(store)
    tracker_upsert(store, "j", status="pending", attempt_count=0)
    assert claim(store, now=T0 + 2, owner=OTHER) == [], "held: neither it nor its conversation"
    assert send(store, c)
    assert store.record_results([delivered(c, now=T0 + 3, owner=OWNER)], now=T0 + 3) == [True]
    job = store.get_job("j")
    assert job is not None and (job.status, job.lease_owner) == ("done", None)
    [k] = claim(store, now=T0 + 4, owner=OTHER)
    assert k.job.job_id == "k"


def test_claim_reads_now_after_its_lock(store: Store) -> None:
    """A claim delayed behind a lock or retries takes its lease from when it wrote."""
    make_job(store, job_id="j")
    reads: list[int] = []

    def late_now() -> int:
        reads.append(T0 + 5_000)
        return reads[-1]

    [c] = store.claim_due_jobs(owner=OWNER, now=late_now, lease_ms=LEASE, limit=1)
    job = store.get_job("j")
    assert reads and job is not None and job.lease_expires_at == T0 + 5_000 + LEASE
    assert c.job.job_id == "j"


def test_unlogged_marks_follow_the_recorder(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    assert send(store, c)
    result = delivered(c, now=T0 + 1, owner=OWNER)
    store.register_daemon(owner=OWNER, host="host-a", pid=1, version="t", now=T0)
    assert store.record_results([result], now=T0 + 1, writer=OWNER) == [True]
    assert store.find_unlogged(stale_before=T0) == [], "its writer is alive"
    [u] = store.find_unlogged(stale_before=T0 + 1)
    assert (u.attempt.attempt_id, u.writer, u.attempt.outcome) == (result.attempt_id, OWNER,
                                                                    "delivered")  # fmt: skip
    store.mark_logged([result.attempt_id])
    assert store.find_unlogged(stale_before=T0 + 1) == []


def test_unlogged_mark_is_dropped_with_the_next_write(store: Store) -> None:
    make_job(store, job_id="j")
    make_job(store, job_id="k")
    first, second = claim(store)
    for c in (first, second):
        assert send(store, c)
    a = delivered(first, now=T0 + 1, owner=OWNER)
    store.record_results([a], now=T0 + 1, writer=OWNER)
    store.record_batch(
        [delivered(second, now=T0 + 2, owner=OWNER)],
        now=T0 + 2,
        writer=OWNER,
        logged=[a.attempt_id],
    )
    assert [u.attempt.job_id for u in store.find_unlogged(stale_before=T0 + 3)] == [
        second.job.job_id
    ]


def test_heartbeat_fence_ignores_status(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    tracker_upsert(store, "j", status="pending")
    held = [("j", c.lease_token)]
    assert store.extend_leases(owner=OWNER, held=held, now=T0 + 1, lease_ms=LEASE) == []
    assert store.release_jobs(owner=OWNER, held=held, now=T0 + 2) == [True]
    job = store.get_job("j")
    assert job is not None and (job.status, job.lease_owner) == ("pending", None)


def test_begin_sends_marks_only_what_is_still_held(store: Store) -> None:
    for n in range(3):
        make_job(store, job_id=f"j{n}", conversation=f"c{n}")
    a, b, c = claim(store)
    held = [(c.job.job_id, c.lease_token), (a.job.job_id, a.lease_token),
            (b.job.job_id, b.lease_token + 1)]  # fmt: skip
    assert store.begin_sends(owner=OWNER, held=held, now=T0 + 5, lease_ms=LEASE) == [
        True,
        True,
        False,
    ]
    assert store.begin_sends(owner=OTHER, held=held[:2], now=T0 + 5, lease_ms=LEASE) == [
        False,
        False,
    ]
    rows = {j.job_id: j for j in (store.get_job(f"j{n}") for n in range(3)) if j}
    assert rows["j0"].send_token == a.lease_token and rows["j0"].lease_expires_at == T0 + 5 + LEASE
    assert rows["j1"].send_token is None


def test_a_send_begun_mark_written_twice_counts_once(store: Store) -> None:
    """The mark is one statement, sent without BEGIN and COMMIT where statements are
    their own transactions: a retry after a lost answer must change nothing more."""
    make_job(store, job_id="j")
    [c] = claim(store)
    held = [("j", c.lease_token)]
    for _ in range(2):
        assert store.begin_sends(owner=OWNER, held=held, now=T0 + 5, lease_ms=LEASE) == [True]
    job = store.get_job("j")
    assert job is not None and (job.send_token, job.attempt_count) == (c.lease_token, 1)


def test_a_one_statement_write_goes_without_a_transaction_only_where_the_backend_says(
    store: Store,
) -> None:
    def in_transaction(conn: Connection) -> bool:
        conn.execute(text("SELECT 1"))
        return _driver_in_transaction(conn)

    assert store.write(in_transaction) is True
    assert store.write_statement(in_transaction) is not store.backend.bare_statements


def _driver_in_transaction(conn: Connection) -> bool:
    driver = conn.connection.dbapi_connection
    if isinstance(driver, sqlite3.Connection):
        return driver.in_transaction
    return driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE  # type: ignore[union-attr]


def test_a_list_of_ids_is_one_parameter_whatever_its_length(store: Store) -> None:
    """`Backend.one_of`: the claim's, the targets' and the unlogged statements keep one
    text whatever the batch, so PostgreSQL's driver prepares each once."""
    for n in range(3):
        make_job(store, job_id=f"j{n}", conversation=f"c{n}")
    query = select(renewal_jobs.c.job_id).where(store.backend.one_of(renewal_jobs.c.job_id, "ids"))
    for ids in (["j0"], ["j2", "j1", "nope"], []):

        def found(conn: Connection, ids: list[str] = ids) -> set[str]:
            return set(conn.execute(query, {"ids": ids}).scalars())

        assert store.read(found) == set(ids) - {"nope"}


def test_a_retried_record_whose_commit_went_through_counts_as_applied(store: Store) -> None:
    """The connection dropped during COMMIT: the row was written, the recorder saw an error
    and writes the batch again. The second write matches no lease but finds its attempt row:
    applied, once, so its log line is written and not dropped as lease.lost."""
    make_job(store, job_id="j")
    [c] = claim(store)
    assert send(store, c)
    result = delivered(c, now=T0 + 1, owner=OWNER)
    assert store.record_results([result], now=T0 + 1, writer=OWNER) == [True]
    assert store.record_results([result], now=T0 + 2, writer=OWNER) == [True]
    assert len(store.list_attempts("j")) == 1
