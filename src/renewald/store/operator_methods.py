"""The store's operator methods: `renewald show/jobs/retry/cancel/conversations/stats/prune`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from sqlalchemy import Connection

import renewald.store.facts as facts_sql
import renewald.store.stats as stats_sql
from renewald.store import (
    conversations,
    daemons,
    explain,
    jobs,
    ops,
    retention,
)
from renewald.store.models import ClaimedJob
from renewald.store.passthrough import reads
from renewald.store.transactions import T, Transactions


class OperatorMethods(Transactions):
    """Explain, retry, cancel, pause conversations, count and prune (ops.py and friends)."""

    def explain_job(
        self,
        job_id: str,
        *,
        now: int,
        stale_after_ms: int,
        target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
        gone: Callable[[daemons.DaemonRow], bool] | None = None,
    ) -> tuple[facts_sql.JobFacts, explain.Explanation] | None:
        """The job, the rows that decide whether it is due, and the rule that applies.
        `gone` tells a registered daemon whose process is known not to run any more."""
        facts = self.read(
            lambda conn: facts_sql.job_facts(
                conn, job_id, backend=self.backend, now=now, target_of=target_of
            )
        )
        if facts is None:
            return None
        facts = facts.with_gone_owners(gone)
        why = explain.explain(
            facts,
            now=now,
            dispatch_statuses=self.due.statuses,
            stale_before=now - stale_after_ms,
        )
        return facts, why

    def list_jobs_explained(
        self,
        *,
        now: int,
        stale_after_ms: int,
        target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
        where: jobs.JobFilter = jobs.EVERY_JOB,
        limit: int | None = 50,
        gone: Callable[[daemons.DaemonRow], bool] | None = None,
    ) -> tuple[list[tuple[facts_sql.JobFacts, explain.Explanation]], int]:
        """`list_jobs` with the rule that applies to each job (the same `explain` as
        `explain_job`), and how many jobs match in all; one transaction."""

        def tx(conn: Connection) -> tuple[list[facts_sql.JobFacts], int]:
            found = jobs.list_jobs(conn, where, limit=limit)
            total = len(found)
            if limit is not None and total >= limit:
                total = jobs.count_jobs(conn, where)
            found_facts = facts_sql.jobs_facts(
                conn, found, backend=self.backend, now=now, target_of=target_of
            )
            return found_facts, total

        all_facts, total = self.read(tx)
        all_facts = [f.with_gone_owners(gone) for f in all_facts]
        stale_before = now - stale_after_ms
        explained = [
            (
                facts,
                explain.explain(
                    facts,
                    now=now,
                    dispatch_statuses=self.due.statuses,
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
        return self._operator_write(ops.retry_job, job_id, now, action, attempt_id)

    def _operator_write(
        self,
        change: Callable[..., T],
        job_id: str,
        now: int,
        action: ops.OperatorAction,
        attempt_id: str | None,
    ) -> T:
        aid = attempt_id or uuid.uuid4().hex
        return self.write(
            lambda conn: change(conn, job_id=job_id, attempt_id=aid, now=now, action=action)
        )

    def failed_job_ids(
        self, *, where: ops.FailedJobFilter = ops.EVERY_FAILED_JOB, limit: int | None = None
    ) -> list[str]:
        return self.read(lambda conn: ops.failed_job_ids(conn, where, limit=limit))

    def retry_failed(
        self,
        *,
        now: int,
        action: ops.OperatorAction,
        where: ops.FailedJobFilter = ops.EVERY_FAILED_JOB,
        batch: int = 200,
    ) -> list[ops.Retried]:
        """Retry every failed job `where` selects, `batch` jobs per short transaction."""
        done: list[ops.Retried] = []
        after: str | None = None
        while True:

            def tx(conn: Connection, after: str | None = after) -> tuple[list[ops.Retried], str]:
                ids = ops.failed_job_ids(conn, where, limit=batch, after_id=after)
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
        return self._operator_write(ops.cancel_job, job_id, now, action, attempt_id)

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
        overdue_before: int,
        failures_since: int,
    ) -> stats_sql.Stats:
        return self.read(
            lambda conn: stats_sql.stats(
                conn,
                now=now,
                dispatch_statuses=self.due.statuses,
                overdue_before=overdue_before,
                failures_since=failures_since,
            )
        )

    def gauges(self, *, now: int) -> stats_sql.Gauges:
        return self.read(
            lambda conn: stats_sql.gauges(conn, now=now, dispatch_statuses=self.due.statuses)
        )

    paused_targets = reads(stats_sql.paused_targets)
    count_prunable = reads(retention.count_prunable)

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
