"""Recording attempts: the attempt row and the job's next state, fenced, together or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Text,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from renewald.store.leases import held_by
from renewald.store.models import AttemptResult
from renewald.store.schema import (
    local_conversations,
    renewal_job_attempts,
    renewal_jobs,
    renewald_unlogged_attempts,
)

jobs = renewal_jobs
unlogged = renewald_unlogged_attempts

# `renewald cancel` marks a running job with this terminal_reason while it stays running.
CANCELLED = "cancelled"
CANCEL_REASON = "cancelled by operator"


def _fenced(job_id: str, owner: str, lease_token: int):  # type: ignore[no-untyped-def]
    """Every write that ends, retries, extends or rescues a job matches the lease it holds
    (not `status`, which the tracker's upsert may have rewritten under a live lease)."""
    return (jobs.c.job_id == job_id, *held_by(owner, lease_token))


@lru_cache(maxsize=1)
def _finish_statement() -> Update:
    """The fenced write of one result, built once: per result only the parameters change,
    so the recorder neither rebuilds nor recompiles it (it runs once per attempt)."""
    status = bindparam("p_status", type_=Text)
    ends = bindparam("p_ends", type_=Integer) == 1
    return (
        update(jobs)
        .where(
            jobs.c.job_id == bindparam("p_job_id", type_=Text),
            jobs.c.lease_token == bindparam("p_lease_token", type_=Integer),
            jobs.c.lease_owner == bindparam("p_owner", type_=Text),
            or_(jobs.c.terminal_reason.is_(None), jobs.c.terminal_reason != CANCELLED),
        )
        .values(
            status=status,
            lease_owner=None,
            lease_expires_at=None,
            last_error=bindparam("p_last_error", type_=Text),
            updated_at=bindparam("p_now", type_=BigInteger),
            next_attempt_at=case(
                (status == "pending", bindparam("p_next_attempt_at", type_=BigInteger)),
                else_=jobs.c.next_attempt_at,
            ),
            log_path=func.coalesce(bindparam("p_log_path", type_=Text), jobs.c.log_path),
            finished_at=case(
                (ends, bindparam("p_finished_at", type_=BigInteger)), else_=jobs.c.finished_at
            ),
            terminal_reason=case(
                (ends, bindparam("p_terminal_reason", type_=Text)), else_=jobs.c.terminal_reason
            ),
            delivered_at=func.coalesce(
                jobs.c.delivered_at, bindparam("p_delivered_at", type_=BigInteger)
            ),
            # The claim's number, not the row's: a tracker upsert may have rewritten it.
            attempt_count=bindparam("p_attempt_count", type_=Integer),
        )
    )


def record_results(
    conn: Connection,
    results: Sequence[AttemptResult],
    *,
    now: int,
    writer: str | None = None,
    logged: Sequence[str] = (),
) -> list[bool]:
    """Apply each result if its lease still holds; returns, per result, whether it did.

    Each attempt row written is also marked unlogged for `writer` until its JSONL line is
    flushed: `logged` names the attempts whose lines the writer has flushed since, and
    their marks go in this same transaction (no write of its own).

    A result whose fence matches nothing writes nothing at all, not even its attempt row:
    the job was taken away (rescued, reset by the tracker) and its new holder's record is
    the one that counts.

    A job an operator cancelled while it ran (`terminal_reason = 'cancelled'`, still
    running) ends failed/cancelled whatever the attempt's outcome, never rescheduled: the
    attempt row keeps what the target said, its decision says the job was cancelled.
    """
    if logged:
        conn.execute(delete(unlogged).where(unlogged.c.attempt_id.in_(list(logged))))
    applied: dict[int, bool] = {}
    attempt_rows = []
    # In job_id order: one lock order for every duty that writes several rows.
    for i, r in sorted(enumerate(results), key=lambda p: p[1].job_id):
        matched = conn.execute(
            _finish_statement(),
            {
                "p_job_id": r.job_id,
                "p_lease_token": r.lease_token,
                "p_owner": r.lease_owner,
                "p_status": r.status,
                "p_last_error": r.error_message,
                "p_now": now,
                "p_next_attempt_at": r.next_attempt_at,
                "p_log_path": r.log_path,
                "p_ends": 1 if r.status in ("done", "failed") else 0,
                "p_finished_at": r.finished_at,
                "p_terminal_reason": r.terminal_reason,
                "p_attempt_count": r.attempt_no - (1 if r.refund_attempt else 0),
                "p_delivered_at": r.finished_at if r.outcome == "delivered" else None,
            },
        ).rowcount
        cancelled = False
        if matched != 1:
            cancelled = (
                conn.execute(
                    update(jobs)
                    .where(
                        *_fenced(r.job_id, r.lease_owner, r.lease_token),
                        jobs.c.terminal_reason == CANCELLED,
                    )
                    .values(**_cancelled_values(r, now))
                ).rowcount
                == 1
            )
            matched = 1 if cancelled else 0
        if matched != 1:
            # A retry of a commit whose answer was lost (the connection dropped during
            # COMMIT): the attempt row is there, so the result was applied, once.
            applied[i] = _already_recorded(conn, r.attempt_id)
            continue
        applied[i] = True
        if r.cooldown_until is not None and r.local_conversation_id is not None:
            conn.execute(
                update(local_conversations)
                .where(local_conversations.c.local_conversation_id == r.local_conversation_id)
                .values(cooldown_until=r.cooldown_until, updated_at=now)
            )
        attempt_rows.append(
            {
                "attempt_id": r.attempt_id,
                "job_id": r.job_id,
                "attempt_no": r.attempt_no,
                "lease_owner": r.lease_owner,
                "lease_token": r.lease_token,
                "adapter": r.adapter,
                "target": r.target,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "duration_ms": max(0, r.finished_at - r.started_at),
                "outcome": r.outcome,
                "error_class": r.error_class,
                "error_message": r.error_message,
                "response_summary": r.response_summary,
                "next_attempt_at": None if cancelled else r.next_attempt_at,
                "decision": "failed" if cancelled else r.decision,
                "decision_reason": _cancel_reason(r) if cancelled else r.decision_reason,
            }
        )
    if attempt_rows:
        conn.execute(insert(renewal_job_attempts), attempt_rows)
        conn.execute(
            insert(unlogged),
            [{"attempt_id": a["attempt_id"], "owner": writer or a["lease_owner"] or "",
              "created_at": now}
             for a in attempt_rows],
        )  # fmt: skip
    return [applied[i] for i in range(len(results))]


def mark_logged(conn: Connection, attempt_ids: Sequence[str]) -> None:
    """The JSONL lines of these attempts are flushed: forget their marks."""
    if attempt_ids:
        conn.execute(delete(unlogged).where(unlogged.c.attempt_id.in_(list(attempt_ids))))


def _cancelled_values(r: AttemptResult, now: int) -> dict[str, object]:
    values: dict[str, object] = {
        "status": "failed",
        "terminal_reason": CANCELLED,
        "finished_at": r.finished_at,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": r.error_message or CANCEL_REASON,
        "updated_at": now,
    }
    if r.log_path is not None:
        values["log_path"] = r.log_path
    values["attempt_count"] = r.attempt_no - (1 if r.refund_attempt else 0)
    if r.outcome == "delivered":
        values["delivered_at"] = func.coalesce(jobs.c.delivered_at, r.finished_at)
    return values


def _cancel_reason(r: AttemptResult) -> str:
    """The decision reason of a cancelled job's last attempt: what it was, and what the
    attempt alone would have decided."""
    instead = r.decision or r.status
    if r.decision_reason and r.decision_reason != instead:
        instead += f": {r.decision_reason}"
    return f"{CANCEL_REASON} (instead of {instead})"


def _already_recorded(conn: Connection, attempt_id: str) -> bool:
    return (
        conn.execute(
            select(renewal_job_attempts.c.attempt_id).where(
                renewal_job_attempts.c.attempt_id == attempt_id
            )
        ).first()
        is not None
    )
