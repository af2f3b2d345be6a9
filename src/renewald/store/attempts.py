"""Recording attempts: the attempt row and the job's next state, fenced, together or not at all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import (
    BigInteger,
    Connection,
    Dialect,
    Integer,
    Table,
    Text,
    Update,
    bindparam,
    case,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.sql.dml import Delete, Insert

from renewald.store.backend import Backend
from renewald.store.leases import held_by
from renewald.store.models import AttemptResult, Recorded
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


_RESULT_COLUMNS = (
    column("job_id", Text),
    column("lease_token", Integer),
    column("owner", Text),
    column("status", Text),
    column("last_error", Text),
    column("next_attempt_at", BigInteger),
    column("log_path", Text),
    column("ends", Integer),
    column("finished_at", BigInteger),
    column("terminal_reason", Text),
    column("attempt_count", Integer),
    column("delivered_at", BigInteger),
)


_FINISH: dict[str, Update] = {}


def _finish_statement(backend: Backend) -> Update:
    statement = _FINISH.get(backend.name)
    if statement is None:
        statement = _FINISH[backend.name] = _build_finish(backend)
    return statement


def _build_finish(backend: Backend) -> Update:
    """The fenced write of a whole batch of results: one statement, one parameter (the
    batch as JSON, `Backend.rows_from_json`), built and compiled once for every size.
    RETURNING names the jobs whose fence matched."""
    r = backend.rows_from_json(bindparam("p_rows", type_=Text), _RESULT_COLUMNS).c
    ends = r.ends == 1
    return (
        update(jobs)
        .where(
            jobs.c.job_id == r.job_id,
            jobs.c.lease_token == r.lease_token,
            jobs.c.lease_owner == r.owner,
            or_(jobs.c.terminal_reason.is_(None), jobs.c.terminal_reason != CANCELLED),
        )
        .values(
            status=r.status,
            lease_owner=None,
            lease_expires_at=None,
            last_error=r.last_error,
            updated_at=bindparam("p_now", type_=BigInteger),
            next_attempt_at=case(
                (r.status == "pending", r.next_attempt_at), else_=jobs.c.next_attempt_at
            ),
            log_path=func.coalesce(r.log_path, jobs.c.log_path),
            finished_at=case((ends, r.finished_at), else_=jobs.c.finished_at),
            terminal_reason=case((ends, r.terminal_reason), else_=jobs.c.terminal_reason),
            delivered_at=func.coalesce(jobs.c.delivered_at, r.delivered_at),
            # The claim's number, not the row's: a tracker upsert may have rewritten it.
            attempt_count=r.attempt_count,
        )
        .returning(jobs.c.job_id, jobs.c.lease_token)
    )


def _finish_row(r: AttemptResult) -> dict[str, object]:
    return {
        "job_id": r.job_id,
        "lease_token": r.lease_token,
        "owner": r.lease_owner,
        "status": r.status,
        "last_error": r.error_message,
        "next_attempt_at": r.next_attempt_at,
        "log_path": r.log_path,
        "ends": 1 if r.status in ("done", "failed") else 0,
        "finished_at": r.finished_at,
        "terminal_reason": r.terminal_reason,
        "attempt_count": r.attempt_no - (1 if r.refund_attempt else 0),
        "delivered_at": r.finished_at if r.outcome == "delivered" else None,
    }


@dataclass(frozen=True)
class PreparedResults:
    """A batch of results made ready for `record_results` before its transaction opens:
    on SQLite this process's writers queue on one lock, which the transaction then holds
    for its statements alone."""

    results: Sequence[AttemptResult]
    ordered: list[AttemptResult]
    """In job_id order: one lock order for every duty that writes several rows."""
    finish_rows: str
    attempt_rows: dict[str, dict[str, object]]
    """Each result's attempt row, by attempt id, as if its job was not cancelled."""


def prepare_results(results: Sequence[AttemptResult]) -> PreparedResults:
    ordered = sorted(results, key=lambda r: r.job_id)
    return PreparedResults(
        results,
        ordered,
        json.dumps([_finish_row(r) for r in ordered], separators=(",", ":")),
        {r.attempt_id: _attempt_row(r, cancelled=False) for r in ordered},
    )


