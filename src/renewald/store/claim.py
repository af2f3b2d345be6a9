"""Claiming due jobs: one UPDATE … RETURNING per batch.

Both pick at most one job per conversation in a batch and none for a conversation that
already has a running or held job ("one at a time per conversation", across all daemons).

SQLite serializes writers: the claim runs inside `BEGIN IMMEDIATE`, so the running-job
check sees every earlier claim, and the claim is that one statement.

PostgreSQL runs claims concurrently, and READ COMMITTED gives each statement a snapshot
taken when it starts: two daemons claiming at the same moment would each miss the
other's fresh claim and could both start a job of the same conversation. SKIP LOCKED only
keeps them off the same *row*. So the claim is two statements in one transaction:

1. `_pick_statement` chooses the candidates (`FOR UPDATE SKIP LOCKED`, one per
   conversation) and takes each candidate conversation's lock without waiting
   (`Backend.try_lock_transaction`, `CONVERSATION_LOCK`), keeping those it got: a
   conversation another claim is taking is skipped, never waited for.
2. `_claim_locked_statement` claims them, checking again that their conversations have
   no running or held job. Its snapshot is taken after the locks are held: a claim of
   those conversations that committed before is visible (a lock is released only after
   its commit is), and none can commit until this one ends.

Claims of different conversations never wait for each other; locks are scoped to the
transaction, so PgBouncer's transaction pooling keeps working. SKIP LOCKED still keeps a
claim from waiting on rows that a finishing or rescuing transaction holds.

The claimed rows come back as fetched (`claim_due_rows`); the caller decodes them
(`Job.from_row`) and attaches their targets (`load_targets`). Where writers are
serialized (`Backend.serial_writes`: this process's writers queue on one lock), the
claim's transaction is the claim statement alone, and both come after its commit, the
targets in a read transaction, so the lock is not held for them. Elsewhere the claim and
its targets are one transaction, without extra round trips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    RowMapping,
    Select,
    Text,
    bindparam,
    func,
    or_,
    select,
    union_all,
    update,
)

from renewald.store.backend import Backend
from renewald.store.decode import conversation_gate
from renewald.store.jobs import due_condition
from renewald.store.models import ClaimedJob, Job, Link
from renewald.store.schema import (
    conversation_links,
    local_conversations,
    renewal_jobs,
)

jobs = renewal_jobs
CONVERSATION_LOCK = 0x636F6E76  # "conv"
"""The class of the per-conversation claim locks, the first of two int keys (the second is
the conversation's hash): two-int keys never meet renewald's one-key locks (`MIGRATE_LOCK`)."""

# How many due rows one claim looks at to fill a batch with distinct conversations.
SCAN_FACTOR = 4


def _conversation_free() -> ColumnElement[bool]:
    """No job of the claimed row's conversation is running or held.

    The busy conversations are one uncorrelated set, built once per claim from two index
    lookups (PostgreSQL hashes it). Correlated `NOT EXISTS` checks were planned by
    PostgreSQL as anti-joins that walk every running row for each candidate (statistics
    rarely see running rows): 33 ms per claim of 32 at 1,280 running jobs, against 3 ms.
    """
    running, held = jobs.alias("running"), jobs.alias("held")
    busy = union_all(
        select(running.c.local_conversation_id).where(running.c.status == "running"),
        # A row renewald holds is in flight whatever status the tracker last wrote over it.
        select(held.c.local_conversation_id).where(held.c.lease_owner.is_not(None)),
    ).subquery("busy")
    busy_conversations = select(busy.c.local_conversation_id).where(
        busy.c.local_conversation_id.is_not(None)
    )
    conversation = jobs.c.local_conversation_id
    return or_(conversation.is_(None), conversation.not_in(busy_conversations))


def _candidates(  # type: ignore[no-untyped-def]
    dispatch_statuses: Sequence[str], *, skip_locked: bool, conversation: bool = False
):
    """The due jobs to claim, the first of each conversation, in claim order; with
    `conversation`, each job's conversation beside it."""
    now = bindparam("now", type_=BigInteger)
    scan = (
        select(
            jobs.c.job_id,
            jobs.c.local_conversation_id,
            jobs.c.next_attempt_at,
            jobs.c.created_at,
        )
        .where(
            due_condition(now, dispatch_statuses),
            # The lease is the only key: a stale upsert may write 'pending' over a row
            # that a live owner still holds.
            jobs.c.lease_owner.is_(None),
            _conversation_free(),
            # The ledger decides: a delivered job is never sent again, whatever a later
            # write put into the tracker's columns (the rescue tick puts it back to done).
            jobs.c.delivered_at.is_(None),
        )
        .order_by(jobs.c.next_attempt_at, jobs.c.created_at)
        .limit(bindparam("scan_limit", type_=Integer))
    )
    if skip_locked:
        scan = scan.with_for_update(skip_locked=True)
    scanned = scan.subquery("scan")
    ranked = select(
        scanned.c.job_id,
        scanned.c.local_conversation_id,
        scanned.c.next_attempt_at,
        scanned.c.created_at,
        func.row_number()
        .over(
            partition_by=scanned.c.local_conversation_id,
            order_by=(scanned.c.next_attempt_at, scanned.c.created_at),
        )
        .label("rn"),
    ).subquery("ranked")
    chosen = [ranked.c.job_id]
    if conversation:
        chosen.append(ranked.c.local_conversation_id)
    return (
        select(*chosen)
        .where(ranked.c.rn == 1)
        .order_by(ranked.c.next_attempt_at, ranked.c.created_at)
        .limit(bindparam("limit", type_=Integer))
    )


def _claim_values() -> dict[str, Any]:
    now = bindparam("now", type_=BigInteger)
    return {
        "status": "running",
        # A pending job carries no end: a stale mark (a cancel the tracker re-armed
        # with its upsert, which leaves this column alone) must not end the new attempt.
        "terminal_reason": None,
        "lease_owner": bindparam("owner", type_=Text),
        "lease_expires_at": bindparam("lease_until", type_=BigInteger),
        "lease_token": jobs.c.lease_token + 1,
        "attempt_count": jobs.c.attempt_count + 1,
        "started_at": now,
        "last_attempt_at": now,
        "updated_at": now,
    }


# The statements are built once per gate (and backend) and reused: only their parameters
# change per poll, so SQLAlchemy neither rebuilds nor recompiles them.


@lru_cache(maxsize=16)
def _claim_statement(dispatch_statuses: tuple[str, ...], *, skip_locked: bool):  # type: ignore[no-untyped-def]
    """The claim as one statement, where writers are serialized (SQLite)."""
    return (
        update(jobs)
        # No second `status = 'pending'` here: the candidates are already locked (row locks on
        # PostgreSQL, the write lock on SQLite), and the extra term would let SQLite walk the
        # status index over every pending job instead of looking up the chosen ids.
        .where(jobs.c.job_id.in_(_candidates(dispatch_statuses, skip_locked=skip_locked)))
        .values(**_claim_values())
        .returning(*jobs.c)
    )


@lru_cache(maxsize=16)
def _pick_statement(dispatch_statuses: tuple[str, ...], backend: Backend):  # type: ignore[no-untyped-def]
    """The candidates whose conversation lock this transaction got, or None where the
    backend has no such lock (its writers are serialized)."""
    candidates = _candidates(
        dispatch_statuses, skip_locked=backend.skip_locked, conversation=True
    ).subquery("candidate")
    conversation = candidates.c.local_conversation_id
    locked = backend.try_lock_transaction(CONVERSATION_LOCK, conversation)
    if locked is None:
        return None
    # Outside the subquery: its LIMIT keeps the lock (a volatile call) from being pushed
    # into it, so only the chosen candidates' conversations are locked. A job with no
    # conversation shares nothing, so it needs no lock.
    return select(candidates.c.job_id).where(or_(conversation.is_(None), locked))


@lru_cache(maxsize=4)
def _claim_locked_statement(backend: Backend):  # type: ignore[no-untyped-def]
    """The claim of the picked jobs (`ids`) whose conversations are still free."""
    return (
        update(jobs)
        .where(backend.one_of(jobs.c.job_id, "ids"), _conversation_free())
        .values(**_claim_values())
        .returning(*jobs.c)
    )


def claim_due_rows(
    conn: Connection,
    backend: Backend,
    dispatch_statuses: Sequence[str],
    *,
    owner: str,
    clock: Callable[[], int],
    lease_ms: int,
    limit: int,
) -> list[RowMapping]:
    """Claim up to `limit` due jobs: their `renewal_jobs` rows as claimed, undecoded (the
    values stay readable once the transaction has ended)."""
    gate = tuple(dispatch_statuses)
    # Read inside the transaction (SQLite's write lock is taken at BEGIN; PostgreSQL's
    # claim waits on no lock), so a claim that waited for a busy file or was retried still
    # hands out a full lease.
    now = clock()
    params: dict[str, Any] = {
        "now": now,
        "owner": owner,
        "lease_until": now + lease_ms,
        "limit": limit,
        "scan_limit": limit * SCAN_FACTOR,
    }
    pick = _pick_statement(gate, backend)
    if pick is None:
        statement = _claim_statement(gate, skip_locked=backend.skip_locked)
    else:
        params["ids"] = list(conn.execute(pick, params).scalars())
        if not params["ids"]:
            return []
        statement = _claim_locked_statement(backend)
    return list(conn.execute(statement, params).mappings())


def load_targets(conn: Connection, claimed: Sequence[Job], *, backend: Backend) -> list[ClaimedJob]:
    """Attach each claimed job's conversation platform and active link (latest observed)."""
    if not claimed:
        return []
    ids = sorted({j.local_conversation_id for j in claimed})
    conversations_of, links_of = _target_statements(backend)
    platforms = {
        row["local_conversation_id"]: conversation_gate(row)
        for row in conn.execute(conversations_of, {"ids": ids}).mappings()
    }
    links: dict[str, Link] = {}
    for row in conn.execute(links_of, {"ids": ids}).mappings():
        links.setdefault(row["local_conversation_id"], Link.from_row(row))
    ordered = sorted(claimed, key=lambda j: (j.next_attempt_at or 0, j.created_at, j.job_id))
    return [
        ClaimedJob(
            job=j,
            platform=platforms.get(j.local_conversation_id, (None, ()))[0],
            link=links.get(j.local_conversation_id),
            conversation_problems=platforms.get(j.local_conversation_id, (None, ()))[1],
        )
        for j in ordered
    ]


@lru_cache(maxsize=4)
def _target_statements(backend: Backend) -> tuple[Select[Any], Select[Any]]:
    """The conversations and their active links, of the conversations in the list `ids`
    (`Backend.one_of`: one statement text however many conversations a claim holds)."""
    conversations = select(local_conversations).where(
        backend.one_of(local_conversations.c.local_conversation_id, "ids")
    )
    links = (
        select(conversation_links)
        .where(
            backend.one_of(conversation_links.c.local_conversation_id, "ids"),
            conversation_links.c.is_active == 1,
        )
        .order_by(conversation_links.c.observed_at.desc(), conversation_links.c.link_id)
    )
    return conversations, links
