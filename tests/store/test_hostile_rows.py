"""Hostile rows through the store and the dispatcher, on SQLite and PostgreSQL.

SQLite lets any column hold any type; PostgreSQL's types refuse most of that (text in a
BIGINT, invalid UTF-8), so on PostgreSQL the suite covers what it can hold: times out of
range, negative counts, invalid JSON, unknown statuses.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from renewald.store import Store
from renewald.store.decode import MAX_EPOCH_MS
from renewald.store.schema import renewal_job_attempts
from tests.store.factories import T0, job_of, make_conversation, make_job, make_link

FAR = 100_000_000_000_000_000  # 1e17 ms: year ~3 million


def set_raw(store: Store, job_id: str, assignments: str, **params: Any) -> None:
    store.write(
        lambda c: c.execute(
            text(f"UPDATE renewal_jobs SET {assignments} WHERE job_id = :id"),
            {"id": job_id, **params},
        )
    )


def claim(store: Store, now: int = T0) -> dict[str, Any]:
    claimed = store.claim_due_jobs(owner="o1", now=now, lease_ms=60_000, limit=50)
    return {c.job.job_id: c for c in claimed}


def attempts(store: Store, job_id: str) -> list[dict[str, Any]]:
    query = select(renewal_job_attempts).where(renewal_job_attempts.c.job_id == job_id)
    return [dict(r) for r in store.read(lambda c: c.execute(query).mappings().all())]


def sqlite_only(store: Store) -> None:
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL's column types refuse this value")


# -- what PostgreSQL refuses --------------------------------------------------------------


def test_postgresql_refuses_what_sqlite_stores(store: Store) -> None:
    job = make_job(store)
    if store.dialect == "sqlite":
        set_raw(store, job.job_id, "next_attempt_at = :v", v="soon")
        assert store.get_job(job.job_id).problems  # type: ignore[union-attr]
        return
    with pytest.raises(DBAPIError):
        set_raw(store, job.job_id, "next_attempt_at = :v", v="soon")
    with pytest.raises(DBAPIError):
        set_raw(store, job.job_id, "max_attempts = :v", v="three")


# -- reading --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignments", "value", "column", "sqlite"),
    [
        ("next_attempt_at = :v", "soon", "next_attempt_at", True),
        ("next_attempt_at = :v", 1.5, "next_attempt_at", True),
        ("next_attempt_at = :v", FAR, "next_attempt_at", False),
        ("max_attempts = :v", "three", "max_attempts", True),
        ("max_attempts = :v", 0, "max_attempts", False),
        ("attempt_count = :v", -2, "attempt_count", False),
        ("payload = :v", b"\xff\xfe", "payload", True),
        ("payload = CAST(x'ff61' AS TEXT)", None, "payload", True),
        ("created_at = :v", "yesterday", "created_at", True),
        ("target_snapshot = :v", "{not json", "target_snapshot", False),
        ("status = :v", "weird", "status", False),
        ("deadline_at = :v", MAX_EPOCH_MS + 1, "deadline_at", False),
    ],
)
def test_every_read_decodes_without_raising(
    store: Store, assignments: str, value: Any, column: str, sqlite: bool
) -> None:
    if sqlite:
        sqlite_only(store)
    job = make_job(store)
    set_raw(store, job.job_id, assignments, v=value)
    found = store.get_job(job.job_id)
    assert found is not None
    assert any(p.startswith(f"renewal_jobs.{column} ") for p in found.problems), found.problems
    assert [j.job_id for j in store.list_jobs()] == [job.job_id]
    explained = store.explain_job(job.job_id, now=T0, stale_after_ms=30_000)
    assert explained is not None
    facts, why = explained
    assert facts.job.problems
    if facts.job.status == "pending":
        assert why.rule == "malformed"
    store.stats(now=T0, overdue_before=T0, failures_since=0)
    store.gauges(now=T0)


def test_invalid_utf8_in_every_text_column_reads(store: Store) -> None:
    sqlite_only(store)
    job = make_job(store)
    columns = ("job_id", "message_id", "payload", "last_error", "log_path", "target_kind")
    set_raw(store, job.job_id, ", ".join(f"{c} = CAST(x'c328' AS TEXT)" for c in columns[1:]))
    [found] = store.list_jobs()
    assert len(found.problems) == len(columns) - 1
    assert all("not valid UTF-8" in p for p in found.problems)


# -- the due query, the wake-up and the sweep --------------------------------------------


def test_next_due_at_ignores_values_that_are_not_times(store: Store) -> None:
    good = make_job(store, next_attempt_at=T0 + 5_000)
    far = make_job(store)
    set_raw(store, far.job_id, "next_attempt_at = :v", v=FAR)
    assert store.next_due_at(now=T0) == T0 + 5_000
    if store.dialect == "sqlite":
        text_due = make_job(store)
        set_raw(store, text_due.job_id, "next_attempt_at = :v", v="soon")
        set_raw(store, good.job_id, "next_attempt_at = NULL")
        assert store.next_due_at(now=T0) is None


def test_claim_hands_out_hostile_jobs_with_their_problems(store: Store) -> None:
    good = make_job(store)
    negative = make_job(store)
    set_raw(store, negative.job_id, "next_attempt_at = -5")
    conv = make_conversation(store)
    make_link(store, conv, target_payload="[1, 2")
    bad_link = make_job(store, conversation=conv)
    claimed = claim(store)
    assert set(claimed) == {good.job_id, negative.job_id, bad_link.job_id}
    assert claimed[good.job_id].problems == ()
    assert claimed[negative.job_id].problems == (
        "renewal_jobs.next_attempt_at is out of range (-5)",
    )
    assert claimed[bad_link.job_id].problems[0].startswith("conversation_links.target_payload")


def test_sweep_ends_unclaimable_rows_and_nothing_else(store: Store) -> None:
    far = make_job(store)
    set_raw(store, far.job_id, "next_attempt_at = :v", v=FAR)
    hostile = [far.job_id]
    if store.dialect == "sqlite":
        for value in ("soon", b"\x00\x01"):
            job = make_job(store)
            set_raw(store, job.job_id, "next_attempt_at = :v", v=value)
            hostile.append(job.job_id)
    good = make_job(store)
    unscheduled = make_job(store, next_attempt_at=None)
    later = make_job(store, next_attempt_at=MAX_EPOCH_MS)
    running = make_job(store)
    set_raw(store, running.job_id, "status = 'running', next_attempt_at = :v", v=FAR)

    swept = store.sweep_malformed(now=T0, owner="o1", log_path="logs/x.jsonl")
    assert sorted(s.job_id for s in swept) == sorted(hostile)
    for job_id in hostile:
        failed = job_of(store, job_id)
        assert (failed.status, failed.terminal_reason) == ("failed", "malformed")
        assert failed.last_error is not None
        assert failed.last_error.startswith("malformed: renewal_jobs.next_attempt_at ")
        assert failed.finished_at == T0 and failed.log_path == "logs/x.jsonl"
        [attempt] = attempts(store, job_id)
        assert (attempt["outcome"], attempt["decision"]) == ("malformed", "failed")
    for job_id in (good.job_id, unscheduled.job_id, later.job_id):
        assert store.get_job(job_id).status == "pending"  # type: ignore[union-attr]
    assert store.get_job(running.job_id).status == "running"  # type: ignore[union-attr]
    assert store.sweep_malformed(now=T0, owner="o1") == []


def test_a_sweep_with_nothing_to_end_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle daemon sweeps every rescue interval: on SQLite a write transaction would
    take the lock the tracker writes under."""
    make_job(store)
    writes: list[object] = []
    monkeypatch.setattr(store, "write", lambda fn: writes.append(fn))
    assert store.sweep_malformed(now=T0, owner="o1") == []
    assert writes == []


# -- the dispatcher: bad jobs end failed/malformed, errors in one job end only that job ----


@pytest.mark.parametrize(("value", "sqlite"), [("later", True), (FAR, False)])
def test_a_cooldown_that_is_not_a_time_fails_its_jobs_instead_of_holding_them(
    store: Store, value: Any, sqlite: bool
) -> None:
    if sqlite:
        sqlite_only(store)
    conv = make_conversation(store, cooldown_until=T0 + 60_000)
    held = make_job(store, conversation=conv)
    assert claim(store) == {}
    store.write(
        lambda c: c.execute(
            text(
                "UPDATE local_conversations SET cooldown_until = :v"
                " WHERE local_conversation_id = :c"
            ),
            {"v": value, "c": conv},
        )
    )
    claimed = claim(store)
    assert list(claimed) == [held.job_id]
    [problem] = claimed[held.job_id].problems
    assert problem.startswith("local_conversations.cooldown_until ")
