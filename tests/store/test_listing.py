"""`renewald jobs` in the store: its filters and counts, and the WHY of every listed job,
which must be exactly what `show` says for that job (one set of rules, ops.explain)."""

from __future__ import annotations

from sqlalchemy import update

from renewald.store import ClaimedJob, JobFilter, Store
from renewald.store.daemons import running_by_owner
from renewald.store.explain import Explanation, Hold, deciding_first
from renewald.store.schema import renewal_jobs
from tests.store.factories import T0, make_conversation, make_job, make_link
from tests.store.test_ops import LEASE, OWNER, STALE, add_pause, claim, explain, finish


def target_of(claimed: ClaimedJob) -> tuple[str | None, str | None]:
    kind = claimed.job.target_kind or (claimed.link.target_kind if claimed.link else None)
    return kind, f"{kind}:{claimed.job.local_conversation_id}" if kind else None


def listed(store: Store, *, now: int = T0, **selected) -> tuple[list[Explanation], int]:
    explained, total = store.list_jobs_explained(
        now=now, stale_after_ms=STALE, target_of=target_of, **selected
    )
    return [why for _facts, why in explained], total


def set_job(store: Store, job_id: str, **values) -> None:
    store.write(
        lambda c: c.execute(
            update(renewal_jobs).where(renewal_jobs.c.job_id == job_id).values(**values)
        )
    )


def a_mixed_queue(store: Store) -> list[str]:
    """One job for each rule `explain` knows, listed newest first."""
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    make_conversation(store, "paused", status="paused")
    make_job(store, conversation="paused", job_id="a-paused", target_kind="log")
    make_conversation(store, "busy")
    make_job(store, conversation="busy", job_id="b-running", target_kind="log", now=T0 - 10)
    [running] = claim(store, now=T0 - 10)
    make_job(store, conversation="busy", job_id="c-behind", target_kind="log")
    make_job(store, job_id="d-later", target_kind="log", next_attempt_at=T0 + 60_000)
    make_conversation(store, "broken")
    make_link(store, "broken", target_kind="http.webhook")
    make_job(store, conversation="broken", job_id="e-breaker")
    add_pause(store, "http.webhook:broken", until=T0 + 5_000, adapter="http.webhook")
    make_job(store, job_id="f-due", target_kind="log")
    make_conversation(store, "cool", cooldown_until=T0 + 7_000)
    make_job(store, conversation="cool", job_id="g-cool", target_kind="log")
    make_job(store, job_id="h-unscheduled", target_kind="log", next_attempt_at=None)
    ids = [
        "a-paused",
        "b-running",
        "c-behind",
        "d-later",
        "e-breaker",
        "f-due",
        "g-cool",
        "h-unscheduled",
    ]
    for n, job_id in enumerate(ids):  # created_at decides the order of the list
        set_job(store, job_id, created_at=T0 - 1000 + n)
    assert running.job.job_id == "b-running"
    return ids[::-1]


def test_every_listed_job_is_explained_as_show_explains_it(store: Store) -> None:
    ids = a_mixed_queue(store)
    explained, total = store.list_jobs_explained(
        now=T0, stale_after_ms=STALE, target_of=target_of, limit=None
    )
    assert total == len(ids) and [f.job.job_id for f, _ in explained] == ids
    for facts, why in explained:
        assert why == explain(store, facts.job.job_id, target_of=target_of), facts.job.job_id
    rules = {f.job.job_id: w.rule for f, w in explained}
    assert rules == {
        "a-paused": "conversation_status",
        "b-running": "leased",
        "c-behind": "conversation_busy",
        "d-later": "not_due",
        "e-breaker": "target_paused",
        "f-due": "due",
        "g-cool": "cooldown",
        "h-unscheduled": "not_scheduled",
    }
    briefs = {f.job.job_id: w.summary(lambda ms: f"T{ms - T0:+d}") for f, w in explained}
    assert briefs["a-paused"] == "conversation paused"
    assert briefs["c-behind"] == f"behind running job b-running, lease ends T{LEASE - 10:+d}"
    assert briefs["d-later"] == "due T+60000"
    assert briefs["e-breaker"] == (
        "target http.webhook:broken paused by the breaker, resumes T+5000"
    )
    assert briefs["f-due"] == "due: the next poll claims it"
    assert briefs["b-running"] == f"running on {OWNER}, lease ends T{LEASE - 10:+d}"


def test_total_counts_past_the_limit(store: Store) -> None:
    ids = a_mixed_queue(store)
    whys, total = listed(store, limit=3)
    assert (len(whys), total) == (3, len(ids))
    whys, total = listed(store, limit=len(ids))
    assert (len(whys), total) == (len(ids), len(ids))
    whys, total = listed(store, limit=3, where=JobFilter(statuses=["running"]))
    assert (len(whys), total) == (1, 1)


def test_filter_by_since_on_both_sides(store: Store) -> None:
    make_job(store, job_id="old", now=T0 - 1)
    make_job(store, job_id="new", now=T0)
    assert [j.job_id for j in store.list_jobs(where=JobFilter(since=T0))] == ["new"]
    assert {j.job_id for j in store.list_jobs(where=JobFilter(since=T0 - 1))} == {"old", "new"}
    assert listed(store, where=JobFilter(since=T0 + 1)) == ([], 0)


