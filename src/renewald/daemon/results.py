"""The one way an attempt becomes an `AttemptResult`: the job, the decision, what happened.

The dispatcher (delivered, deferred, expired, malformed) and the rescuer (abandoned)
build every result here, so the columns a result carries are set in one place.
"""

from __future__ import annotations

from renewald.daemon.backoff import Decision
from renewald.store import AttemptResult, Job


def attempt_result(
    job: Job,
    decision: Decision,
    *,
    attempt_id: str,
    lease_owner: str,
    outcome: str,
    adapter: str | None,
    target: str | None,
    started: int,
    finished: int,
    log_path: str | None,
    error_class: str | None = None,
    error: str | None = None,
    summary: str | None = None,
    refund: bool = False,
    cooldown_until: int | None = None,
) -> AttemptResult:
    """The result of attempt `job.attempt_count` of `job`, fenced by `lease_owner` and the
    job's lease token; `refund` hands the claim's attempt back (nothing was sent)."""
    return AttemptResult(
        attempt_id=attempt_id,
        job_id=job.job_id,
        attempt_no=job.attempt_count,
        lease_owner=lease_owner,
        lease_token=job.lease_token,
        adapter=adapter,
        target=target,
        started_at=started,
        finished_at=finished,
        outcome=outcome,
        status=decision.status,
        next_attempt_at=decision.next_attempt_at,
        terminal_reason=decision.terminal_reason,
        error_class=error_class,
        error_message=error,
        response_summary=summary,
        decision=decision.decision,
        decision_reason=decision.reason,
        log_path=log_path,
        refund_attempt=refund,
        cooldown_until=cooldown_until,
        local_conversation_id=job.local_conversation_id,
    )
