"""Plain rows the store hands out: no ORM, no lazy loading, safe to pass between threads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import RowMapping

from renewald.controls import escape_controls, escape_optional
from renewald.store.decode import job_values, link_values

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    job_id: str
    local_conversation_id: str
    message_id: str
    status: str
    payload: str
    payload_kind: str
    target_snapshot: str | None
    attempt_count: int
    max_attempts: int
    next_attempt_at: int | None
    last_attempt_at: int | None
    last_error: str | None
    log_path: str | None
    started_at: int | None
    finished_at: int | None
    created_at: int
    updated_at: int
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    lease_token: int = 0
    terminal_reason: str | None = None
    deadline_at: int | None = None
    target_kind: str | None = None
    send_token: int | None = None
    delivered_at: int | None = None
    # What in the stored row did not fit its declared type (store/decode.py): a job with
    # problems is never delivered, it ends failed/malformed.
    problems: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: RowMapping) -> Job:
        values, problems = job_values(row)
        # Not through __init__: a frozen dataclass's sets each of its 26 fields with
        # object.__setattr__, half of what decoding a claimed row cost (9 of 17 us).
        # job_values gives every field, checked (tests/unit/test_decode.py).
        job = object.__new__(cls)
        job.__dict__.update(values, problems=problems)
        return job

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Link:
    """The conversation's active link: where its messages go."""

    platform: str | None
    remote_conversation_id: str | None
    page_url: str | None
    client_id: str | None
    target_kind: str | None
    target_id: str | None
    target_payload: str | None
    problems: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: RowMapping) -> Link:
        values, problems = link_values(row)
        return cls(**values, problems=problems)


@dataclass(frozen=True)
class ClaimedJob:
    """A job this daemon now holds: the row as claimed, its conversation and its link."""

    job: Job
    platform: str | None
    link: Link | None
    conversation_problems: tuple[str, ...] = ()

    @property
    def lease_token(self) -> int:
        return self.job.lease_token

    @property
    def problems(self) -> tuple[str, ...]:
        """Everything this job's delivery would read that did not fit its declared type."""
        link = self.link.problems if self.link is not None else ()
        return self.job.problems + self.conversation_problems + link


@dataclass(frozen=True)
class Attempt:
    attempt_id: str
    job_id: str
    attempt_no: int
    lease_owner: str | None
    lease_token: int | None
    adapter: str | None
    target: str | None
    started_at: int
    finished_at: int
    duration_ms: int | None
    outcome: str
    error_class: str | None
    error_message: str | None
    response_summary: str | None
    next_attempt_at: int | None
    decision: str | None
    decision_reason: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Attempt:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Recorded:
    """What recording a batch of results did: per result, whether its fence held
    (`applied`), and the jobs an operator had cancelled while they ran (`cancelled`:
    they ended failed/cancelled whatever the attempt's outcome)."""

    applied: list[bool]
    cancelled: frozenset[str]


@dataclass(frozen=True)
class Decision:
    """What becomes of a job after an attempt (`daemon/backoff.py` decides it).

    `status` is the job's next status (done, pending, failed); `decision` and `reason`
    go to the attempt row and the log ("retry", "backoff=2^2*30s").
    """

    status: str
    next_attempt_at: int | None
    terminal_reason: str | None
    decision: str
    reason: str


MALFORMED = "malformed"
# A row that does not fit ends failed/malformed, its attempt never sent (DESIGN §2).
ENDED_MALFORMED = Decision("failed", None, MALFORMED, "failed", MALFORMED)


class _Through(Generic[T]):
    """A read-only attribute that is another object's: `_Through[str]("job.job_id")`.

    The value is kept in the instance on first read (the recorder reads these for every
    result), which is safe because both objects it reads through are frozen."""

    def __init__(self, path: str) -> None:
        self._get = attrgetter(path)
        self._name = path

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: object, owner: type | None = None) -> T:
        value = obj.__dict__[self._name] = self._get(obj)
        return cast(T, value)


