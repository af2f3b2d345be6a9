"""The store: every SQL statement renewald runs goes through here.

Each public method is one transaction (transactions.py). This module holds opening the
database, jobs, the daemon's writes and its registry; the operator, schedule and target
methods are mixins in their own modules. The statements themselves live in the modules
named after their nouns (claim.py, leases.py, schedules.py, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, RowMapping

from renewald.errors import DatabaseError
from renewald.store import (
    attempts,
    claim,
    daemons,
    jobs,
    leases,
    sweep,
    unlogged,
)
from renewald.store.changes import ChangeWatcher
from renewald.store.due import AUTO_ONLY, DueGate
from renewald.store.engine import make_engine, sqlite_path
from renewald.store.models import AttemptResult, ClaimedJob, Job, NewJob, Recorded
from renewald.store.operator_methods import OperatorMethods
from renewald.store.passthrough import reads, writes
from renewald.store.schedule_methods import ScheduleMethods
from renewald.store.target_methods import TargetMethods
from renewald.store.transactions import RETRY_FOR


class Store(OperatorMethods, ScheduleMethods, TargetMethods):
    """Every query renewald runs, one transaction per method, grouped by noun in the
    mixins (operator, schedule, target methods) over `Transactions`."""

    def with_budget(self, retry_for: float) -> Store:
        """The same database (same engine and pool) with another retry budget per call.
        Close only the store the engine was opened with."""
        return Store(
            self.engine, retry_for=retry_for, sleep=self._sleep, backend=self.backend, due=self.due
        )

    def with_due(self, due: DueGate) -> Store:
        """The same database with another due gate (`[daemon] dispatch_statuses`)."""
        return Store(
            self.engine, retry_for=self.retry_for, sleep=self._sleep, backend=self.backend, due=due
        )

    @property
    def watches_changes(self) -> bool:
        """Whether this store's change watcher can watch (not behind a transaction pooler)."""
        return self.backend.watches_changes(self.engine.url)

    def change_watcher(
        self, on_change: Callable[[], None], *, interval: float = 0.05
    ) -> ChangeWatcher:
        """A watcher of work other processes write to this database, through this store's
        backend (`Backend.changes_watch`: LISTEN/NOTIFY on PostgreSQL, inotify or a polled
        counter on SQLite)."""
        url = self.engine.url.render_as_string(hide_password=False)
        return ChangeWatcher(url, on_change, interval=interval, backend=self.backend)

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
        due: DueGate = AUTO_ONLY,
    ) -> Store:
        """Open the database at `url` and check that it answers. Without `create`, a SQLite
        file that does not exist is an error rather than a new empty database. A database
        that stays unreachable for `retry_for` raises `DatabaseUnavailable`."""
        path = sqlite_path(url)
        if path is not None:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                raise DatabaseError(f"no database at {path}: run `renewald migrate` to create it")
        engine = make_engine(
            url, busy_timeout=busy_timeout, synchronous=synchronous, pool_size=pool_size
        )
        store = cls(engine, retry_for=retry_for, due=due)
        try:
            store.ping()
        except BaseException:
            engine.dispose()
            raise
        return store

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

    get_job = reads(jobs.get_job)

    def list_jobs(
        self, *, where: jobs.JobFilter = jobs.EVERY_JOB, limit: int | None = 50
    ) -> list[Job]:
        return self.read(lambda conn: jobs.list_jobs(conn, where, limit=limit))

    list_attempts = reads(jobs.list_attempts)

    def count_due(self, *, now: int) -> int:
        return self.read(
            lambda conn: jobs.count_due(conn, now=now, dispatch_statuses=self.due.statuses)
        )

    next_due_at = reads(jobs.next_due_at)

    # -- the daemon's writes ---------------------------------------------------------

    def claim_due_jobs(
        self,
        *,
        owner: str,
        now: int | Callable[[], int],
        lease_ms: int,
        limit: int,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs. Given a clock (`now` as a callable), it is read
        inside the claim's transaction (on SQLite once it holds the write lock), so the lease
        runs from the claim, however long it waited for the lock or a retry."""
        clock: Callable[[], int] = now if callable(now) else (lambda: now)
        backend = self.backend

        def claim_rows(conn: Connection) -> list[RowMapping]:
            return claim.claim_due_rows(
                conn,
                backend,
                self.due.statuses,
                owner=owner,
                clock=clock,
                lease_ms=lease_ms,
                limit=limit,
            )

        def claimed(conn: Connection, rows: list[RowMapping]) -> list[ClaimedJob]:
            jobs = [Job.from_row(r) for r in rows]
            return claim.load_targets(conn, jobs, backend=backend)

        if not backend.serial_writes:
            return self.write(lambda conn: claimed(conn, claim_rows(conn)))
        # This process's writers queue on one lock: the claim holds it for its statement
        # alone; its rows are decoded, and its targets read, after the commit (claim.py).
        rows = self.write(claim_rows)
        return self.read(lambda conn: claimed(conn, rows)) if rows else []

    def begin_sends(
        self, *, owner: str, held: Sequence[tuple[str, int]], now: int, lease_ms: int
    ) -> list[bool]:
        """Spend each held job's attempt right before its send, in one transaction; False
        for a job no longer ours: it must not be sent."""
        if not held:
            return []
        return self.write_statement(
            lambda conn: leases.begin_sends(
                conn, backend=self.backend, owner=owner, held=held, until=now + lease_ms
            )
        )

    def begin_send(
        self, *, owner: str, job_id: str, lease_token: int, now: int, lease_ms: int
    ) -> bool:
        [ok] = self.begin_sends(
            owner=owner, held=[(job_id, lease_token)], now=now, lease_ms=lease_ms
        )
        return ok

    def record_results(
        self, results: Sequence[AttemptResult], *, now: int, writer: str | None = None
    ) -> list[bool]:
        """`record_batch` with no marks to forget, saying per result only whether its fence
        held."""
        return self.record_batch(results, now=now, writer=writer).applied

    def record_batch(
        self,
        results: Sequence[AttemptResult],
        *,
        now: int,
        writer: str | None = None,
        logged: Sequence[str] = (),
    ) -> Recorded:
        """Write each result whose lease still holds (with its unlogged mark for `writer`,
        by default the attempt's own owner) and forget the marks of `logged` attempts, in
        one transaction."""
        if not results and not logged:
            return Recorded([], frozenset())
        prepared = attempts.prepare_results(results)
        return self.write(
            lambda conn: attempts.record_results(
                conn, prepared, backend=self.backend, now=now, writer=writer, logged=logged
            )
        )

    def mark_logged(self, attempt_ids: Sequence[str]) -> None:
        if attempt_ids:
            self.write(lambda conn: attempts.mark_logged(conn, self.backend, attempt_ids))

    find_unlogged = reads(unlogged.find_unlogged)

    def extend_leases(
        self, *, owner: str, held: Sequence[tuple[str, int]], now: int, lease_ms: int
    ) -> list[str]:
        if not held:
            return []
        return self.write_statement(
            lambda conn: leases.extend_leases(
                conn, backend=self.backend, owner=owner, held=held, until=now + lease_ms
            )
        )

    def release_jobs(self, *, owner: str, held: Sequence[tuple[str, int]], now: int) -> list[bool]:
        if not held:
            return []
        return self.write(lambda conn: leases.release_jobs(conn, owner=owner, held=held, now=now))

    find_abandoned = reads(leases.find_abandoned)
    find_rewound = reads(leases.find_rewound)
    delivered_attempts = reads(leases.delivered_attempts)

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

    held_leases = reads(leases.held_leases)

    # -- the daemon registry ---------------------------------------------------------

    register_daemon = writes(daemons.register_daemon)

    def heartbeat_daemon(self, *, owner: str, now: int, status: str | None = None) -> bool:
        return self.write(
            lambda conn: daemons.heartbeat_daemon(conn, owner=owner, now=now, status=status)
        )

    unregister_daemon = writes(daemons.unregister_daemon)

    def prune_daemons(self, *, stale_before: int) -> int:
        """Forget registry rows whose heartbeat is older than `stale_before`."""
        return self.write(lambda conn: daemons.prune_daemons(conn, stale_before=stale_before))

    list_daemons = reads(daemons.list_daemons)

    # -- rows that do not fit (store/decode.py, store/sweep.py) ------------------------

    def sweep_malformed(
        self, *, now: int, owner: str, log_path: str | None = None, limit: int = 100
    ) -> list[sweep.Swept]:
        """End pending jobs no claim can select (a `next_attempt_at` that is not a time)
        failed/malformed, up to `limit` of them."""
        if not self.read(sweep.any_unclaimable):
            return []
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
