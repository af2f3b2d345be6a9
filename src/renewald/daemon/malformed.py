"""Jobs whose rows do not fit, and jobs whose handling failed: ended, never fatal.

DESIGN §2: rows are untrusted, and one job's data never stops a duty. A claimed job whose
row (or conversation, or link) has problems ends `failed/malformed` before any delivery,
its attempt handed back; an unexpected error while handling one job ends that job the
same way, logged with its id, and the duty goes on.
"""

from __future__ import annotations

import structlog

from renewald.controls import escape_controls
from renewald.daemon.results import attempt_keys_of
from renewald.ids import new_attempt_id
from renewald.logging import JobLog, emit
from renewald.store import AttemptResult, ClaimedJob, Store
from renewald.store.decode import malformed_error
from renewald.store.models import MALFORMED
from renewald.store.sweep import Swept

_log = structlog.get_logger("renewald.daemon")


def malformed_result(
    claimed: ClaimedJob,
    *,
    owner: str,
    now: int,
    log_path: str | None,
    problems: tuple[str, ...] | None = None,
    error_class: str = "MalformedRow",
    attempt_id: str | None = None,
) -> AttemptResult:
    """The result that ends a claimed job failed/malformed without sending it."""
    return AttemptResult.malformed(
        claimed.job,
        now,
        malformed_error(problems if problems is not None else claimed.problems),
        attempt_id=attempt_id or new_attempt_id(),
        owner=owner,
        error_class=error_class,
        log_path=log_path,
        refund=True,
    )


def handling_failed(
    claimed: ClaimedJob, exc: BaseException, *, owner: str, now: int, job_log: JobLog
) -> AttemptResult:
    """Log an unexpected error in one job's handling; the result that ends that job."""
    error = escape_controls(f"{type(exc).__name__}: {exc}")
    emit(
        job_log,
        "job.handling_failed",
        now_ms=now,
        level="error",
        exc_info=exc,
        job_id=claimed.job.job_id,
        conversation=claimed.job.local_conversation_id,
        owner=owner,
        error=error,
    )
    return malformed_result(
        claimed,
        owner=owner,
        now=now,
        log_path=job_log.path_for(now),
        problems=(f"handling the job raised {error}",),
        error_class="HandlingFailed",
    )


def sweep(*, store: Store, job_log: JobLog, owner: str, now: int) -> int:
    """End pending jobs no claim can select (store/sweep.py); one log line each."""
    swept = store.sweep_malformed(now=now, owner=owner, log_path=job_log.path_for(now))
    log_ended(swept, job_log=job_log, owner=owner, now=now)
    return len(swept)


def log_ended(swept: list[Swept], *, job_log: JobLog, owner: str, now: int) -> None:
    """One `job.malformed` line per job a sweep or rescue ended failed/malformed."""
    for s in swept:
        emit(
            job_log,
            "job.malformed",
            now_ms=now,
            level="warning",
            **attempt_keys_of(s.job_id, s.attempt_id, s.attempt_no, s.conversation),
            outcome=MALFORMED,
            status="failed",
            decision="failed",
            reason=MALFORMED,
            error=s.error,
            owner=owner,
        )
    if swept:
        job_log.flush()