@dataclass(frozen=True)
class AttemptResult:
    """One finished attempt of `job` (as claimed) and what it does to it, `decided`:
    written together or not at all, fenced by `lease_owner` and the job's lease token.

    `status` is the job's next status: 'done', 'pending' (retry at `next_attempt_at`)
    or 'failed' (with `terminal_reason`). `refund_attempt` gives the attempt back to the
    job's budget (a deferral that never reached the target, such as an open breaker).
    """

    job: Job
    decided: Decision
    attempt_id: str
    lease_owner: str
    outcome: str
    started_at: int
    finished_at: int
    adapter: str | None = None
    target: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    response_summary: str | None = None
    log_path: str | None = None
    refund_attempt: bool = False
    cooldown_until: int | None = None

    def __post_init__(self) -> None:
        # Errors and summaries quote what targets said and what rows held: stored on one
        # line, so no stored text can forge a line of `show` or of a log.
        for name in ("error_message", "response_summary", "target"):
            object.__setattr__(self, name, escape_optional(getattr(self, name)))
        reason = escape_controls(self.decided.reason)
        if reason != self.decided.reason:
            object.__setattr__(self, "decided", dataclasses.replace(self.decided, reason=reason))

    @classmethod
    def malformed(
        cls,
        job: Job,
        now: int,
        error: str,
        *,
        attempt_id: str,
        owner: str,
        error_class: str = "MalformedRow",
        log_path: str | None = None,
        refund: bool = False,
    ) -> AttemptResult:
        """`job` ended failed/malformed at `now`, never sent: its row (or its handling)
        did not fit; `error` names what."""
        return cls(
            job,
            ENDED_MALFORMED,
            attempt_id,
            owner,
            MALFORMED,
            now,
            now,
            error_class=error_class,
            error_message=error,
            log_path=log_path,
            refund_attempt=refund,
        )

    # Read through to the job as claimed and to the decision: the row is written from these.
    job_id = _Through[str]("job.job_id")
    attempt_no = _Through[int]("job.attempt_count")
    lease_token = _Through[int]("job.lease_token")
    local_conversation_id = _Through[str]("job.local_conversation_id")
    status = _Through[str]("decided.status")
    next_attempt_at = _Through[int | None]("decided.next_attempt_at")
    terminal_reason = _Through[str | None]("decided.terminal_reason")
    decision = _Through[str]("decided.decision")
    decision_reason = _Through[str]("decided.reason")


@dataclass(frozen=True)
class NewJob:
    job_id: str
    local_conversation_id: str
    message_id: str
    payload: str
    payload_kind: str = "text"
    target_snapshot: str | None = None
    target_kind: str | None = None
    max_attempts: int = 3
    next_attempt_at: int | None = None
    deadline_at: int | None = None


@dataclass(frozen=True)
class Schedule:
    """A recurring renewal (`renewal_schedules`): each fire time becomes one job."""

    schedule_id: str
    local_conversation_id: str
    trigger_kind: str  # 'every' | 'cron'
    every_ms: int | None
    cron: str | None
    timezone: str
    payload: str
    payload_kind: str
    target_kind: str | None
    target_snapshot: str | None
    max_attempts: int
    jitter_ms: int
    misfire: str  # 'coalesce' | 'skip' | 'all'
    misfire_grace_ms: int | None
    allow_overlap: bool
    enabled: bool
    next_fire_at: int | None
    last_fire_at: int | None
    last_job_id: str | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: RowMapping) -> Schedule:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["allow_overlap"] = bool(values["allow_overlap"])
        values["enabled"] = bool(values["enabled"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FireOutcome:
    """What firing one schedule did.

    `status` is 'fired' (jobs were created, or already existed for those fire times),
    'skipped' (a gate held: the fires were recorded as passed, no job was made), or
    'raced' (another daemon advanced the schedule first: nothing was written).
    """

    status: str
    created: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class TargetPause:
    """A delivery target's breaker row (`renewal_target_pauses`), shared by every daemon.

    `failures` counts consecutive transient failures; `paused_until` is set while the
    breaker is open (or a probe holds the target), `opened_at` when it last opened.
    A target with no row is healthy.
    """

    target_key: str
    adapter: str | None
    failures: int
    paused_until: int | None
    opened_at: int | None
    last_error: str | None
    updated_at: int

    @classmethod
    def from_row(cls, row: RowMapping) -> TargetPause:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
