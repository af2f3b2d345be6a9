"""The operator's store functions (explain, retry, cancel, conversations, stats, prune),
run against SQLite and PostgreSQL alike, with explicit times on both sides of each rule."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, update

from renewald.store import ClaimedJob, DueGate, Store
from renewald.store.conversations import Conversation
from renewald.store.ops import FailedJobFilter, OperatorAction
from renewald.store.schema import (
    renewal_jobs,
    renewal_target_pauses,
)
from tests.store.factories import (
    T0,
    attempt_result,
    attempt_rows,
    conversation_row,
    make_conversation,
    make_job,
    make_link,
)

OWNER = "host:1:boot"
LEASE = 60_000
STALE = 30_000
OPERATOR = OperatorAction(operator="operator:test@host", log_path="logs/x.jsonl")


def claim(store: Store, *, now: int = T0, owner: str = OWNER) -> list[ClaimedJob]:
    return store.claim_due_jobs(owner=owner, now=now, lease_ms=LEASE, limit=50)


def finish(
    store: Store,
    claimed: ClaimedJob,
    *,
    status: str,
    now: int = T0,
    reason: str | None = None,
    error: str | None = None,
    next_attempt_at: int | None = None,
    outcome: str | None = None,
) -> bool:
    job = claimed.job
    result = attempt_result(
        job,
        status=status,
        now=now,
        lease_owner=job.lease_owner or OWNER,
        started_at=job.started_at or now,
        finished_at=now,
        outcome=outcome or {"done": "delivered", "pending": "retry"}.get(status, "permanent"),
        next_attempt_at=next_attempt_at,
        terminal_reason=reason or ("delivered" if status == "done" else None),
        error_message=error,
        decision={"done": "done", "pending": "retry"}.get(status, "failed"),
        decision_reason="backoff=2^0*30s" if status == "pending" else (reason or status),
    )
    [applied] = store.record_results([result], now=now)
    return applied


def failed_job(store: Store, *, now: int = T0, reason: str = "permanent", **kw) -> str:
    job = make_job(store, now=now, **kw)
    [c] = [c for c in claim(store, now=now) if c.job.job_id == job.job_id]
    assert finish(store, c, status="failed", now=now, reason=reason, error="HTTP 400")
    return job.job_id


def explain(store: Store, job_id: str, *, now: int = T0, statuses=("auto",), target_of=None):
    found = store.with_due(DueGate(tuple(statuses))).explain_job(
        job_id, now=now, stale_after_ms=STALE, target_of=target_of
    )
    assert found is not None
    return found[1]


def add_pause(store: Store, key: str, *, until: int, adapter: str = "log", **values) -> None:
    row = {
        "target_key": key,
        "adapter": adapter,
        "failures": 5,
        "paused_until": until,
        "opened_at": T0 - 1000,
        "last_error": "HTTP 503",
        "updated_at": T0,
        **values,
    }
    store.write(lambda c: c.execute(insert(renewal_target_pauses).values(**row)))


# -- explain ---------------------------------------------------------------------------


def test_explain_missing_job(store: Store) -> None:
    assert store.explain_job("nope", now=T0, stale_after_ms=STALE) is None


def test_explain_due_boundary(store: Store) -> None:
    make_job(store, job_id="j", next_attempt_at=T0)
    early = explain(store, "j", now=T0 - 1)
    assert (early.state, early.rule, early.until) == ("waiting", "not_due", T0)
    due = explain(store, "j", now=T0)
    assert (due.state, due.rule, due.until) == ("due", "due", None)
    assert "no live daemon" in due.detail
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    assert explain(store, "j", now=T0).detail.endswith("the next poll claims it")
    assert [c.job.job_id for c in claim(store, now=T0)] == ["j"]  # explain agrees with claim


def test_explain_not_scheduled(store: Store) -> None:
    make_job(store, job_id="j", next_attempt_at=None)
    why = explain(store, "j")
    assert (why.state, why.rule) == ("waiting", "not_scheduled")
    assert "next_attempt_at is empty" in why.detail


@pytest.mark.parametrize("status", ["paused", "manual"])
def test_explain_conversation_status(store: Store, status: str) -> None:
    make_conversation(store, "c", status=status, paused_at=T0 - 5 if status == "paused" else None)
    make_job(store, conversation="c", job_id="j", next_attempt_at=T0 + 1000)
    why = explain(store, "j")
    assert why.rule == "conversation_status" and f"is {status}" in why.detail
    assert [h.rule for h in why.also] == ["not_due"]
    allowed = explain(store, "j", now=T0 + 1000, statuses=("auto", status))
    assert allowed.rule == "due"


def test_explain_cooldown_boundary(store: Store) -> None:
    make_conversation(store, "c", cooldown_until=T0 + 10)
    make_job(store, conversation="c", job_id="j")
    why = explain(store, "j", now=T0 + 9)
    assert (why.rule, why.until) == ("cooldown", T0 + 10)
    assert explain(store, "j", now=T0 + 10).rule == "due"
    assert claim(store, now=T0 + 9) == []
    assert len(claim(store, now=T0 + 10)) == 1


def test_explain_conversation_busy_names_the_job_and_owner(store: Store) -> None:
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    make_job(store, conversation="c", job_id="first", next_attempt_at=T0 - 1)
    make_job(store, conversation="c", job_id="second", next_attempt_at=T0)
    claim(store)
    why = explain(store, "second")
    assert why.rule == "conversation_busy"
    assert "job first" in why.detail and OWNER in why.detail and "owner alive" in why.detail
    assert why.until == T0 + LEASE
    store.unregister_daemon(owner=OWNER)
    assert "owner not registered" in explain(store, "second").detail


def test_explain_running_lease_and_owner(store: Store) -> None:
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    make_job(store, job_id="j")
    claim(store)
    alive = explain(store, "j", now=T0 + 1)
    assert (alive.state, alive.rule, alive.until) == ("running", "leased", T0 + LEASE)
    assert "owner alive" in alive.detail
    # The heartbeat goes stale one millisecond past the threshold, as the rescuer sees it.
    assert explain(store, "j", now=T0 + STALE).rule == "leased"
    assert explain(store, "j", now=T0 + STALE + 1).rule == "owner_dead"
    store.heartbeat_daemon(owner=OWNER, now=T0 + LEASE)
    assert explain(store, "j", now=T0 + LEASE - 1).rule == "leased"
    assert explain(store, "j", now=T0 + LEASE).rule == "lease_expired"


def test_explain_target_paused_by_key(store: Store) -> None:
    make_conversation(store, "c")
    make_link(store, "c", target_kind="log")
    make_job(store, conversation="c", job_id="j")
    add_pause(store, "log:c", until=T0 + 1)
    add_pause(store, "log:other", until=T0 + 99)

    def target_of(claimed: ClaimedJob):
        return "log", f"log:{claimed.job.local_conversation_id}"

    why = explain(store, "j", target_of=target_of)
    assert (why.rule, why.until) == ("target_paused", T0 + 1)
    assert "log:c" in why.detail and "5 failures" in why.detail and "HTTP 503" in why.detail
    assert explain(store, "j", now=T0 + 1, target_of=target_of).rule == "due"


def test_explain_target_paused_lists_the_kind_without_a_key(store: Store) -> None:
    make_conversation(store, "c")
    make_link(store, "c", target_kind="http.webhook")
    make_job(store, conversation="c", job_id="j")
    add_pause(store, "webhook:http://127.0.0.1:9", until=T0 + 50, adapter="http.webhook")
    add_pause(store, "browser:x", until=T0 + 50, adapter="browser.proxy_delivery")
    why = explain(store, "j")
    assert why.rule == "target_paused" and "not determinable" in why.detail
    assert "webhook:http://127.0.0.1:9" in why.detail and "browser:x" not in why.detail


def test_explain_finished(store: Store) -> None:
    make_job(store, job_id="ok")
    [c] = claim(store)
    finish(store, c, status="done", now=T0 + 3)
    why = explain(store, "ok")
    assert (why.state, why.rule, why.until) == ("finished", "delivered", T0 + 3)
    failed_job(store, job_id="bad")
    why = explain(store, "bad")
    assert (why.state, why.rule) == ("finished", "permanent")
    assert why.detail.endswith("HTTP 400")


# -- retry -----------------------------------------------------------------------------


def test_retry_gives_a_fresh_budget(store: Store) -> None:
    failed_job(store, job_id="j", max_attempts=5, reason="exhausted")
    retried = store.retry_job("j", now=T0 + 100, action=OPERATOR, attempt_id="op-1")
    assert retried is not None and retried.previous_reason == "exhausted"
    job = retried.job
    assert (job.status, job.attempt_count, job.max_attempts) == ("pending", 0, 5)
    assert (job.next_attempt_at, job.terminal_reason, job.finished_at) == (T0 + 100, None, None)
    assert job.log_path == "logs/x.jsonl"
    op = attempt_rows(store, "j")[-1]
    assert (op["attempt_id"], op["outcome"], op["decision"]) == ("op-1", "operator_retry", "retry")
    assert op["decision_reason"] == "retried by operator"
    assert op["lease_owner"] == "operator:test@host" and op["next_attempt_at"] == T0 + 100
    assert [c.job.job_id for c in claim(store, now=T0 + 100)] == ["j"]


def test_retry_only_failed_jobs(store: Store) -> None:
    make_job(store, job_id="pending")
    assert store.retry_job("pending", now=T0, action=OPERATOR) is None
    assert store.retry_job("missing", now=T0, action=OPERATOR) is None
    assert attempt_rows(store, "pending") == []


def test_retry_failed_filters_and_batches(store: Store) -> None:
    for n in range(5):
        failed_job(store, job_id=f"old-{n}", conversation="a", now=T0 - 10_000)
    failed_job(store, job_id="recent", conversation="b", now=T0)
    failed_job(store, job_id="cancelled", conversation="b", now=T0, reason="cancelled")
    assert store.failed_job_ids(where=FailedJobFilter(since=T0)) == ["cancelled", "recent"]
    assert store.failed_job_ids(where=FailedJobFilter(since=T0 + 1)) == []
    only_b = FailedJobFilter(conversation="b", exclude_reasons=["cancelled"])
    assert store.failed_job_ids(where=only_b) == ["recent"]
    assert store.failed_job_ids(where=FailedJobFilter(reasons=["cancelled"])) == ["cancelled"]
    retried = store.retry_failed(
        now=T0 + 1, action=OPERATOR, where=FailedJobFilter(exclude_reasons=["cancelled"]), batch=2
    )
    assert sorted(r.job.job_id for r in retried) == [*(f"old-{n}" for n in range(5)), "recent"]
    assert store.failed_job_ids() == ["cancelled"]


# -- cancel ----------------------------------------------------------------------------


def test_cancel_pending_ends_at_once(store: Store) -> None:
    make_job(store, job_id="j")
    earlier = update(renewal_jobs).values(last_error="HTTP 503 from an earlier attempt")
    store.write(lambda conn: conn.execute(earlier.where(renewal_jobs.c.job_id == "j")))
    done = store.cancel_job("j", now=T0 + 5, action=OPERATOR, attempt_id="op-c")
    assert done is not None and done.result == "cancelled"
    job = done.job
    assert (job.status, job.terminal_reason, job.finished_at) == ("failed", "cancelled", T0 + 5)
    assert job.last_error == "cancelled by operator"
    [row] = attempt_rows(store, "j")
    assert (row["outcome"], row["decision"], row["decision_reason"]) == (
        "cancelled",
        "failed",
        "cancelled by operator",
    )
    assert claim(store, now=T0 + 10) == []
    again = store.cancel_job("j", now=T0 + 6, action=OPERATOR)
    assert again is not None and again.result == "finished"
    assert store.cancel_job("missing", now=T0, action=OPERATOR) is None


@pytest.mark.parametrize(
    ("status", "outcome"), [("done", "delivered"), ("pending", "retry"), ("failed", "permanent")]
)
def test_cancel_running_fences_its_result(store: Store, status: str, outcome: str) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    marked = store.cancel_job("j", now=T0 + 1, action=OPERATOR)
    assert marked is not None and marked.result == "cancelling"
    assert (marked.job.status, marked.job.terminal_reason) == ("running", "cancelled")
    assert explain(store, "j", now=T0 + 1).rule == "cancelling"
    again = store.cancel_job("j", now=T0 + 2, action=OPERATOR)
    assert again is not None and again.result == "already_cancelling"
    assert attempt_rows(store, "j") == []

    assert finish(store, c, status=status, now=T0 + 3, next_attempt_at=T0 + 30_000)
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.terminal_reason, job.finished_at) == ("failed", "cancelled", T0 + 3)
    assert job.lease_owner is None
    [row] = attempt_rows(store, "j")
    assert row["outcome"] == outcome and row["decision"] == "failed"
    assert row["decision_reason"].startswith("cancelled by operator")
    assert row["next_attempt_at"] is None
    assert claim(store, now=T0 + 60_000) == []


def test_cancelled_result_with_a_stale_token_still_changes_nothing(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    store.cancel_job("j", now=T0 + 1, action=OPERATOR)
    stale = ClaimedJob(
        job=type(c.job)(**{**c.job.as_dict(), "lease_token": c.job.lease_token - 1}),
        platform=None,
        link=None,
    )
    assert not finish(store, stale, status="done")
    job = store.get_job("j")
    assert job is not None and (job.status, job.terminal_reason) == ("running", "cancelled")


# -- conversations ---------------------------------------------------------------------


def set_status(store: Store, status: str, *, now: int) -> tuple[Conversation, Conversation]:
    changed = store.set_automation_status("c", status=status, now=now)
    assert changed is not None
    return changed


def test_pause_and_resume_like_the_tracker(store: Store) -> None:
    make_conversation(store, "c", status="auto")
    make_job(store, conversation="c", job_id="j")
    before, after = set_status(store, "paused", now=T0 + 1)
    assert before.automation_status == "auto"
    assert (after.automation_status, after.paused_at) == ("paused", T0 + 1)
    assert after.updated_at == T0 + 1
    assert claim(store, now=T0 + 2) == []
    _, again = set_status(store, "paused", now=T0 + 5)
    assert again.paused_at == T0 + 1  # pausing twice keeps when it was paused
    _, resumed = set_status(store, "auto", now=T0 + 6)
    assert (resumed.automation_status, resumed.paused_at, resumed.updated_at) == (
        "auto",
        None,
        T0 + 6,
    )
    assert [c.job.job_id for c in claim(store, now=T0 + 6)] == ["j"]
    assert store.set_automation_status("missing", status="paused", now=T0) is None


def test_list_conversations_counts_jobs(store: Store) -> None:
    make_conversation(store, "a", status="auto", updated_at=T0 + 2)
    make_conversation(store, "p", status="paused", updated_at=T0 + 1, cooldown_until=T0 + 9)
    make_job(store, conversation="a", job_id="a1", next_attempt_at=T0 - 1)
    make_job(store, conversation="a", job_id="a2")
    make_job(store, conversation="p", job_id="p1")
    claim(store)  # a1 runs
    found = {s.conversation.local_conversation_id: s for s in store.list_conversations()}
    assert (found["a"].pending, found["a"].running) == (1, 1)
    assert (found["p"].pending, found["p"].running) == (1, 0)
    assert found["p"].conversation.cooldown_until == T0 + 9
    assert [
        s.conversation.local_conversation_id for s in store.list_conversations(statuses=["paused"])
    ] == ["p"]
    assert store.list_conversations(conversation="a")[0].as_dict()["pending"] == 1


# -- stats -----------------------------------------------------------------------------


def test_stats(store: Store) -> None:
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    make_conversation(store, "paused", status="paused")
    make_job(store, conversation="paused", job_id="held", next_attempt_at=T0 - 1)
    make_job(store, job_id="run", next_attempt_at=T0 - 100_000)
    claim(store, now=T0 - 50_000)  # 'run' runs since T0-50s; its lease expires at T0+10s
    make_job(store, job_id="old-due", next_attempt_at=T0 - 60_000)
    make_job(store, job_id="just-due", next_attempt_at=T0)
    make_job(store, job_id="later", next_attempt_at=T0 + 1)
    make_job(store, job_id="unscheduled", next_attempt_at=None)
    failed_job(store, job_id="f-old", now=T0 - 86_400_000 - 1)
    failed_job(store, job_id="f-new", now=T0 - 86_400_000, reason="exhausted")
    add_pause(store, "log:x", until=T0 + 1)
    add_pause(store, "log:y", until=T0)

    s = store.stats(now=T0, overdue_before=T0 - 60_000 + 1, failures_since=T0 - 86_400_000)
    assert s.by_status == {"pending": 5, "running": 1, "failed": 2}
    assert (s.due, s.oldest_due_at, s.overdue) == (2, T0 - 60_000, 1)
    assert (s.held, s.unscheduled) == (1, 1)
    assert (s.running, s.oldest_running_started_at, s.expired_leases) == (1, T0 - 50_000, 0)
    assert s.failures == {"exhausted": 1}
    assert [p.target_key for p in s.paused_targets] == ["log:x"]
    data = s.as_dict(stale_before=T0 - STALE)
    assert data["oldest_due_age_ms"] == 60_000 and data["oldest_lease_age_ms"] == 50_000
    assert data["daemons"][0]["alive"] is True
    later = store.stats(now=T0 + 10_000, overdue_before=T0, failures_since=T0)
    assert later.expired_leases == 1 and later.failures == {}
    g = store.gauges(now=T0)
    assert (g.due, g.running, g.oldest_due_at, len(g.paused_targets)) == (2, 1, T0 - 60_000, 1)


# -- prune -----------------------------------------------------------------------------


def test_prune_boundary_and_what_stays(store: Store) -> None:
    cutoff = T0
    old = failed_job(store, job_id="old", now=cutoff - 1)
    edge = failed_job(store, job_id="edge", now=cutoff)
    make_job(store, job_id="done-old", now=cutoff - 10)
    [c] = [c for c in claim(store, now=cutoff - 10) if c.job.job_id == "done-old"]
    finish(store, c, status="done", now=cutoff - 5)
    make_job(store, job_id="pending-old", now=cutoff - 100)
    # A tracker row marked done without finished_at is never pruned: its age is unknown.
    make_job(store, job_id="no-finish", now=cutoff - 100)
    store.write(
        lambda conn: conn.execute(
            update(renewal_jobs).where(renewal_jobs.c.job_id == "no-finish").values(status="done")
        )
    )
    assert store.count_prunable(before=cutoff) == (2, 2)
    assert store.prune_finished(before=cutoff, batch=1) == (2, 2)
    left = {j.job_id for j in store.list_jobs()}
    assert left == {edge, "pending-old", "no-finish"}
    assert old not in left and attempt_rows(store, old) == []
    assert len(attempt_rows(store, edge)) == 1
    assert store.prune_finished(before=cutoff) == (0, 0)


def test_prune_in_batches(store: Store) -> None:
    for n in range(7):
        failed_job(store, job_id=f"f{n}", now=T0 - 1000)
    assert store.prune_finished(before=T0, batch=3, max_batches=1) == (3, 3)
    assert store.prune_finished(before=T0, batch=3) == (4, 4)
    assert store.list_jobs() == []


def test_conversation_rows_are_the_trackers(store: Store) -> None:
    """Pause writes only the tracker's columns, with its values ('paused', epoch ms)."""
    make_conversation(store, "c")
    store.set_automation_status("c", status="paused", now=T0 + 1)
    row = conversation_row(store, "c")
    assert (row["automation_status"], row["paused_at"], row["updated_at"]) == (
        "paused",
        T0 + 1,
        T0 + 1,
    )


# -- metrics read at scrape time -------------------------------------------------------
