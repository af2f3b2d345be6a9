"""The one way an attempt becomes an `AttemptResult`: the job, the decision, what happened.

The dispatcher (delivered, deferred, expired, malformed) and the rescuer (abandoned)
build every result here, so the columns a result carries are set in one place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from renewald.adapters import Outcome
from renewald.clock import iso_utc
from renewald.daemon.backoff import DEADLINE_PASSED, RetryPolicy, decide, defer
from renewald.ids import new_attempt_id
from renewald.logging import JobLog
from renewald.store import AttemptResult, ClaimedJob, Decision, Job


@dataclass(frozen=True)
class Attempt:
    """One attempt of a claimed job, as its result names it: the adapter kind and the
    (redacted) target it is for, when known so far."""

    claimed: ClaimedJob
    attempt_id: str
    kind: str | None
    target_text: str | None

    def log_keys(self) -> dict[str, Any]:
        job = self.claimed.job
        return attempt_keys_of(
            job.job_id, self.attempt_id, job.attempt_count, job.local_conversation_id
        )


class ResultMaker:
    """What an attempt makes of a job, for one daemon: its owner, retry policy, cooldown
    and job log. Every method returns the result; none writes anything."""

    def __init__(
        self,
        *,
        owner: str,
        policy: RetryPolicy,
        job_log: JobLog,
        cooldown_ms: int = 0,
        rand: random.Random | None = None,
    ) -> None:
        self.owner = owner
        self.policy = policy
        self.job_log = job_log
        self.cooldown_ms = cooldown_ms
        self._rand = rand or random.Random()

    def sent(
        self, attempt: Attempt, started: int, finished: int, outcome: Outcome
    ) -> AttemptResult:
        """What an attempt's outcome makes of the job (DESIGN §2, §4)."""
        decision = self._decide(
            attempt.claimed.job, outcome.kind.value, finished, outcome.after, outcome.reason
        )
        delivered = decision.status == "done"
        cooldown = self.cooldown_ms
        return self._ours(
            attempt,
            decision,
            outcome.kind.value,
            started,
            finished,
            error_class=None if delivered else outcome.error_class,
            error_message=None if delivered else outcome.reason,
            response_summary=outcome.summary,
            cooldown_until=finished + cooldown if delivered and cooldown > 0 else None,
        )

    def abandoned(self, job: Job, now: int) -> AttemptResult:
        """The attempt of a job whose owner is gone (the rescuer's): its lease expired, or
        it carries none. The attempt is handed back unless its send had begun."""
        if job.lease_expires_at is not None and job.lease_expires_at <= now:
            why = f"lease of {job.lease_owner} expired at {iso_utc(job.lease_expires_at)}"
        else:
            why = f"the row held by {job.lease_owner} carries no lease expiry"
        return AttemptResult(
            job,
            self._decide(job, "abandoned", now),
            new_attempt_id(),
            job.lease_owner or "",
            "abandoned",
            job.started_at or job.last_attempt_at or now,
            now,
            adapter=job.target_kind,
            log_path=self.job_log.path_for(now),
            error_class="Abandoned",
            error_message=why,
            refund_attempt=job.send_token != job.lease_token,
        )

    def _decide(
        self,
        job: Job,
        outcome: str,
        now: int,
        after: float | None = None,
        reason: str | None = None,
    ) -> Decision:
        """`backoff.decide` for this attempt of `job`, on this daemon's policy."""
        return decide(
            self.policy,
            outcome,
            job.attempt_count,
            job.max_attempts,
            now,
            after=after,
            reason=reason,
            deadline_at=job.deadline_at,
            rand=self._rand,
        )

    def expired(self, attempt: Attempt, now: int, decision: Decision) -> AttemptResult:
        """The job's deadline passed before it could be tried: ended, never sent."""
        return self._untried(
            attempt, decision, now, "expired", error_class="DeadlinePassed", error=DEADLINE_PASSED
        )

    def deferred(
        self,
        attempt: Attempt,
        *,
        now: int,
        until: int,
        reason: str,
        error_class: str,
        error: str | None,
    ) -> AttemptResult:
        """Put a job back, untried, to `until` (`backoff.defer`); the claim's attempt is
        handed back. The attempt row says why (outcome `deferred`); no connection was made."""
        decision = defer(until=until, reason=reason, deadline_at=attempt.claimed.job.deadline_at)
        return self._untried(
            attempt, decision, now, "deferred", error_class=error_class, error=error, refund=True
        )

    def _untried(
        self,
        attempt: Attempt,
        decision: Decision,
        now: int,
        outcome: str,
        *,
        error_class: str,
        error: str | None,
        refund: bool = False,
    ) -> AttemptResult:
        """The result of an attempt that ended at `now` without a send."""
        return self._ours(
            attempt,
            decision,
            outcome,
            now,
            now,
            error_class=error_class,
            error_message=error,
            refund_attempt=refund,
        )

    def _ours(
        self,
        attempt: Attempt,
        decision: Decision,
        outcome: str,
        started: int,
        finished: int,
        **rest: Any,
    ) -> AttemptResult:
        """The result of an attempt of this daemon, logged at `finished`; `rest` are the
        `AttemptResult` fields that differ by outcome."""
        return AttemptResult(
            attempt.claimed.job,
            decision,
            attempt.attempt_id,
            self.owner,
            outcome,
            started,
            finished,
            adapter=attempt.kind,
            target=attempt.target_text,
            log_path=self.job_log.path_for(finished),
            **rest,
        )


def attempt_keys_of(
    job_id: str, attempt_id: str, attempt: int, conversation: str | None
) -> dict[str, Any]:
    """The keys every event about one attempt starts with (docs/operations.md)."""
    return {
        "job_id": job_id,
        "attempt_id": attempt_id,
        "attempt": attempt,
        "conversation": conversation,
    }


def attempt_keys(r: AttemptResult) -> dict[str, Any]:
    return attempt_keys_of(r.job_id, r.attempt_id, r.attempt_no, r.local_conversation_id)
