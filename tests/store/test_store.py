"""The store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import importlib

import pytest
from sqlalchemy import event, func, select, text

from renewald.errors import DuplicateJob, SchemaMissing, SchemaOutdated, SchemaTooNew
from renewald.store import (
    AttemptResult,
    DueGate,
    JobFilter,
    NewJob,
    Store,
    check_schema,
    migrate,
)
from renewald.store.engine import READ_ONLY
from renewald.store.migrate import HEAD, VERSION_TABLE
from renewald.store.schema import renewal_job_attempts, renewal_jobs
from tests.store.factories import (
    T0,
    attempt_result,
    conversation_row,
    make_conversation,
    make_job,
    make_link,
)

OWNER = "host:1:boot"
LEASE = 60_000


def claim(store: Store, *, now: int = T0, limit: int = 10, owner: str = OWNER):
    return store.claim_due_jobs(owner=owner, now=now, lease_ms=LEASE, limit=limit)


def result_for(claimed, *, status: str = "done", now: int = T0, **overrides) -> AttemptResult:
    overrides.setdefault("lease_owner", OWNER)
    return attempt_result(claimed.job, status=status, now=now, **overrides)


# -- schema ----------------------------------------------------------------------------


def test_migrate_twice_is_a_noop(store: Store) -> None:
    assert migrate(store.engine) == (HEAD, HEAD)
    check_schema(store.engine)


def test_schema_check_names_the_fix(db_url: str) -> None:
    store = Store.open(db_url, create=True)
    try:
        with pytest.raises(SchemaMissing, match="run `renewald migrate`"):
            check_schema(store.engine)
        migrate(store.engine)
        store.write(lambda c: c.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")))
        with pytest.raises(SchemaTooNew, match="newer than this renewald"):
            check_schema(store.engine)
        with pytest.raises(SchemaTooNew):
            migrate(store.engine)
    finally:
        store.close()


def test_schema_check_outdated(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    m = importlib.import_module("renewald.store.migrate")

    monkeypatch.setattr(m, "REVISIONS", (*m.REVISIONS, "9000"))
    monkeypatch.setattr(m, "HEAD", "9000")
    with pytest.raises(SchemaOutdated, match="run `renewald migrate`"):
        m.check_schema(store.engine)


# -- jobs ------------------------------------------------------------------------------


def test_enqueue_creates_conversation_and_job(store: Store) -> None:
    job = make_job(store, conversation="c1", job_id="j1", message_id="m1")
    assert job.status == "pending"
    assert job.attempt_count == 0 and job.max_attempts == 3 and job.lease_token == 0
    assert job.created_at == T0 and job.next_attempt_at == T0
    assert store.get_job("j1") == job
    assert store.get_job("nope") is None


def test_duplicate_message_writes_nothing(store: Store) -> None:
    make_job(store, conversation="c1", job_id="j1", message_id="m1")
    with pytest.raises(DuplicateJob, match="message m1"):
        make_job(store, conversation="c-new", job_id="j2", message_id="m1")
    with pytest.raises(DuplicateJob, match="job id j1"):
        make_job(store, conversation="c-new", job_id="j1", message_id="m2")
    assert store.get_job("j2") is None
    assert [j.job_id for j in store.list_jobs()] == ["j1"]


def test_list_jobs_filters(store: Store) -> None:
    make_job(store, conversation="a", job_id="j1")
    make_job(store, conversation="b", job_id="j2", now=T0 + 1)
    assert [j.job_id for j in store.list_jobs()] == ["j2", "j1"]
    assert [j.job_id for j in store.list_jobs(where=JobFilter(conversation="a"))] == ["j1"]
    assert store.list_jobs(where=JobFilter(statuses=["done"])) == []
    assert len(store.list_jobs(limit=1)) == 1


# -- the due rule ----------------------------------------------------------------------


def test_due_boundaries(store: Store) -> None:
    make_job(store, job_id="now", next_attempt_at=T0)
    make_job(store, job_id="later", next_attempt_at=T0 + 1)
    make_job(store, job_id="unscheduled", next_attempt_at=None)
    assert store.count_due(now=T0) == 1
    assert store.count_due(now=T0 - 1) == 0
    assert store.count_due(now=T0 + 1) == 2
    assert store.next_due_at(now=T0) == T0 + 1
    assert store.next_due_at(now=T0 + 1) is None


def test_conversation_gates(store: Store) -> None:
    for status in ("paused", "manual", "auto"):
        make_conversation(store, f"c-{status}", status=status)
        make_job(store, conversation=f"c-{status}", job_id=f"j-{status}")
    make_conversation(store, "c-cool", cooldown_until=T0 + 1)
    make_job(store, conversation="c-cool", job_id="j-cool")
    assert [c.job.job_id for c in claim(store)] == ["j-auto"]
    assert store.with_due(DueGate(("auto", "manual"))).count_due(now=T0) == 1  # j-manual
    assert [c.job.job_id for c in claim(store, now=T0 + 1)] == ["j-cool"]


# -- claiming --------------------------------------------------------------------------


def test_claim_sets_lease_and_counts(store: Store) -> None:
    make_job(store, job_id="j1")
    [c] = claim(store, now=T0 + 10)
    job = c.job
    assert job.status == "running" and job.lease_owner == OWNER
    assert job.lease_expires_at == T0 + 10 + LEASE
    assert job.lease_token == 1 and job.attempt_count == 1
    assert job.started_at == T0 + 10 and job.last_attempt_at == T0 + 10
    assert claim(store, now=T0 + 10) == []


def test_claim_order_and_limit(store: Store) -> None:
    make_job(store, job_id="b", next_attempt_at=T0 - 5)
    make_job(store, job_id="a", next_attempt_at=T0 - 10)
    make_job(store, job_id="c", next_attempt_at=T0)
    assert [c.job.job_id for c in claim(store, limit=2)] == ["a", "b"]


def test_one_running_job_per_conversation(store: Store) -> None:
    make_job(store, conversation="c", job_id="first", next_attempt_at=T0 - 2)
    make_job(store, conversation="c", job_id="second", next_attempt_at=T0 - 1)
    make_job(store, conversation="d", job_id="other")
    claimed = claim(store)
    assert [c.job.job_id for c in claimed] == ["first", "other"]
    assert claim(store) == []
    first = next(c for c in claimed if c.job.job_id == "first")
    assert store.record_results([result_for(first)], now=T0) == [True]
    assert [c.job.job_id for c in claim(store)] == ["second"]


def test_claim_attaches_latest_active_link(store: Store) -> None:
    make_conversation(store, "c")
    make_link(store, "c", link_id="old", observed_at=T0 - 10, target_kind="http.webhook")
    make_link(store, "c", link_id="new", observed_at=T0, target_kind="log", page_url="https://x")
    make_link(store, "c", link_id="gone", observed_at=T0 + 5, is_active=0)
    make_job(store, conversation="c")
    [c] = claim(store)
    assert c.platform == "claude"
    assert c.link is not None and c.link.target_kind == "log" and c.link.page_url == "https://x"


def test_where_writers_queue_on_one_lock_a_claim_reads_its_targets_after_its_commit(
    store: Store,
) -> None:
    """SQLite's writers (this process's, on one lock) wait for a claim's transaction: it
    runs the claim alone, and the conversations and links are read in a read transaction
    after it. PostgreSQL reads them in the claim's transaction (no extra round trips)."""
    make_conversation(store, "c")
    make_link(store, "c", link_id="l", observed_at=T0, target_kind="log")
    make_job(store, conversation="c")
    seen: dict[str, bool] = {}

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        head = statement.lstrip().split("\n", 1)[0]
        for what in ("SELECT local_conversations.", "SELECT conversation_links.", "UPDATE"):
            if head.startswith(what):
                seen.setdefault(what, bool(conn.get_execution_options().get(READ_ONLY)))

    engine = store.read(lambda c: c.engine)
    event.listen(engine, "before_cursor_execute", note)
    try:
        [c] = claim(store)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert c.platform == "claude" and c.link is not None and c.link.target_kind == "log"
    after_commit = store.backend.serial_writes
    assert seen == {
        "UPDATE": False,
        "SELECT local_conversations.": after_commit,
        "SELECT conversation_links.": after_commit,
    }


