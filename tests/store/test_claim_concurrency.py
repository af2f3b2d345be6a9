"""Concurrent claims: one running job per conversation, and on PostgreSQL no claim waits
on another's conversations (store/claim.py: the per-conversation try-locks).

Each claimer is its own `Store` (its own pool and connections), as separate daemons are.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from renewald.store import ClaimedJob, Store, migrate
from renewald.store.claim import claim_due_rows
from tests.store.factories import T0, job_of, make_job
from tests.store.test_lease_protocol import LEASE, delivered

CONVERSATIONS = 30
PER_CONVERSATION = 6
CLAIMERS = 6
BOUND_S = 60.0
ADVISORY_HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
)


@pytest.fixture
def pg_store(pg_schema_url: str) -> Iterator[Store]:
    s = Store.open(pg_schema_url, create=True)
    migrate(s.engine)
    yield s
    s.close()


class InFlight:
    """The conversations claimers hold, as the claimers saw them: a conversation is marked
    once its claim committed and unmarked before its finish begins, so the marks fall
    inside the time the database had it running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}
        self.doubles: list[str] = []
        self.claims: Counter[str] = Counter()

    def take(self, c: ClaimedJob) -> None:
        conversation = c.job.local_conversation_id
        with self._lock:
            self.claims[c.job.job_id] += 1
            if conversation in self._held:
                self.doubles.append(
                    f"{conversation}: {c.job.job_id} claimed while {self._held[conversation]} ran"
                )
            self._held[conversation] = c.job.job_id

    def give(self, c: ClaimedJob) -> None:
        with self._lock:
            if self._held.get(c.job.local_conversation_id) == c.job.job_id:
                del self._held[c.job.local_conversation_id]

    def finished(self) -> int:
        with self._lock:
            return sum(self.claims.values())


def _claimer(url: str, owner: str, seen: InFlight, total: int) -> int:
    """Claim and finish in a tight loop until every job was claimed; how many it claimed."""
    store = Store.open(url)
    mine = 0
    deadline = time.monotonic() + BOUND_S
    try:
        while seen.finished() < total and not seen.doubles:
            assert time.monotonic() < deadline, f"{owner}: jobs still unclaimed after {BOUND_S}s"
            claimed = store.claim_due_jobs(owner=owner, now=T0, lease_ms=LEASE, limit=3)
            for c in claimed:
                seen.take(c)
            for c in claimed:
                assert store.begin_send(
                    owner=owner, job_id=c.job.job_id, lease_token=c.lease_token, now=T0,
                    lease_ms=LEASE,
                )  # fmt: skip
                seen.give(c)
                result = delivered(c, now=T0, owner=owner)
                assert store.record_results([result], now=T0, writer=owner) == [True]
            mine += len(claimed)
        return mine
    finally:
        store.close()


def test_concurrent_claims_keep_one_running_job_per_conversation(store: Store, db_url: str) -> None:
    """Both backends: SQLite's claims are serialized by its write lock, PostgreSQL's only
    per conversation."""
    # Job n of every conversation falls due before job n+1 of any: each claim's scan spans
    # many conversations, and every finish makes its conversation's next job claimable.
    ids = [
        make_job(
            store,
            job_id=f"j-{c:02d}-{n}",
            conversation=f"c{c:02d}",
            next_attempt_at=T0 - 10_000 + n * 100 + c,
        ).job_id
        for c in range(CONVERSATIONS)
        for n in range(PER_CONVERSATION)
    ]
    seen = InFlight()
    with ThreadPoolExecutor(CLAIMERS) as pool:
        futures = [
            pool.submit(_claimer, db_url, f"host-{i}:{i}:boot", seen, len(ids))
            for i in range(CLAIMERS)
        ]
        per_claimer = [f.result() for f in futures]
    assert seen.doubles == [], "two running jobs of one conversation"
    assert sorted(seen.claims) == sorted(ids) and set(seen.claims.values()) == {1}
    assert sum(per_claimer) == len(ids)
    assert sum(1 for n in per_claimer if n) > 1, f"one claimer took everything: {per_claimer}"
    for job_id in ids:
        job = job_of(store, job_id)
        assert (job.status, job.attempt_count, job.lease_owner) == ("done", 1, None)


def _claim_in(conn_store: Store, owner: str, limit: int) -> list[str]:
    return [
        c.job.job_id
        for c in conn_store.claim_due_jobs(owner=owner, now=T0, lease_ms=LEASE, limit=limit)
    ]


def test_an_open_claim_neither_blocks_nor_shares_its_conversations(
    pg_store: Store, pg_schema_url: str
) -> None:
    """A claims conversation c and stays uncommitted. B's scan still sees c's later jobs (A
    row-locked only the first few), and B's snapshot cannot see A's claim: B must skip c on
    its lock, not wait for A, and claim the other conversations at once."""
    for n in range(8):
        make_job(pg_store, job_id=f"c-{n}", conversation="c", next_attempt_at=T0 - 100 + n)
    for d in range(3):
        make_job(pg_store, job_id=f"d{d}", conversation=f"d{d}", next_attempt_at=T0 - 50 + d)
    other = Store.open(pg_schema_url)
    try:
        with pg_store.connection() as conn, ThreadPoolExecutor(1) as pool:
            held = claim_due_rows(
                conn, backend=pg_store.backend, owner="host-a:1:boot", clock=lambda: T0,
                lease_ms=LEASE, limit=1, dispatch_statuses=pg_store.due.statuses,
            )  # fmt: skip
            assert [r["job_id"] for r in held] == ["c-0"]
            second = pool.submit(_claim_in, other, "host-b:2:boot", 10)
            try:
                got = second.result(timeout=10)
            finally:
                conn.commit()  # lets a claim that waited (the old global lock) go on
        assert sorted(got) == ["d0", "d1", "d2"], "c is A's until A commits"
        assert _claim_in(other, "host-b:2:boot", 10) == [], "c runs c-0"
        assert job_of(pg_store, "c-0").lease_owner == "host-a:1:boot"
    finally:
        other.close()


def test_claim_locks_end_with_its_transaction(pg_store: Store) -> None:
    """Nothing outlives the claim's transaction (PgBouncer hands the server connection on)."""
    make_job(pg_store, job_id="j", conversation="c")
    with pg_store.engine.connect() as conn:
        with conn.begin():
            [job] = claim_due_rows(
                conn, backend=pg_store.backend, owner="host-a:1:boot", clock=lambda: T0,
                lease_ms=LEASE, limit=5, dispatch_statuses=pg_store.due.statuses,
            )  # fmt: skip
            assert conn.execute(ADVISORY_HELD).scalar() == 1, "c's lock, while claiming"
        assert conn.execute(ADVISORY_HELD).scalar() == 0
    assert job["job_id"] == "j"
