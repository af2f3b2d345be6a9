"""The schedule contract on SQLite and PostgreSQL: firing creates each fire's job once."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import select

from renewald.store import Store
from renewald.store.models import Schedule
from renewald.store.schedules import ScheduleExists
from renewald.store.schema import local_conversations
from tests.store.factories import T0, schedule_row

HOUR = 3_600_000
OWNER = "host:1:boot"
_seq = itertools.count(1)


def make_schedule(store: Store, **overrides: Any) -> Schedule:
    n = next(_seq)
    unique = {
        "schedule_id": f"s{n}",
        "local_conversation_id": f"conv-s{n}",
        "payload": f"keepalive {n}",
    }
    return store.add_schedule(schedule=schedule_row(**(unique | overrides)))


# -- rows -------------------------------------------------------------------------------


def test_add_creates_the_conversation_and_refuses_a_second_id(store: Store) -> None:
    s = make_schedule(store, schedule_id="daily", local_conversation_id="c-new", jitter_ms=5)
    assert s == store.get_schedule("daily")
    assert s.enabled is True and s.allow_overlap is False and s.jitter_ms == 5
    status = store.read(
        lambda c: c.execute(
            select(local_conversations.c.automation_status).where(
                local_conversations.c.local_conversation_id == "c-new"
            )
        ).scalar()
    )
    assert status == "auto"
    with pytest.raises(ScheduleExists, match="daily already exists"):
        make_schedule(store, schedule_id="daily")
    assert [x.schedule_id for x in store.list_schedules()] == ["daily"]
    assert store.list_schedules(conversation="elsewhere") == []


def test_due_boundary_is_next_fire_at_equal_to_now(store: Store) -> None:
    make_schedule(store, schedule_id="due", next_fire_at=T0)
    make_schedule(store, schedule_id="later", next_fire_at=T0 + 1)
    make_schedule(store, schedule_id="off", next_fire_at=T0 - HOUR, enabled=False)
    make_schedule(store, schedule_id="parked", next_fire_at=None)
    assert [s.schedule_id for s in store.due_schedules(now=T0 - 1)] == []
    assert [s.schedule_id for s in store.due_schedules(now=T0)] == ["due"]
    assert [s.schedule_id for s in store.due_schedules(now=T0 + 1)] == ["due", "later"]


def test_pause_resume_remove(store: Store) -> None:
    s = make_schedule(store)
    assert store.pause_schedule(s.schedule_id, now=T0) is True
    assert store.pause_schedule(s.schedule_id, now=T0) is False
    assert store.due_schedules(now=T0 + HOUR) == []
    assert store.resume_schedule(s.schedule_id, next_fire_at=T0 + 2 * HOUR, now=T0) is True
    assert store.resume_schedule(s.schedule_id, next_fire_at=T0 + 5 * HOUR, now=T0) is False
    again = store.get_schedule(s.schedule_id)
    assert again is not None and again.enabled and again.next_fire_at == T0 + 2 * HOUR
    assert store.remove_schedule(s.schedule_id) is True
    assert store.remove_schedule(s.schedule_id) is False
    assert store.get_schedule(s.schedule_id) is None


# -- firing -----------------------------------------------------------------------------


# -- the daemon's duty ------------------------------------------------------------------


# -- exactly once, concurrently ---------------------------------------------------------
