"""Row factories for store tests: `make_job(store, **overrides)`."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from renewald.store import AttemptResult, ClaimedJob, Decision, Job, NewJob, Store
from renewald.store.models import Schedule
from renewald.store.schema import conversation_links, local_conversations, renewal_job_attempts

T0 = 1_800_000_000_000  # a fixed "now" in epoch ms (2027-01-15)
_seq = itertools.count(1)


def locked(conn: Connection) -> None:
    """A transaction body that fails the way a SQLite file held by another writer does."""
    raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))


def checked_out(store: Store) -> int:
    """Connections the store's pool has handed out and not taken back."""
    pool = store.engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


def job_of(store: Store, job_id: str) -> Job:
    """The job that must exist: a missing row fails the test here, not as an AttributeError."""
    job = store.get_job(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


def conversation_row(store: Store, conversation_id: str) -> RowMapping:
    """The conversation's row as the tracker would read it."""
    query = select(local_conversations).where(
        local_conversations.c.local_conversation_id == conversation_id
    )
    return store.read(lambda c: c.execute(query).mappings().one())


def attempt_rows(store: Store, job_id: str) -> list[dict[str, Any]]:
    """The job's attempt rows, oldest first."""
    query = (
        select(renewal_job_attempts)
        .where(renewal_job_attempts.c.job_id == job_id)
        .order_by(renewal_job_attempts.c.started_at, renewal_job_attempts.c.attempt_no)
    )
    return [dict(r) for r in store.read(lambda c: c.execute(query).mappings().all())]


def make_conversation(
    store: Store, conversation_id: str | None = None, *, status: str = "auto", **values: Any
) -> str:
    cid = conversation_id or f"conv-{next(_seq)}"
    row = {
        "local_conversation_id": cid,
        "platform": "claude",
        "automation_status": status,
        "created_at": T0,
        "updated_at": T0,
        **values,
    }
    store.write(lambda conn: conn.execute(insert(local_conversations).values(**row)))
    return cid


def set_conversation(store: Store, conversation_id: str, **values: Any) -> None:
    store.write(
        lambda conn: conn.execute(
            update(local_conversations)
            .where(local_conversations.c.local_conversation_id == conversation_id)
            .values(**values)
        )
    )


def make_link(store: Store, conversation_id: str, **values: Any) -> str:
    link_id = values.pop("link_id", f"link-{next(_seq)}")
    row = {
        "link_id": link_id,
        "local_conversation_id": conversation_id,
        "platform": "claude",
        "remote_conversation_id": f"remote-{link_id}",
        "target_kind": "log",
        "is_active": 1,
        "observed_at": T0,
        "created_at": T0,
        "updated_at": T0,
        **values,
    }
    store.write(lambda conn: conn.execute(insert(conversation_links).values(**row)))
    return link_id


def make_job(store: Store, *, now: int = T0, **overrides: Any) -> Job:
    n = next(_seq)
    fields: dict[str, Any] = {
        "job_id": f"job-{n}",
        "local_conversation_id": overrides.pop("conversation", None) or f"conv-j{n}",
        "message_id": f"msg-{n}",
        "payload": f"keepalive {n}",
        "next_attempt_at": now,
    }
    fields.update(overrides)
    return store.enqueue(job=NewJob(**fields), now=now)


def job_value(**overrides: Any) -> Job:
    """A job as the store would hand it out, without a database (running, claimed once)."""
    values: dict[str, Any] = {
        "job_id": "j", "local_conversation_id": "c", "message_id": "m", "status": "running",
        "payload": "p", "payload_kind": "text", "target_snapshot": None, "attempt_count": 1,
        "max_attempts": 3, "next_attempt_at": T0, "last_attempt_at": T0, "last_error": None,
        "log_path": None, "started_at": T0, "finished_at": None, "created_at": T0,
        "updated_at": T0, "lease_token": 1,
    }  # fmt: skip
    return Job(**{**values, **overrides})


_DECIDED = {"status", "next_attempt_at", "terminal_reason", "decision", "decision_reason"}


def attempt_result(
    job: Job, *, status: str = "done", now: int = T0, **fields: Any
) -> AttemptResult:
    """A result for `job`: delivered when `status` is done, else a retry; `fields` override
    any `AttemptResult` field or the decision's (`status`, `decision_reason`, ...), and
    `lease_token` the job's token (a stale or a future claim)."""
    if "lease_token" in fields:
        job = dataclasses.replace(job, lease_token=fields.pop("lease_token"))
    done = status == "done"
    decided: dict[str, Any] = {
        "status": status, "next_attempt_at": None,
        "terminal_reason": "delivered" if done else None,
        "decision": "done" if done else "retry",
        "decision_reason": "delivered" if done else "retry",
    }  # fmt: skip
    decided.update({k: fields.pop(k) for k in _DECIDED & fields.keys()})
    decided["reason"] = decided.pop("decision_reason")
    values: dict[str, Any] = {
        "attempt_id": f"att-{job.job_id}-{job.lease_token}", "lease_owner": job.lease_owner or "o",
        "outcome": "delivered" if done else "retry", "started_at": now, "finished_at": now + 5,
        "adapter": "log",
    }  # fmt: skip
    return AttemptResult(job, Decision(**decided), **{**values, **fields})


def delivered(claimed: ClaimedJob, *, now: int, owner: str) -> AttemptResult:
    """What the owner's recorder writes when the delivery of `claimed` went through."""
    job = claimed.job
    return attempt_result(
        job,
        attempt_id=f"owner-{job.job_id}-{claimed.lease_token}",
        lease_owner=owner,
        started_at=job.started_at or now,
        finished_at=now,
    )


def schedule_row(**overrides: Any) -> Schedule:
    """A schedule (not stored): every hour, due at T0, added an hour before."""
    values: dict[str, Any] = {
        "schedule_id": "s1",
        "local_conversation_id": "c1",
        "trigger_kind": "every",
        "every_ms": 3_600_000,
        "cron": None,
        "timezone": "UTC",
        "payload": "keepalive",
        "payload_kind": "text",
        "target_kind": "log",
        "target_snapshot": None,
        "max_attempts": 3,
        "jitter_ms": 0,
        "misfire": "coalesce",
        "misfire_grace_ms": None,
        "allow_overlap": False,
        "enabled": True,
        "next_fire_at": T0,
        "last_fire_at": None,
        "last_job_id": None,
        "created_at": T0 - 3_600_000,
        "updated_at": T0 - 3_600_000,
    }
    return Schedule(**(values | overrides))
