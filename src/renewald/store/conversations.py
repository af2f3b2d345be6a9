"""Conversations as operators see them: pause and resume (as the tracker does), list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, func, select, update

from renewald.store.decode import conversation_values
from renewald.store.schema import (
    local_conversations,
    renewal_jobs,
)

jobs = renewal_jobs
convs = local_conversations


@dataclass(frozen=True)
class Conversation:
    local_conversation_id: str
    platform: str
    automation_status: str
    cooldown_until: int | None
    paused_at: int | None
    updated_at: int


@dataclass(frozen=True)
class ConversationSummary:
    conversation: Conversation
    pending: int
    running: int

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self.conversation, f.name) for f in fields(Conversation)}
        data.update(pending=self.pending, running=self.running)
        return data


def conversation_from_row(row: Any) -> Conversation:
    values, _problems = conversation_values(row)
    return Conversation(**values)


def get_conversation(conn: Connection, conversation_id: str) -> Conversation | None:
    row = (
        conn.execute(select(convs).where(convs.c.local_conversation_id == conversation_id))
        .mappings()
        .first()
    )
    return conversation_from_row(row) if row else None


def set_automation_status(
    conn: Connection, *, conversation_id: str, status: str, now: int
) -> tuple[Conversation, Conversation] | None:
    """Pause ('paused': `paused_at` = now) or resume ('auto': `paused_at` cleared) a
    conversation, as the tracker does. Returns (before, after); None for no such row.
    Pausing a paused conversation keeps its `paused_at`."""
    before = get_conversation(conn, conversation_id)
    if before is None:
        return None
    if before.automation_status == status:
        return before, before
    paused_at = now if status == "paused" else None
    conn.execute(
        update(convs)
        .where(convs.c.local_conversation_id == conversation_id)
        .values(automation_status=status, paused_at=paused_at, updated_at=now)
    )
    after = get_conversation(conn, conversation_id)
    assert after is not None
    return before, after


def list_conversations(
    conn: Connection,
    *,
    statuses: Sequence[str] = (),
    conversation: str | None = None,
    limit: int = 100,
) -> list[ConversationSummary]:
    """Conversations with their pending and running job counts, most recently updated first."""
    query = select(convs)
    if statuses:
        query = query.where(convs.c.automation_status.in_(list(statuses)))
    if conversation is not None:
        query = query.where(convs.c.local_conversation_id == conversation)
    query = query.order_by(convs.c.updated_at.desc(), convs.c.local_conversation_id).limit(limit)
    rows = [conversation_from_row(r) for r in conn.execute(query).mappings()]
    if not rows:
        return []
    ids = [r.local_conversation_id for r in rows]
    counts: dict[tuple[str, str], int] = {}
    for cid, status, n in conn.execute(
        select(jobs.c.local_conversation_id, jobs.c.status, func.count())
        .where(jobs.c.local_conversation_id.in_(ids), jobs.c.status.in_(("pending", "running")))
        .group_by(jobs.c.local_conversation_id, jobs.c.status)
    ).all():
        counts[cid, status] = int(n)
    return [
        ConversationSummary(
            r,
            counts.get((r.local_conversation_id, "pending"), 0),
            counts.get((r.local_conversation_id, "running"), 0),
        )
        for r in rows
    ]
