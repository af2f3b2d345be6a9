"""Rescue: running jobs whose lease expired or whose owner stopped heartbeating.

Each gets an `abandoned` attempt row and goes back to pending with backoff, or to
`failed/abandoned` when its attempts are used up. The write is fenced by the lease token
the rescuer saw: if the owner finishes the job at the same moment, exactly one of the two
writes matches and the other changes nothing.
"""

from __future__ import annotations

import random
import uuid

import structlog

from renewald.clock import iso_utc
from renewald.daemon.backoff import RetryPolicy, decide
from renewald.logging import JobLog
from renewald.store import AttemptResult, Job, Store

_log = structlog.get_logger("renewald.rescue")


class Rescuer:
    def __init__(
        self,
        *,
        store: Store,
        job_log: JobLog,
        policy: RetryPolicy,
        owner: str,
        stale_after_ms: int,
        rand: random.Random | None = None,
        limit: int = 100,
    ) -> None:
        self.store = store
        self.job_log = job_log
        self.policy = policy
        self.owner = owner
        self.stale_after_ms = stale_after_ms
        self._rand = rand or random.Random()
        self.limit = limit

    def results_for(self, found: list[Job], *, now: int) -> list[AttemptResult]:
        results = []
        for job in found:
            if job.lease_expires_at is not None and job.lease_expires_at <= now:
                why = f"lease of {job.lease_owner} expired at {iso_utc(job.lease_expires_at)}"
            else:
                why = f"owner {job.lease_owner} stopped heartbeating"
            decision = decide(
                self.policy,
                outcome="abandoned",
                attempt_no=job.attempt_count,
                max_attempts=job.max_attempts,
                now=now,
                deadline_at=job.deadline_at,
                rand=self._rand,
            )
            results.append(
                AttemptResult(
                    attempt_id=uuid.uuid4().hex,
                    job_id=job.job_id,
                    attempt_no=job.attempt_count,
                    lease_owner=job.lease_owner or "",
                    lease_token=job.lease_token,
                    adapter=job.target_kind,
                    target=None,
                    started_at=job.started_at or job.last_attempt_at or now,
                    finished_at=now,
                    outcome="abandoned",
                    status=decision.status,
                    next_attempt_at=decision.next_attempt_at,
                    terminal_reason=decision.terminal_reason,
                    error_class="Abandoned",
                    error_message=why,
                    decision=decision.decision,
                    decision_reason=decision.reason,
                    log_path=self.job_log.path_for(now),
                    local_conversation_id=job.local_conversation_id,
                )
            )
        return results

    def _ours_and_leased(self, job: Job, now: int) -> bool:
        """A job of this very process whose lease still holds is alive, however stale our
        own registry row looks (a database outage stops heartbeats, not deliveries): taking
        it back would deliver it twice. Its lease, once expired, decides as for anyone."""
        return (
            job.lease_owner == self.owner
            and job.lease_expires_at is not None
            and job.lease_expires_at > now
        )

    def run_once(self, now: int) -> int:
        """Rescue what is abandoned now; returns how many jobs were taken back."""
        found = [
            job
            for job in self.store.find_abandoned(
                now=now, stale_before=now - self.stale_after_ms, limit=self.limit
            )
            if not self._ours_and_leased(job, now)
        ]
        if not found:
            return 0
        results = self.results_for(found, now=now)
        applied = self.store.record_results(results, now=now)
        rescued = 0
        for result, ok in zip(results, applied, strict=True):
            if not ok:
                continue  # its owner finished it first: the fence let exactly one write in
            rescued += 1
            self.job_log.log(
                "job.rescued",
                now_ms=now,
                job_id=result.job_id,
                attempt_id=result.attempt_id,
                attempt=result.attempt_no,
                conversation=result.local_conversation_id,
                outcome="abandoned",
                status=result.status,
                next_attempt_at=result.next_attempt_at,
                reason=result.error_message,
                decision=result.decision_reason,
                owner=self.owner,
                previous_owner=result.lease_owner,
            )
            _log.warning(
                "job.rescued",
                job_id=result.job_id,
                previous_owner=result.lease_owner,
                status=result.status,
                reason=result.error_message,
            )
        self.job_log.flush()
        return rescued