def test_filter_by_reason_terminal_or_last_decision(store: Store) -> None:
    make_job(store, job_id="ok", target_kind="log")
    make_job(store, job_id="bad", target_kind="log")
    make_job(store, job_id="again", target_kind="log")
    make_job(store, job_id="never", target_kind="log", next_attempt_at=T0 + 1)
    by_id = {c.job.job_id: c for c in claim(store)}
    finish(store, by_id["ok"], status="done")
    finish(store, by_id["bad"], status="failed", reason="exhausted")
    finish(store, by_id["again"], status="pending", next_attempt_at=T0 + 30_000)
    assert [j.job_id for j in store.list_jobs(where=JobFilter(reasons=["exhausted"]))] == ["bad"]
    assert [j.job_id for j in store.list_jobs(where=JobFilter(reasons=["backoff"]))] == ["again"]
    assert {
        j.job_id for j in store.list_jobs(where=JobFilter(reasons=["delivered", "exhausted"]))
    } == {
        "ok",
        "bad",
    }
    assert store.list_jobs(where=JobFilter(reasons=["back%"])) == []  # a prefix, not a LIKE pattern
    whys, total = listed(store, where=JobFilter(reasons=["exhausted"]))
    assert total == 1 and whys[0].summary() == "attempts used up"


def test_filter_by_target_kind_own_or_the_link(store: Store) -> None:
    make_conversation(store, "linked")
    make_link(store, "linked", target_kind="http.webhook", observed_at=T0)
    make_link(store, "linked", target_kind="command", observed_at=T0 - 1)  # an older link
    make_job(store, conversation="linked", job_id="via-link")
    make_job(store, conversation="linked", job_id="own", target_kind="log")
    make_job(store, job_id="none")
    assert [j.job_id for j in store.list_jobs(where=JobFilter(target_kinds=["http.webhook"]))] == [
        "via-link"
    ]
    assert [j.job_id for j in store.list_jobs(where=JobFilter(target_kinds=["log"]))] == ["own"]
    assert store.list_jobs(where=JobFilter(target_kinds=["command"])) == []
    _, total = listed(store, where=JobFilter(target_kinds=["log", "http.webhook"]))
    assert total == 2


def test_breaker_deferral_names_the_breaker_first(store: Store) -> None:
    """A deferred job's next_attempt_at is the end of its target's pause: the pause is
    the reason, `not due` only its consequence."""
    make_conversation(store, "c")
    make_job(store, conversation="c", job_id="j", target_kind="log", next_attempt_at=T0 + 5000)
    add_pause(store, "log:c", until=T0 + 5000)
    why = explain(store, "j", target_of=target_of)
    assert (why.rule, [h.rule for h in why.also]) == ("target_paused", ["not_due"])
    set_job(store, "j", next_attempt_at=T0 + 9000)  # due after the pause ends: not_due decides
    why = explain(store, "j", target_of=target_of)
    assert (why.rule, [h.rule for h in why.also]) == ("not_due", ["target_paused"])


def test_deciding_first_puts_endless_holds_first() -> None:
    holds = [
        Hold("not_due", "", 10),
        Hold("conversation_status", ""),
        Hold("cooldown", "", 20),
        Hold("target_paused", "", 10),
    ]
    assert [h.rule for h in deciding_first(holds)] == [
        "conversation_status",
        "cooldown",
        "target_paused",
        "not_due",
    ]


def test_running_by_owner(store: Store) -> None:
    for n in range(3):
        make_job(store, job_id=f"j{n}")
    claim(store, owner="a")
    assert store.read(running_by_owner) == {"a": 3}
    assert store.read(lambda c: running_by_owner(c)) == {"a": 3}


def test_an_owner_known_gone_is_dead_before_its_heartbeat_is_stale(store: Store) -> None:
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    make_job(store, job_id="j", target_kind="log", conversation="c")
    make_job(store, job_id="k", target_kind="log", conversation="c")
    set_job(store, "k", created_at=T0 + 1)
    claim(store)
    found = store.explain_job("j", now=T0 + 1, stale_after_ms=STALE)
    assert found is not None and found[1].rule == "leased"
    found = store.explain_job("j", now=T0 + 1, stale_after_ms=STALE, gone=lambda d: d.pid == 1)
    assert found is not None and found[1].rule == "owner_dead"
    assert "process 1 is gone from h" in found[1].detail
    explained, _ = store.list_jobs_explained(
        now=T0 + 1, stale_after_ms=STALE, gone=lambda d: d.pid == 1
    )
    whys = {f.job.job_id: w for f, w in explained}
    assert whys["j"].rule == "owner_dead" and "is gone" in whys["k"].detail
    make_job(store, job_id="due", target_kind="log", now=T0 + 1)
    found = store.explain_job("due", now=T0 + 1, stale_after_ms=STALE, gone=lambda d: True)
    assert found is not None and "no live daemon" in found[1].detail