# -- recording, fenced -----------------------------------------------------------------


def test_record_result_writes_attempt_and_job(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    r = result_for(c, log_path="logs/x.jsonl", decision="done", decision_reason="delivered")
    assert store.record_results([r], now=T0 + 5) == [True]
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.terminal_reason, job.finished_at) == ("done", "delivered", T0 + 5)
    assert job.lease_owner is None and job.lease_expires_at is None
    assert job.log_path == "logs/x.jsonl"
    [a] = store.list_attempts("j")
    assert a.attempt_id == r.attempt_id and a.duration_ms == 5 and a.outcome == "delivered"


def test_retry_result_reschedules(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    r = result_for(c, status="pending", next_attempt_at=T0 + 30_000, error_message="HTTP 503")
    assert store.record_results([r], now=T0 + 5) == [True]
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.next_attempt_at, job.last_error) == ("pending", T0 + 30_000, "HTTP 503")
    assert job.finished_at is None and job.terminal_reason is None


def test_a_recorded_result_starts_its_conversations_cooldown_and_a_lost_one_does_not(
    store: Store,
) -> None:
    for n in range(2):
        make_job(store, job_id=f"j{n}", conversation=f"c{n}")
    a, b = claim(store)
    ours = result_for(a, cooldown_until=T0 + 60_000)
    lost = result_for(b, cooldown_until=T0 + 60_000, lease_token=b.lease_token + 1)
    assert store.record_results([ours, lost], now=T0 + 5) == [True, False]
    assert conversation_row(store, "c0")["cooldown_until"] == T0 + 60_000
    assert conversation_row(store, "c1")["cooldown_until"] is None
    assert [x.attempt_id for x in store.list_attempts("j0")] == [ours.attempt_id]
    assert store.list_attempts("j1") == []