def record_results(
    conn: Connection,
    prepared: PreparedResults,
    *,
    backend: Backend,
    now: int,
    writer: str | None = None,
    logged: Sequence[str] = (),
) -> Recorded:
    """Apply each result if its lease still holds; says, per result, whether it did.

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
        _forget_unlogged(conn, backend, logged)
    # Keyed by lease as well: a batch may hold a stale result of a job beside its new one.
    statement = _finish_statement(backend)
    params = {"p_rows": prepared.finish_rows, "p_now": now}
    finished = {(j, t) for j, t in conn.execute(statement, params)}
    cancelled: set[str] = set()
    recorded: list[AttemptResult] = []
    for r in prepared.ordered:
        if (r.job_id, r.lease_token) in finished:
            recorded.append(r)
        elif _finish_cancelled(conn, r, now):
            cancelled.add(r.job_id)
            recorded.append(r)
        elif _already_recorded(conn, r.attempt_id):
            # A retry of a commit whose answer was lost (the connection dropped during
            # COMMIT): the attempt row is there, so the result was applied, once.
            finished.add((r.job_id, r.lease_token))
    rows = [
        _attempt_row(r, cancelled=True)
        if r.job_id in cancelled
        else prepared.attempt_rows[r.attempt_id]
        for r in recorded
    ]
    _write_recorded(conn, backend, recorded, rows, now=now, writer=writer)
    return Recorded(
        [(r.job_id, r.lease_token) in finished or r.job_id in cancelled for r in prepared.results],
        frozenset(cancelled),
    )


def _write_recorded(
    conn: Connection,
    backend: Backend,
    recorded: Sequence[AttemptResult],
    rows: Sequence[dict[str, object]],
    *,
    now: int,
    writer: str | None,
) -> None:
    """The attempt rows (`rows`) of the results whose fence held, their unlogged marks,
    and the conversations' cooldowns."""
    for r in recorded:
        if r.cooldown_until is not None and r.local_conversation_id is not None:
            conn.execute(
                update(local_conversations)
                .where(local_conversations.c.local_conversation_id == r.local_conversation_id)
                .values(cooldown_until=r.cooldown_until, updated_at=now)
            )
    if recorded:
        _insert_rows(conn, backend, renewal_job_attempts, rows)
        marks = [{"attempt_id": r.attempt_id, "owner": writer or r.lease_owner or "",
                  "created_at": now}
                 for r in recorded]  # fmt: skip
        _insert_rows(conn, backend, unlogged, marks)


def _insert_rows(
    conn: Connection, backend: Backend, table: Table, rows: Sequence[dict[str, object]]
) -> None:
    """Insert `rows` (all with the same keys): as one statement over a JSON array where
    the backend's driver would spend a round of Python per row (`bulk_rows_as_json`),
    else by the driver's executemany, straight: SQLAlchemy's per-row handling of the
    parameters would run while this process's other writers wait (SQLite)."""
    if not backend.bulk_rows_as_json:
        plain = _plain_insert(conn.dialect, table, tuple(rows[0]))
        if plain is None:
            conn.execute(insert(table), rows)
        else:
            text, keys = plain
            conn.exec_driver_sql(text, [tuple(row[k] for k in keys) for row in rows])
        return
    statement = _json_insert(backend, table, tuple(rows[0]))
    conn.execute(statement, {"p_rows": json.dumps(rows, separators=(",", ":"))})


@lru_cache(maxsize=8)
def _plain_insert(
    dialect: Dialect, table: Table, names: tuple[str, ...]
) -> tuple[str, tuple[str, ...]] | None:
    """The INSERT's text for the driver and its parameters' order; None where a column's
    type converts its values on the way in (the driver would get them unconverted)."""
    if any(table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names):
        return None
    compiled = insert(table).compile(dialect=dialect, column_keys=list(names))
    if compiled.positiontup is None:
        return None
    return str(compiled), tuple(compiled.positiontup)


@lru_cache(maxsize=8)
def _json_insert(backend: Backend, table: Table, names: tuple[str, ...]) -> Insert:
    columns = [column(name, table.c[name].type) for name in names]
    r = backend.rows_from_json(bindparam("p_rows", type_=Text), columns)
    return insert(table).from_select(list(names), select(*(r.c[name] for name in names)))


def _forget_unlogged(conn: Connection, backend: Backend, attempt_ids: Sequence[str]) -> None:
    conn.execute(_forget_statement(backend), {"ids": list(attempt_ids)})


@lru_cache(maxsize=4)
def _forget_statement(backend: Backend) -> Delete:
    return delete(unlogged).where(backend.one_of(unlogged.c.attempt_id, "ids"))


def _finish_cancelled(conn: Connection, r: AttemptResult, now: int) -> bool:
    """End a job that an operator cancelled while it ran, if it is still ours."""
    return (
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


def _attempt_row(r: AttemptResult, cancelled: bool) -> dict[str, object]:
    return {
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


def insert_untried(conn: Connection, result: AttemptResult) -> None:
    """The attempt row of an attempt that ended without a send: an operator's retry or
    cancel, a swept row that does not fit."""
    conn.execute(insert(renewal_job_attempts).values(**_attempt_row(result, cancelled=False)))


def mark_logged(conn: Connection, backend: Backend, attempt_ids: Sequence[str]) -> None:
    """The JSONL lines of these attempts are flushed: forget their marks."""
    if attempt_ids:
        _forget_unlogged(conn, backend, attempt_ids)


def ended_failed(
    reason: str, error: str, *, at: int, now: int, log_path: str | None
) -> dict[str, object]:
    """The values that end a held or pending job failed/`reason` at `at`, without a
    decision of its own (a cancel, a row that does not fit): its lease let go, `error` its
    last error, its log file kept unless `log_path` names one."""
    values: dict[str, object] = {"status": "failed", "terminal_reason": reason}
    values.update(last_error=error, finished_at=at, updated_at=now)
    values.update(lease_owner=None, lease_expires_at=None)
    if log_path is not None:
        values["log_path"] = log_path
    return values


def _cancelled_values(r: AttemptResult, now: int) -> dict[str, object]:
    error = r.error_message or CANCEL_REASON
    values = ended_failed(CANCELLED, error, at=r.finished_at, now=now, log_path=r.log_path)
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
