"""The store: every SQL statement renewald runs goes through here.

Each public method is one transaction. Writes on SQLite open with `BEGIN IMMEDIATE`
(see `engine.py`); a busy database (the tracker writing) or a dropped PostgreSQL
connection is retried with short jittered backoff, because a transaction here is all or
nothing and running it again is safe.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

import renewald.store.facts as facts_sql
import renewald.store.schedules as schedule_sql
import renewald.store.stats as stats_sql
from renewald.errors import DatabaseError, DatabaseUnavailable
from renewald.store import (
    attempts,
    claim,
    conversations,
    daemons,
    explain,
    jobs,
    leases,
    ops,
    retention,
    sweep,
    targets,
    unlogged,
)
from renewald.store.engine import (
    READ_ONLY,
    Backend,
    backend_for,
    backend_of,
    describe,
    is_transient,
    is_unavailable,
    make_engine,
    sqlite_path,
)
from renewald.store.migrate import check_schema
from renewald.store.models import Attempt, AttemptResult, ClaimedJob, Job, NewJob, TargetPause

T = TypeVar("T")
_log = structlog.get_logger("renewald.store")

# How long a transaction keeps retrying a busy/locked database or a lost connection,
# unless the caller gives its own budget (`Store(retry_for=...)`, `with_budget`): the
# daemon's duties, the command line and the metrics reader each choose theirs.
RETRY_FOR = 30.0
SLOW_RETRY = 1.0


class Store:
    def __init__(
        self,
        engine: Engine,
        *,
        retry_for: float = RETRY_FOR,
        sleep: Callable[[float], None] = time.sleep,
        backend: Backend | None = None,
    ) -> None:
        self.engine = engine
        self.backend = backend or backend_of(engine)
        self.dialect = self.backend.name
        self.retry_for = retry_for
        self._sleep = sleep

    def with_budget(self, retry_for: float) -> Store:
        """The same database (same engine and pool) with another retry budget per call.
        Close only the store the engine was opened with."""
        return Store(self.engine, retry_for=retry_for, sleep=self._sleep, backend=self.backend)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
        pool_size: int = 5,
        create: bool = False,
        retry_for: float = RETRY_FOR,
    ) -> Store:
        """Open the database at `url` and check that it answers. Without `create`, a SQLite
        file that does not exist is an error rather than a new empty database. A database
        that stays unreachable for `retry_for` raises `DatabaseUnavailable`."""
        backend = backend_for(url)
        path = sqlite_path(url)
        if path is not None:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                raise DatabaseError(f"no database at {path}: run `renewald migrate` to create it")
        engine = make_engine(
            url, busy_timeout=busy_timeout, synchronous=synchronous, pool_size=pool_size
        )
        store = cls(engine, retry_for=retry_for, backend=backend)
        try:
            store.ping()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ----------------------------------------------------------------

    def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        started = time.monotonic()
        delay = 0.005
        tries = 0
        while True:
            tries += 1
            try:
                if write:
                    with self.engine.begin() as conn:
                        result = fn(conn)
                else:
                    with self.engine.connect() as conn:
                        conn = conn.execution_options(**{READ_ONLY: True})
                        with conn.begin():
                            result = fn(conn)
                waited = time.monotonic() - started
                if tries > 1 and waited >= SLOW_RETRY:
                    _log.warning("database.busy", tries=tries, waited=f"{waited:.1f}s")
                return result
            except DBAPIError as exc:
                pause = delay * random.uniform(0.5, 1.5)
                if not is_transient(exc) or time.monotonic() - started + pause > self.retry_for:
                    raise
                self._sleep(pause)
                delay = min(delay * 2, 0.5)

    def write(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=True)

    def read(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=False)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A raw write transaction, for callers composing several store functions at once."""
        with self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        """Raise `DatabaseUnavailable` when the database stays unreachable for the retry
        budget, `DatabaseError` when it answers with something a person must fix."""
        try:
            self.read(lambda conn: conn.execute(text("SELECT 1")).scalar())
        except DBAPIError as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from None
            raise DatabaseError(f"cannot use the database: {describe(exc)}") from None

    def check_schema(self) -> None:
        self.read(check_schema)

    # -- jobs ------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        job: NewJob,
        now: int,
        platform: str = "renewald",
        conversation_status: str = "auto",
    ) -> Job:
        """Insert a job, creating its conversation row (`auto`) when missing."""

        def tx(conn: Connection) -> Job:
            jobs.ensure_conversation(
                conn,
                conversation_id=job.local_conversation_id,
                platform=platform,
                status=conversation_status,
                now=now,
            )
            jobs.insert_job(conn, job=job, now=now)
            found = jobs.get_job(conn, job.job_id)
            assert found is not None
            return found

        return self.write(tx)

    def get_job(self, job_id: str) -> Job | None:
        return self.read(lambda conn: jobs.get_job(conn, job_id))

    def list_jobs(
        self,
        *,
        statuses: Sequence[str] = (),
        conversation: str | None = None,
        since: int | None = None,
        reasons: Sequence[str] = (),
        target_kinds: Sequence[str] = (),
        limit: int | None = 50,
    ) -> list[Job]:
        return self.read(
            lambda conn: jobs.list_jobs(
                conn,
                statuses=statuses,
                conversation=conversation,
                since=since,
                reasons=reasons,
                target_kinds=target_kinds,
                limit=limit,
            )
        )

    def list_attempts(self, job_id: str) -> list[Attempt]:
        return self.read(lambda conn: jobs.list_attempts(conn, job_id))

    def count_due(self, *, now: int, dispatch_statuses: Sequence[str] = ("auto",)) -> int:
        return self.read(
            lambda conn: jobs.count_due(conn, now=now, dispatch_statuses=dispatch_statuses)
        )

    def next_due_at(self, *, now: int) -> int | None:
        return self.read(lambda conn: jobs.next_due_at(conn, now=now))

    # -- the daemon's writes ---------------------------------------------------------

    def claim_due_jobs(
        self,
        *,
        owner: str,
        now: int | Callable[[], int],
        lease_ms: int,
        limit: int,
        dispatch_statuses: Sequence[str] = ("auto",),
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs. Given a clock (`now` as a callable), it is read once
        the claim holds its lock, so the lease runs from the moment the claim commits,
        however long it waited for the lock or a retry."""
        clock: Callable[[], int] = now if callable(now) else (lambda: now)

        def tx(conn: Connection) -> list[ClaimedJob]:
            claimed = claim.claim_due_jobs(
                conn,
                backend=self.backend,
                owner=owner,
                clock=clock,
                lease_ms=lease_ms,
                limit=limit,
                dispatch_statuses=dispatch_statuses,
            )
            return claim.load_targets(conn, claimed)

        return self.write(tx)

    def begin_sends(
        self, *, owner: str, held: Sequence[tuple[str, int]], now: int, lease_ms: int
    ) -> list[bool]:
        """Spend each held job's attempt right before its send, in one transaction; False
        for a job no longer ours: it must not be sent."""
        if not held:
            return []
        return self.write(
            lambda conn: leases.begin_sends(
                conn, owner=owner, held=held, now=now, lease_ms=lease_ms
            )
        )

    def begin_send(
        self, *, owner: str, job_id: str, lease_token: int, now: int, lease_ms: int
    ) -> bool:
        [ok] = self.begin_sends(owner=owner, held=[(job_id, lease_token)], now=now,
                                lease_ms=lease_ms)  # fmt: skip
        return ok

    def record_results(
        self,
        results: Sequence[AttemptResult],
        *,
        now: int,
        writer: str | None = None,
        logged: Sequence[str] = (),
    ) -> list[bool]:
        """Write each result whose lease still holds (with its unlogged mark for `writer`,
        by default the attempt's own owner) and forget the marks of `logged` attempts, in
        one transaction."""
        if not results and not logged:
            return []
        return self.write(
            lambda conn: attempts.record_results(
                conn, results, now=now, writer=writer, logged=logged
            )
        )

    def mark_logged(self, attempt_ids: Sequence[str]) -> None:
        if attempt_ids:
            self.write(lambda conn: attempts.mark_logged(conn, attempt_ids))

    def find_unlogged(
        self,
        *,
        stale_before: int,
        exclude_writer: str | None = None,
        limit: int = 1000,
    ) -> list[unlogged.Unlogged]:
        return self.read(
            lambda conn: unlogged.find_unlogged(
                conn, stale_before=stale_before, exclude_writer=exclude_writer, limit=limit
            )
        )

    def forget_orphaned_marks(self) -> int:
        def tx(conn: Connection) -> int:
            ids = unlogged.orphaned_marks(conn)
            attempts.mark_logged(conn, ids)
            return len(ids)

        return self.write(tx)

    def extend_leases(
        self, *, owner: str, held: Sequence[tuple[str, int]], now: int, lease_ms: int
    ) -> list[str]:
        if not held:
            return []
        return self.write(
            lambda conn: leases.extend_leases(
                conn, owner=owner, held=held, now=now, lease_ms=lease_ms
            )
        )

    def release_jobs(self, *, owner: str, held: Sequence[tuple[str, int]], now: int) -> list[bool]:
        if not held:
            return []
        return self.write(lambda conn: leases.release_jobs(conn, owner=owner, held=held, now=now))

    def find_abandoned(
        self, *, now: int, exclude_owner: str | None = None, limit: int = 100
    ) -> list[Job]:
        return self.read(
            lambda conn: leases.find_abandoned(
                conn, now=now, exclude_owner=exclude_owner, limit=limit
            )
        )

    def find_rewound(self, *, limit: int = 100) -> list[Job]:
        return self.read(lambda conn: leases.find_rewound(conn, limit=limit))

    def delivered_attempts(self, job_ids: Sequence[str]) -> dict[str, leases.DeliveredAt]:
        return self.read(lambda conn: leases.delivered_attempts(conn, job_ids))

    def reconcile_delivered(
        self, found: Sequence[tuple[Job, leases.DeliveredAt]], *, now: int
    ) -> dict[str, bool]:
        """Put each rewound job back to done (fenced on the row as read)."""
        if not found:
            return {}
        return self.write(
            lambda conn: {
                job.job_id: leases.reconcile_delivered(conn, job=job, delivered=d, now=now)
                for job, d in sorted(found, key=lambda p: p[0].job_id)
            }
        )

    def put_back_unsent(self, found: Sequence[Job], *, now: int) -> dict[str, bool]:
        """Pending again, without spending an attempt: held jobs whose send never began."""
        if not found:
            return {}
        return self.write(
            lambda conn: {
                job.job_id: leases.put_back_unsent(conn, job=job, now=now)
                for job in sorted(found, key=lambda j: j.job_id)
            }
        )

    def held_leases(self, *, exclude_owner: str | None = None) -> list[leases.HeldLeases]:
        return self.read(lambda conn: leases.held_leases(conn, exclude_owner=exclude_owner))

    # -- the daemon registry ---------------------------------------------------------

    def register_daemon(self, *, owner: str, host: str, pid: int, version: str, now: int) -> None:
        self.write(
            lambda conn: daemons.register_daemon(
                conn, owner=owner, host=host, pid=pid, version=version, now=now
            )
        )

    def heartbeat_daemon(self, *, owner: str, now: int, status: str | None = None) -> bool:
        return self.write(
            lambda conn: daemons.heartbeat_daemon(conn, owner=owner, now=now, status=status)
        )

    def unregister_daemon(self, *, owner: str) -> None:
        self.write(lambda conn: daemons.unregister_daemon(conn, owner=owner))

    def prune_daemons(self, *, stale_before: int) -> int:
        """Forget registry rows whose heartbeat is older than `stale_before`."""
        return self.write(lambda conn: daemons.prune_daemons(conn, stale_before=stale_before))

    def list_daemons(self) -> list[daemons.DaemonRow]:
        return self.read(daemons.list_daemons)

    # -- operating (renewald show/retry/cancel/conversations/stats/prune) --------------

    def explain_job(
        self,
        job_id: str,
        *,
        now: int,
        dispatch_statuses: Sequence[str] = ("auto",),
        stale_after_ms: int,
        target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
        gone: Callable[[daemons.DaemonRow], bool] | None = None,
    ) -> tuple[facts_sql.JobFacts, explain.Explanation] | None:
        """The job, the rows that decide whether it is due, and the rule that applies.
        `gone` tells a registered daemon whose process is known not to run any more."""
        facts = self.read(
            lambda conn: facts_sql.job_facts(conn, job_id, now=now, target_of=target_of)
        )
        if facts is None:
            return None
        facts = facts.with_gone_owners(gone)
        why = explain.explain(
            facts,
            now=now,
            dispatch_statuses=dispatch_statuses,
            stale_before=now - stale_after_ms,
        )
        return facts, why

    def list_jobs_explained(
        self,
        *,
        now: int,
        dispatch_statuses: Sequence[str] = ("auto",),
        stale_after_ms: int,
        target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
        statuses: Sequence[str] = (),
        conversation: str | None = None,
        since: int | None = None,
        reasons: Sequence[str] = (),
        target_kinds: Sequence[str] = (),
        limit: int | None = 50,
        gone: Callable[[daemons.DaemonRow], bool] | None = None,
    ) -> tuple[list[tuple[facts_sql.JobFacts, explain.Explanation]], int]:
        """`list_jobs` with the rule that applies to each job (the same `explain` as
        `explain_job`), and how many jobs match in all; one transaction."""

        def tx(conn: Connection) -> tuple[list[facts_sql.JobFacts], int]:
            found = jobs.list_jobs(
                conn,
                statuses=statuses,
                conversation=conversation,
                since=since,
                reasons=reasons,
                target_kinds=target_kinds,
                limit=limit,
            )
            total = len(found)
            if limit is not None and total >= limit:
                total = jobs.count_jobs(
                    conn,
                    statuses=statuses,
                    conversation=conversation,
                    since=since,
                    reasons=reasons,
                    target_kinds=target_kinds,
                )
            return facts_sql.jobs_facts(conn, found, now=now, target_of=target_of), total

        all_facts, total = self.read(tx)
        all_facts = [f.with_gone_owners(gone) for f in all_facts]
        stale_before = now - stale_after_ms
        explained = [
            (
                facts,
                explain.explain(
                    facts,
                    now=now,
                    dispatch_statuses=dispatch_statuses,
                    stale_before=stale_before,
                ),
            )
            for facts in all_facts
        ]
        return explained, total

    def retry_job(
        self, job_id: str, *, now: int, action: ops.OperatorAction, attempt_id: str | None = None
    ) -> ops.Retried | None:
        """A failed job back to pending, due now, with a fresh budget; None if not failed."""
        aid = attempt_id or uuid.uuid4().hex
        return self.write(
            lambda conn: ops.retry_job(conn, job_id=job_id, attempt_id=aid, now=now, action=action)
        )

    def failed_job_ids(
        self,
        *,
        since: int | None = None,
        conversation: str | None = None,
        reasons: Sequence[str] = (),
        exclude_reasons: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[str]:
        return self.read(
            lambda conn: ops.failed_job_ids(
                conn,
                since=since,
                conversation=conversation,
                reasons=reasons,
                exclude_reasons=exclude_reasons,
                limit=limit,
            )
        )

    def retry_failed(
        self,
        *,
        now: int,
        action: ops.OperatorAction,
        since: int | None = None,
        conversation: str | None = None,
        reasons: Sequence[str] = (),
        exclude_reasons: Sequence[str] = (),
        batch: int = 200,
    ) -> list[ops.Retried]:
        """Retry every failed job the filters select, `batch` jobs per short transaction."""
        done: list[ops.Retried] = []
        after: str | None = None
        while True:

            def tx(conn: Connection, after: str | None = after) -> tuple[list[ops.Retried], str]:
                ids = ops.failed_job_ids(
                    conn,
                    since=since,
                    conversation=conversation,
                    reasons=reasons,
                    exclude_reasons=exclude_reasons,
                    limit=batch,
                    after_id=after,
                )
                got = [
                    ops.retry_job(
                        conn, job_id=i, attempt_id=uuid.uuid4().hex, now=now, action=action
                    )
                    for i in ids
                ]
                return [r for r in got if r is not None], (ids[-1] if ids else "")

            retried, last = self.write(tx)
            done += retried
            if not last:
                return done
            after = last

    def cancel_job(
        self, job_id: str, *, now: int, action: ops.OperatorAction, attempt_id: str | None = None
    ) -> ops.Cancelled | None:
        aid = attempt_id or uuid.uuid4().hex
        return self.write(
            lambda conn: ops.cancel_job(conn, job_id=job_id, attempt_id=aid, now=now, action=action)
        )

    def set_automation_status(
        self, conversation_id: str, *, status: str, now: int
    ) -> tuple[conversations.Conversation, conversations.Conversation] | None:
        return self.write(
            lambda conn: conversations.set_automation_status(
                conn, conversation_id=conversation_id, status=status, now=now
            )
        )

    def list_conversations(
        self, *, statuses: Sequence[str] = (), conversation: str | None = None, limit: int = 100
    ) -> list[conversations.ConversationSummary]:
        return self.read(
            lambda conn: conversations.list_conversations(
                conn, statuses=statuses, conversation=conversation, limit=limit
            )
        )

    def stats(
        self,
        *,
        now: int,
        dispatch_statuses: Sequence[str] = ("auto",),
        overdue_before: int,
        failures_since: int,
    ) -> stats_sql.Stats:
        return self.read(
            lambda conn: stats_sql.stats(
                conn,
                now=now,
                dispatch_statuses=dispatch_statuses,
                overdue_before=overdue_before,
                failures_since=failures_since,
            )
        )

    def gauges(self, *, now: int, dispatch_statuses: Sequence[str] = ("auto",)) -> stats_sql.Gauges:
        return self.read(
            lambda conn: stats_sql.gauges(conn, now=now, dispatch_statuses=dispatch_statuses)
        )

    def paused_targets(self, *, now: int) -> list[TargetPause]:
        return self.read(lambda conn: stats_sql.paused_targets(conn, now=now))

    def count_prunable(self, *, before: int) -> tuple[int, int]:
        return self.read(lambda conn: retention.count_prunable(conn, before=before))

    def prune_finished(
        self, *, before: int, batch: int = 500, max_batches: int | None = None
    ) -> tuple[int, int]:
        """Delete finished jobs (finished before `before`) and their attempts, `batch` jobs
        per transaction, so the SQLite write lock is only ever held briefly and the tracker's
        writes slip in between. Returns (jobs deleted, attempts deleted)."""
        total_jobs = total_attempts = batches = 0
        while max_batches is None or batches < max_batches:
            n_jobs, n_attempts = self.write(
                lambda conn: retention.prune_batch(conn, before=before, limit=batch)
            )
            batches += 1
            total_jobs += n_jobs
            total_attempts += n_attempts
            if n_jobs < batch:
                break
        return total_jobs, total_attempts

    # -- schedules (store/schedules.py) -----------------------------------------------

    def add_schedule(
        self,
        *,
        schedule: schedule_sql.Schedule,
        platform: str = "renewald",
        conversation_status: str = "auto",
    ) -> schedule_sql.Schedule:
        """Insert a schedule, creating its conversation row (`auto`) when missing."""

        def tx(conn: Connection) -> schedule_sql.Schedule:
            schedule_sql.insert_schedule(
                conn,
                schedule=schedule,
                platform=platform,
                conversation_status=conversation_status,
            )
            found = schedule_sql.get_schedule(conn, schedule.schedule_id)
            assert found is not None
            return found

        return self.write(tx)

    def get_schedule(self, schedule_id: str) -> schedule_sql.Schedule | None:
        return self.read(lambda conn: schedule_sql.get_schedule(conn, schedule_id))

    def list_schedules(
        self, *, conversation: str | None = None, limit: int = 100
    ) -> list[schedule_sql.Schedule]:
        return self.read(
            lambda conn: schedule_sql.list_schedules(conn, conversation=conversation, limit=limit)
        )

    def due_schedules(self, *, now: int, limit: int = 100) -> list[schedule_sql.Schedule]:
        return self.read(lambda conn: schedule_sql.due_schedules(conn, now=now, limit=limit))

    def fire_schedule(
        self,
        *,
        schedule: schedule_sql.Schedule,
        new_jobs: Sequence[NewJob],
        next_fire_at: int | None,
        last_fire_at: int,
        now: int,
        dispatch_statuses: Sequence[str] = ("auto",),
    ) -> schedule_sql.FireOutcome:
        return self.write(
            lambda conn: schedule_sql.fire_schedule(
                conn,
                backend=self.backend,
                schedule=schedule,
                new_jobs=new_jobs,
                next_fire_at=next_fire_at,
                last_fire_at=last_fire_at,
                now=now,
                dispatch_statuses=dispatch_statuses,
            )
        )

    def advance_schedule(
        self,
        *,
        schedule_id: str,
        seen: int,
        next_fire_at: int | None,
        last_fire_at: int | None,
        now: int,
    ) -> bool:
        return self.write(
            lambda conn: schedule_sql.advance_schedule(
                conn,
                schedule_id=schedule_id,
                seen=seen,
                next_fire_at=next_fire_at,
                last_fire_at=last_fire_at,
                now=now,
            )
        )

    def pause_schedule(self, schedule_id: str, *, now: int) -> bool:
        return self.write(
            lambda conn: schedule_sql.set_enabled(
                conn, schedule_id=schedule_id, enabled=False, now=now
            )
        )

    def resume_schedule(self, schedule_id: str, *, next_fire_at: int | None, now: int) -> bool:
        return self.write(
            lambda conn: schedule_sql.set_enabled(
                conn, schedule_id=schedule_id, enabled=True, now=now, next_fire_at=next_fire_at
            )
        )

    def remove_schedule(self, schedule_id: str) -> bool:
        return self.write(lambda conn: schedule_sql.delete_schedule(conn, schedule_id=schedule_id))

    # -- delivery targets (the breaker's shared state) -------------------------------

    def list_target_pauses(self) -> list[TargetPause]:
        """Every target whose breaker counts failures or is open."""
        return self.read(targets.list_target_pauses)

    def get_target_pause(self, *, target_key: str) -> TargetPause | None:
        return self.read(lambda conn: targets.get_target_pause(conn, target_key))

    def change_target_pause(
        self, *, target_key: str, adapter: str | None, now: int, change: targets.Change
    ) -> tuple[TargetPause | None, TargetPause | None]:
        """Apply a pure `change` to the target's row, locked; returns (before, after)."""
        return self.write(
            lambda conn: targets.change_target_pause(
                conn,
                backend=self.backend,
                target_key=target_key,
                adapter=adapter,
                now=now,
                change=change,
            )
        )

    def claim_target_probe(
        self, *, target_key: str, paused_until: int, now: int, probe_until: int
    ) -> bool:
        """Take the single probe of a half-open target; False when another daemon took it."""
        return self.write(
            lambda conn: targets.claim_target_probe(
                conn,
                target_key=target_key,
                paused_until=paused_until,
                now=now,
                probe_until=probe_until,
            )
        )

    def clear_target_pause(self, *, target_key: str) -> TargetPause | None:
        """Delete the target's row (it accepted a delivery); returns what it was."""
        return self.write(lambda conn: targets.clear_target_pause(conn, target_key=target_key))

    # -- rows that do not fit (store/decode.py, store/sweep.py) ------------------------

    def sweep_malformed(
        self, *, now: int, owner: str, log_path: str | None = None, limit: int = 100
    ) -> list[sweep.Swept]:
        """End pending jobs no claim can select (a `next_attempt_at` that is not a time)
        failed/malformed, up to `limit` of them."""
        return self.write(
            lambda conn: sweep.sweep_malformed(
                conn, now=now, owner=owner, log_path=log_path, limit=limit
            )
        )

    def end_held_malformed(
        self, found: Sequence[Job], *, now: int, owner: str, log_path: str | None = None
    ) -> list[sweep.Swept]:
        """End held rows that rescue cannot read failed/malformed (store/sweep.py)."""
        if not found:
            return []
        return self.write(
            lambda conn: sweep.end_held_malformed(
                conn, found=found, now=now, owner=owner, log_path=log_path
            )
        )