def test_a_batch_with_a_stale_result_beside_the_jobs_new_one_applies_only_the_new(
    store: Store,
) -> None:
    make_job(store, job_id="j")
    [first] = claim(store)
    held = [("j", first.lease_token)]
    assert store.release_jobs(owner=OWNER, held=held, now=T0 + 1) == [True]
    [second] = claim(store)
    stale = result_for(first, attempt_id="stale")
    new = result_for(second, attempt_id="new")
    assert store.record_results([stale, new], now=T0 + 5) == [False, True]
    assert [a.attempt_id for a in store.list_attempts("j")] == ["new"]


def test_fenced_write_with_stale_token_changes_nothing(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    stale = result_for(c, lease_token=c.job.lease_token - 1, attempt_id="stale")
    assert store.record_results([stale], now=T0 + 5) == [False]
    job = store.get_job("j")
    assert job is not None and job.status == "running"
    assert store.list_attempts("j") == []


def test_refund_gives_the_attempt_back(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    r = result_for(c, status="pending", next_attempt_at=T0 + 1000, refund_attempt=True)
    store.record_results([r], now=T0)
    job = store.get_job("j")
    assert job is not None and job.attempt_count == 0


# -- leases ----------------------------------------------------------------------------


def test_extend_and_lose_leases(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    held = [("j", c.job.lease_token)]
    assert store.extend_leases(owner=OWNER, held=held, now=T0 + 20_000, lease_ms=LEASE) == []
    job = store.get_job("j")
    assert job is not None and job.lease_expires_at == T0 + 20_000 + LEASE
    assert store.extend_leases(owner="other", held=held, now=T0, lease_ms=LEASE) == ["j"]
    assert store.extend_leases(owner=OWNER, held=[("j", 99)], now=T0, lease_ms=LEASE) == ["j"]


def test_extending_many_leases_is_one_write_that_names_each_lost_one(store: Store) -> None:
    for n in range(4):
        make_job(store, job_id=f"j{n}", conversation=f"c{n}")
    a, b, c, d = claim(store)
    held = [("j3", d.lease_token), ("j0", a.lease_token), ("j2", c.lease_token + 1),
            ("j1", b.lease_token + 1), ("gone", 1)]  # fmt: skip
    lost = store.extend_leases(owner=OWNER, held=held, now=T0 + 20_000, lease_ms=LEASE)
    assert lost == ["gone", "j1", "j2"]
    until = {n: store.get_job(f"j{n}").lease_expires_at for n in range(4)}  # type: ignore[union-attr]
    assert until[0] == until[3] == T0 + 20_000 + LEASE
    assert until[1] == until[2] == T0 + LEASE
    assert store.extend_leases(owner=OWNER, held=[], now=T0, lease_ms=LEASE) == []


def test_release_puts_job_back_unspent(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    assert store.release_jobs(owner=OWNER, held=[("j", c.job.lease_token)], now=T0) == [True]
    job = store.get_job("j")
    assert job is not None
    assert (job.status, job.attempt_count, job.lease_owner) == ("pending", 0, None)
    assert store.release_jobs(owner=OWNER, held=[("j", c.job.lease_token)], now=T0) == [False]


def test_find_abandoned_lease_boundary(store: Store) -> None:
    store.register_daemon(owner=OWNER, host="h", pid=1, version="t", now=T0)
    make_job(store, job_id="j")
    claim(store)
    expiry = T0 + LEASE
    assert store.find_abandoned(now=expiry - 1) == []
    assert [j.job_id for j in store.find_abandoned(now=expiry)] == ["j"]
    assert store.find_abandoned(now=expiry, exclude_owner=OWNER) == []


def test_find_abandoned_ignores_owner_liveness(store: Store) -> None:
    """A dead or unregistered owner's live lease still holds: only expiry frees a job."""
    make_job(store, job_id="j")
    claim(store)
    store.unregister_daemon(owner=OWNER)
    assert store.find_abandoned(now=T0 + 1) == []


def test_release_after_send_began_is_refused(store: Store) -> None:
    make_job(store, job_id="j")
    [c] = claim(store)
    assert store.begin_send(owner=OWNER, job_id="j", lease_token=c.lease_token, now=T0,
                            lease_ms=LEASE)  # fmt: skip
    assert store.release_jobs(owner=OWNER, held=[("j", c.lease_token)], now=T0) == [False]
    assert not store.begin_send(owner="other", job_id="j", lease_token=c.lease_token, now=T0,
                                lease_ms=LEASE)  # fmt: skip


def test_daemon_registry(store: Store) -> None:
    store.register_daemon(owner=OWNER, host="h", pid=7, version="t", now=T0)
    assert store.heartbeat_daemon(owner=OWNER, now=T0 + 5, status="idle")
    [d] = store.list_daemons()
    assert (d.owner_id, d.pid, d.heartbeat_at, d.status) == (OWNER, 7, T0 + 5, "idle")
    store.unregister_daemon(owner=OWNER)
    assert not store.heartbeat_daemon(owner=OWNER, now=T0 + 6)


def test_poll_query_uses_the_due_index(store: Store) -> None:
    """The due scan reads idx_renewal_jobs_status_due, whatever the number of finished jobs."""
    sql = (
        "SELECT job_id FROM renewal_jobs WHERE status = 'pending' AND next_attempt_at <= 0 "
        "ORDER BY next_attempt_at, created_at LIMIT 32"
    )
    if store.dialect == "sqlite":
        plan = store.read(lambda c: c.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all())
        assert any("idx_renewal_jobs_status_due" in str(row) for row in plan), plan
    else:

        def pg_plan(c):
            c.execute(text("SET LOCAL enable_seqscan = off"))
            return c.execute(text(f"EXPLAIN {sql}")).scalars().all()

        plan = store.read(pg_plan)
        assert any("idx_renewal_jobs_status_due" in row for row in plan), plan


def test_the_claims_conversation_gate_reads_only_the_conversations_it_could_match(
    store: Store,
) -> None:
    """The gate (out of `auto`, or cooling down) must not read every conversation per
    claim: SQLite looks each candidate's conversation up by its key; PostgreSQL, which
    planned a scan of the whole table, reads migration 0007's partial index."""
    make_job(store, job_id="a")
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "local_conversations AS gate" not in statement or plans:
            return
        raw = cursor.connection.cursor()
        if store.dialect == "sqlite":
            raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plans.extend(str(row[-1]) for row in raw.fetchall())
            return
        raw.execute("SAVEPOINT plan")
        raw.execute("SET LOCAL enable_seqscan = off")
        raw.execute(f"EXPLAIN {statement}", parameters)
        plans.extend(row[0] for row in raw.fetchall())
        raw.execute("ROLLBACK TO SAVEPOINT plan")

    engine = store.read(lambda c: c.engine)
    event.listen(engine, "before_cursor_execute", explain)
    try:
        assert [c.job.job_id for c in claim(store)] == ["a"]
    finally:
        event.remove(engine, "before_cursor_execute", explain)
    gate = [line for line in plans if " gate" in line]
    if store.dialect == "sqlite":
        assert gate and all(line.startswith("SEARCH gate") for line in gate), plans
    else:
        assert any("idx_local_conversations_gated" in line for line in gate), plans


def test_attempt_rows_only_for_matched_results(store: Store) -> None:
    make_job(store, job_id="a")
    make_job(store, job_id="b")
    ca, cb = claim(store)
    results = [result_for(ca), result_for(cb, lease_token=cb.job.lease_token + 1)]
    assert store.record_results(results, now=T0) == [True, False]
    count = store.read(
        lambda c: c.execute(select(func.count()).select_from(renewal_job_attempts)).scalar()
    )
    assert count == 1
    statuses = store.read(
        lambda c: {
            job_id: status
            for job_id, status in c.execute(select(renewal_jobs.c.job_id, renewal_jobs.c.status))
        }
    )
    assert statuses == {"a": "done", "b": "running"}


def test_new_job_defaults_match_tracker(store: Store) -> None:
    job = store.enqueue(
        job=NewJob(job_id="x", local_conversation_id="c", message_id="m", payload="p"), now=T0
    )
    assert (job.status, job.payload_kind, job.max_attempts, job.next_attempt_at) == (
        "pending",
        "text",
        3,
        None,
    )


def test_known_revisions_match_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    m = importlib.import_module("renewald.store.migrate")
    script = ScriptDirectory.from_config(m.alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert tuple(revisions) == m.REVISIONS
    assert script.get_current_head() == m.HEAD


def test_upgrade_from_the_first_revision(db_url: str) -> None:
    from alembic import command

    m = importlib.import_module("renewald.store.migrate")
    store = Store.open(db_url, create=True)
    try:
        with store.engine.begin() as conn:
            cfg = m.alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        assert migrate(store.engine) == ("0001", HEAD)
        check_schema(store.engine)
    finally:
        store.close()


def test_claim_clears_a_stale_end_mark(store: Store) -> None:
    """The tracker's upsert re-arms a cancelled job without touching terminal_reason."""
    make_job(store, job_id="j")
    store.write(
        lambda c: c.execute(
            renewal_jobs.update()
            .where(renewal_jobs.c.job_id == "j")
            .values(terminal_reason="cancelled")
        )
    )
    [c] = claim(store)
    assert c.job.terminal_reason is None
    assert store.record_results([result_for(c)], now=T0) == [True]
    job = store.get_job("j")
    assert job is not None and (job.status, job.terminal_reason) == ("done", "delivered")


def test_prune_daemons_forgets_only_stale_rows(store: Store) -> None:
    store.register_daemon(owner="dead", host="h", pid=1, version="t", now=T0)
    store.register_daemon(owner="alive", host="h", pid=2, version="t", now=T0 + 10)
    assert store.prune_daemons(stale_before=T0 + 10) == 1
    assert [d.owner_id for d in store.list_daemons()] == ["alive"]
