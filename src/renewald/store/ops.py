"""What operators run: explain a job, retry, cancel, pause a conversation, stats, prune.

Every function takes a Connection and, where time matters, an explicit `now`; the Store
wraps each in one transaction (prune and bulk retry: one short transaction per batch).
State changes are fenced like the daemon's own (DESIGN §2): they match the status (and,
for a running job, the lease token) they were decided on, and report whether they did.

`explain` is the due rule of `jobs.due_condition` told as sentences: it reads the same
rows the claim reads and names the first rule that holds the job back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from renewald.clock import iso_utc
from renewald.store.attempts import CANCEL_REASON, CANCELLED
from renewald.store.claim import load_targets
from renewald.store.daemons import DaemonRow
from renewald.store.decode import conversation_values, epoch_ms_or_none
from renewald.store.jobs import dispatch_allowed, due_condition
from renewald.store.models import ClaimedJob, Job
from renewald.store.schema import (
    local_conversations,
    renewal_job_attempts,
    renewal_jobs,
    renewal_target_pauses,
    renewald_daemons,
)

jobs = renewal_jobs
convs = local_conversations
attempts = renewal_job_attempts
pauses = renewal_target_pauses

FINISHED = ("done", "failed")
# How each terminal reason reads in a table cell.
ENDED = {
    "delivered": "delivered",
    "exhausted": "attempts used up",
    "permanent": "permanent failure",
    "expired": "past its deadline",
    "cancelled": "cancelled by an operator",
    "abandoned": "abandoned",
    "malformed": "the row does not fit",
}
RETRY_REASON = "retried by operator"


# -- rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    local_conversation_id: str
    platform: str
    automation_status: str
    cooldown_until: int | None
    paused_at: int | None
    updated_at: int


@dataclass(frozen=True)
class ConversationSummary:
    conversation: Conversation
    pending: int
    running: int

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self.conversation, f.name) for f in fields(Conversation)}
        data.update(pending=self.pending, running=self.running)
        return data


@dataclass(frozen=True)
class TargetPause:
    target_key: str
    adapter: str | None
    failures: int
    paused_until: int | None
    opened_at: int | None
    last_error: str | None
    updated_at: int

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _conversation(row: Any) -> Conversation:
    values, _problems = conversation_values(row)
    return Conversation(**values)


def _pause(row: Any) -> TargetPause:
    return TargetPause(**{f.name: row[f.name] for f in fields(TargetPause)})


# -- explain -------------------------------------------------------------------------


UNTIL = "{until}"


def _summary(rule: str, brief: str, until: int | None, when: Callable[[int], str]) -> str:
    if not brief:
        return rule.replace("_", " ")
    if UNTIL not in brief:
        return brief
    return brief.replace(UNTIL, when(until) if until is not None else "-")


@dataclass(frozen=True)
class Hold:
    """One rule that holds a job back (or says what became of it).

    `detail` is the full sentence (`show`); `brief` the few words of a table cell (`jobs`'
    WHY column), where `{until}` stands for `until` as the caller shows times."""

    rule: str
    detail: str
    until: int | None = None
    brief: str = ""

    def summary(self, when: Callable[[int], str] = iso_utc) -> str:
        return _summary(self.rule, self.brief, self.until, when)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "detail": self.detail,
            "until": self.until,
            "brief": self.summary(),
        }


@dataclass(frozen=True)
class Explanation:
    """Why a job is (not) running. `state` is due | waiting | running | finished; `rule` the
    first rule that applies; `also` the other rules that would still hold it back."""

    state: str
    rule: str
    detail: str
    until: int | None = None
    also: tuple[Hold, ...] = ()
    brief: str = ""

    def summary(self, when: Callable[[int], str] = iso_utc) -> str:
        """The rule in a few words, `when` rendering its time ("due in 4m")."""
        return _summary(self.rule, self.brief, self.until, when)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "rule": self.rule,
            "detail": self.detail,
            "until": self.until,
            "brief": self.summary(),
            "also": [h.as_dict() for h in self.also],
        }


@dataclass(frozen=True)
class JobFacts:
    """Everything the due rule looks at for one job, read in one transaction."""

    job: Job
    conversation: Conversation | None
    target_kind: str | None
    target_key: str | None
    busy: Job | None  # another running job of the same conversation
    daemons: dict[str, DaemonRow] = field(default_factory=dict)  # every registered daemon
    pauses: tuple[TargetPause, ...] = ()
    # Owners whose process is known to be gone though their heartbeat is still fresh: the
    # caller checks the pids of daemons on its own host (`with_gone_owners`).
    gone_owners: frozenset[str] = frozenset()

    def with_gone_owners(self, gone: Callable[[DaemonRow], bool] | None) -> JobFacts:
        if gone is None:
            return self
        found = frozenset(o for o, d in self.daemons.items() if gone(d))
        return replace(self, gone_owners=found) if found else self


def job_facts(
    conn: Connection,
    job_id: str,
    *,
    now: int,
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
) -> JobFacts | None:
    """The job and the rows that decide whether it is due.

    `target_of` maps the job (with its conversation's active link, as a claim would see
    it) to (target kind, breaker key); the key's format belongs to the adapter. Without a
    key, the breaker pauses of the whole adapter kind are returned instead.
    """
    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    if row is None:
        return None
    [facts] = jobs_facts(conn, [Job.from_row(row)], now=now, target_of=target_of)
    return facts


# Conversation ids per IN list: far below SQLite's limit on bound parameters.
_CHUNK = 500


def jobs_facts(
    conn: Connection,
    found: Sequence[Job],
    *,
    now: int,
    target_of: Callable[[ClaimedJob], tuple[str | None, str | None]] | None = None,
) -> list[JobFacts]:
    """`job_facts` for each of `found`, in that order, read with a few queries per 500
    jobs rather than per job (`renewald jobs` explains every row it lists)."""
    # The registry (one row per running daemon) and the open breaker pauses (one row per
    # failing target) are small enough to read whole.
    registry = {
        r["owner_id"]: DaemonRow(**dict(r))
        for r in conn.execute(select(renewald_daemons)).mappings()
    }
    open_pauses = [
        _pause(r)
        for r in conn.execute(
            select(pauses)
            .where(pauses.c.paused_until > now)
            .order_by(pauses.c.paused_until.desc(), pauses.c.target_key)
        ).mappings()
    ]
    out: list[JobFacts] = []
    for start in range(0, len(found), _CHUNK):
        chunk = found[start : start + _CHUNK]
        ids = sorted({j.local_conversation_id for j in chunk})
        conversations = {
            r["local_conversation_id"]: _conversation(r)
            for r in conn.execute(
                select(convs).where(convs.c.local_conversation_id.in_(ids))
            ).mappings()
        }
        running: dict[str, list[Job]] = {}
        for r in conn.execute(
            select(jobs)
            .where(jobs.c.local_conversation_id.in_(ids), jobs.c.status == "running")
            .order_by(jobs.c.started_at, jobs.c.job_id)
        ).mappings():
            other = Job.from_row(r)
            running.setdefault(other.local_conversation_id, []).append(other)
        claimed = {c.job.job_id: c for c in load_targets(conn, chunk)}
        for job in chunk:
            c = claimed[job.job_id]
            kind, key = target_of(c) if target_of else (job.target_kind, None)
            if kind is None and c.link is not None:
                kind = c.link.target_kind
            if key is not None:
                held = [p for p in open_pauses if p.target_key == key]
            elif kind is not None:
                held = [p for p in open_pauses if p.adapter == kind]
            else:
                held = []
            busy = next(
                (r for r in running.get(job.local_conversation_id, ()) if r.job_id != job.job_id),
                None,
            )
            out.append(
                JobFacts(
                    job=job,
                    conversation=conversations.get(job.local_conversation_id),
                    target_kind=kind,
                    target_key=key,
                    busy=busy,
                    daemons=registry,
                    pauses=tuple(held),
                )
            )
    return out


def _at(ms: int) -> str:
    return iso_utc(ms)


def _owner_state(facts: JobFacts, owner: str | None, *, stale_before: int) -> tuple[bool, str]:
    """Whether `owner` is alive (heartbeat since `stale_before`), and a phrase saying so."""
    if not owner:
        return False, "no owner"
    daemon = facts.daemons.get(owner)
    if daemon is None:
        return False, "owner not registered: stopped or never started"
    if owner in facts.gone_owners:
        return False, f"owner's process {daemon.pid} is gone from {daemon.host}"
    if daemon.heartbeat_at < stale_before:
        return False, f"owner not heartbeating since {_at(daemon.heartbeat_at)}"
    return True, f"owner alive, last heartbeat {_at(daemon.heartbeat_at)}"


def explain(
    facts: JobFacts, *, now: int, dispatch_statuses: Sequence[str], stale_before: int
) -> Explanation:
    """Name the rule that decides what happens to the job next (DESIGN §2).

    `stale_before`: a daemon whose last heartbeat is older is taken for dead (the rescuer
    uses the same threshold, 3 times the heartbeat interval).
    """
    job = facts.job
    if job.status == "done":
        return Explanation(
            "finished",
            "delivered",
            f"delivered at {_at(job.finished_at or job.updated_at)}",
            job.finished_at,
            brief="delivered",
        )
    if job.status == "failed":
        reason = job.terminal_reason or "failed"
        detail = f"failed ({reason}) at {_at(job.finished_at or job.updated_at)}"
        if job.last_error:
            detail += f": {job.last_error}"
        return Explanation(
            "finished", reason, detail, job.finished_at, brief=ENDED.get(reason, reason)
        )
    if job.status == "running":
        return _explain_running(facts, now=now, stale_before=stale_before)
    if job.status != "pending":
        return Explanation(
            "waiting",
            "unknown_status",
            f"status {job.status!r} is not one renewald dispatches",
        )
    if job.problems:
        return Explanation(
            "waiting",
            "malformed",
            "the row does not fit, so it is never sent; a daemon ends it failed/malformed "
            f"once it is due: {'; '.join(job.problems)}",
        )
    holds = _pending_holds(facts, now=now, dispatch_statuses=dispatch_statuses)
    holds += _busy_and_paused(facts, now=now, stale_before=stale_before)
    if not holds:
        since = _at(job.next_attempt_at or now)
        if any(
            d.heartbeat_at >= stale_before and o not in facts.gone_owners
            for o, d in facts.daemons.items()
        ):
            return Explanation(
                "due",
                "due",
                f"due since {since}: the next poll claims it",
                brief="due: the next poll claims it",
            )
        return Explanation(
            "due",
            "due",
            f"due since {since}, but no live daemon is registered: "
            "it goes out when `renewald run` (or the next `run --once`) polls",
            brief="due, but no live daemon",
        )
    first, *rest = deciding_first(holds)
    return Explanation(
        "waiting", first.rule, first.detail, first.until, tuple(rest), brief=first.brief
    )


def deciding_first(holds: Sequence[Hold]) -> list[Hold]:
    """The hold that decides when the job can go, first: one without an end (a paused
    conversation, no schedule) in the order the rules are checked, else the one that
    lasts longest. `not_due` yields to a tie: a breaker deferral sets `next_attempt_at`
    to the end of the pause, and the pause is the reason."""
    endless = [h for h in holds if h.until is None]
    timed = [h for h in holds if h.until is not None]
    timed.sort(key=lambda h: (-(h.until or 0), h.rule == "not_due"))
    return endless + timed


def _pending_holds(facts: JobFacts, *, now: int, dispatch_statuses: Sequence[str]) -> list[Hold]:
    job, conv = facts.job, facts.conversation
    holds = []
    if job.next_attempt_at is None:
        holds.append(
            Hold(
                "not_scheduled",
                "not scheduled: next_attempt_at is empty, so it is never due",
                brief="never due: next_attempt_at is empty",
            )
        )
    if conv is not None and conv.automation_status not in dispatch_statuses:
        since = f" since {_at(conv.paused_at)}" if conv.paused_at else ""
        allowed = ", ".join(dispatch_statuses)
        holds.append(
            Hold(
                "conversation_status",
                f"conversation {conv.local_conversation_id} is {conv.automation_status}{since}"
                f" ([daemon] dispatch_statuses = {allowed})",
                brief=f"conversation {conv.automation_status}",
            )
        )
    if job.next_attempt_at is not None and job.next_attempt_at > now:
        holds.append(
            Hold(
                "not_due",
                f"not due until {_at(job.next_attempt_at)}",
                job.next_attempt_at,
                brief=f"due {UNTIL}",
            )
        )
    if conv is not None and conv.cooldown_until is not None and conv.cooldown_until > now:
        holds.append(
            Hold(
                "cooldown",
                f"conversation {conv.local_conversation_id} is cooling down until "
                f"{_at(conv.cooldown_until)}",
                conv.cooldown_until,
                brief=f"conversation cooling down, ends {UNTIL}",
            )
        )
    return holds


def _busy_and_paused(facts: JobFacts, *, now: int, stale_before: int) -> list[Hold]:
    holds = []
    busy = facts.busy
    if busy is not None:
        _, owner_state = _owner_state(facts, busy.lease_owner, stale_before=stale_before)
        until = f" until {_at(busy.lease_expires_at)}" if busy.lease_expires_at else ""
        holds.append(
            Hold(
                "conversation_busy",
                f"job {busy.job_id} of the same conversation is running, leased by "
                f"{busy.lease_owner or '-'}{until} ({owner_state})",
                busy.lease_expires_at,
                brief=f"behind running job {busy.job_id}"
                + (f", lease ends {UNTIL}" if busy.lease_expires_at else ""),
            )
        )
    if facts.pauses:
        if facts.target_key is not None:
            p = facts.pauses[0]
            detail = (
                f"target {p.target_key} paused by the breaker until {_at(p.paused_until or now)}"
                f" after {p.failures} failures"
            )
            if p.last_error:
                detail += f": {p.last_error}"
            holds.append(
                Hold(
                    "target_paused",
                    detail,
                    p.paused_until,
                    brief=f"target {p.target_key} paused by the breaker, resumes {UNTIL}",
                )
            )
        else:
            keys = ", ".join(
                f"{p.target_key} until {_at(p.paused_until or now)}" for p in facts.pauses
            )
            holds.append(
                Hold(
                    "target_paused",
                    f"target not determinable; paused {facts.target_kind} targets: {keys}",
                    max(p.paused_until or now for p in facts.pauses),
                    brief=f"{facts.target_kind} targets paused by the breaker",
                )
            )
    return holds


def _explain_running(facts: JobFacts, *, now: int, stale_before: int) -> Explanation:
    job = facts.job
    alive, owner_state = _owner_state(facts, job.lease_owner, stale_before=stale_before)
    until = job.lease_expires_at
    lease = f"leased by {job.lease_owner or '-'} until {_at(until) if until else '-'}"
    if job.terminal_reason == CANCELLED:
        return Explanation(
            "running",
            "cancelling",
            f"cancelled by operator while running ({lease}, {owner_state}); "
            "it ends failed/cancelled when its attempt returns",
            until,
            brief="cancelling: its attempt is still running",
        )
    if until is None or until <= now:
        return Explanation(
            "running",
            "lease_expired",
            f"{lease}: the lease expired, the next rescue takes it back ({owner_state})",
            until,
            brief="lease expired: the next rescue takes it back",
        )
    if not alive:
        return Explanation(
            "running",
            "owner_dead",
            f"{lease}: {owner_state}; the next rescue takes it back",
            until,
            brief="owner not alive: the next rescue takes it back",
        )
    return Explanation(
        "running",
        "leased",
        f"{lease} ({owner_state})",
        until,
        brief=f"running on {job.lease_owner or '-'}, lease ends {UNTIL}",
    )


# -- operator writes -------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorAction:
    """Who acts and how the action is recorded: the attempt row's owner and log file."""

    operator: str
    log_path: str | None = None


def _operator_attempt(
    job: Job,
    *,
    attempt_id: str,
    now: int,
    action: OperatorAction,
    outcome: str,
    decision: str,
    reason: str,
    next_attempt_at: int | None,
) -> dict[str, Any]:
    return {
        "attempt_id": attempt_id,
        "job_id": job.job_id,
        "attempt_no": job.attempt_count,
        "lease_owner": action.operator,
        "lease_token": job.lease_token,
        "adapter": None,
        "target": None,
        "started_at": now,
        "finished_at": now,
        "duration_ms": 0,
        "outcome": outcome,
        "error_class": None,
        "error_message": None,
        "response_summary": None,
        "next_attempt_at": next_attempt_at,
        "decision": decision,
        "decision_reason": reason,
    }


def _get(conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    return Job.from_row(row) if row else None


@dataclass(frozen=True)
class Retried:
    job: Job
    attempt_id: str
    previous_reason: str | None


def retry_job(
    conn: Connection, *, job_id: str, attempt_id: str, now: int, action: OperatorAction
) -> Retried | None:
    """A failed job back to pending, due now, with a fresh attempt budget (attempt_count 0,
    max_attempts kept). Fenced on status='failed'; None when it was not failed."""
    job = _get(conn, job_id)
    if job is None or job.status != "failed":
        return None
    values: dict[str, Any] = {
        "status": "pending",
        "attempt_count": 0,
        "next_attempt_at": now,
        "terminal_reason": None,
        "finished_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if action.log_path is not None:
        values["log_path"] = action.log_path
    matched = conn.execute(
        update(jobs).where(jobs.c.job_id == job_id, jobs.c.status == "failed").values(**values)
    ).rowcount
    if matched != 1:
        return None
    conn.execute(
        insert(attempts).values(
            **_operator_attempt(
                job,
                attempt_id=attempt_id,
                now=now,
                action=action,
                outcome="operator_retry",
                decision="retry",
                reason=RETRY_REASON,
                next_attempt_at=now,
            )
        )
    )
    after = _get(conn, job_id)
    assert after is not None
    return Retried(after, attempt_id, job.terminal_reason)


def failed_job_ids(
    conn: Connection,
    *,
    since: int | None = None,
    conversation: str | None = None,
    reasons: Sequence[str] = (),
    exclude_reasons: Sequence[str] = (),
    limit: int | None = None,
    after_id: str | None = None,
) -> list[str]:
    """Failed jobs, by job id, that `retry --failed` selects (`finished_at >= since`)."""
    query = select(jobs.c.job_id).where(jobs.c.status == "failed")
    if since is not None:
        query = query.where(jobs.c.finished_at >= since)
    if conversation is not None:
        query = query.where(jobs.c.local_conversation_id == conversation)
    if reasons:
        query = query.where(jobs.c.terminal_reason.in_(list(reasons)))
    if exclude_reasons:
        query = query.where(
            or_(jobs.c.terminal_reason.is_(None), jobs.c.terminal_reason.not_in(exclude_reasons))
        )
    if after_id is not None:
        query = query.where(jobs.c.job_id > after_id)
    query = query.order_by(jobs.c.job_id)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).scalars())


@dataclass(frozen=True)
class Cancelled:
    """What `cancel` did: 'cancelled' (was pending, now failed/cancelled), 'cancelling'
    (running, marked: ends cancelled when its attempt returns), 'already_cancelling',
    'finished' (done or failed already: nothing changed)."""

    result: str
    job: Job
    attempt_id: str | None = None


def cancel_job(
    conn: Connection, *, job_id: str, attempt_id: str, now: int, action: OperatorAction
) -> Cancelled | None:
    """Cancel a job; None when there is no such job.

    A pending job ends failed/cancelled at once, with an attempt row. A running job keeps
    running but is marked (`terminal_reason = 'cancelled'`): `attempts.record_results`
    then ends it failed/cancelled whatever its attempt's outcome, and so does a rescue.
    Each write is fenced on the state it was decided on; if a claim or a finish slipped in
    between (PostgreSQL runs them concurrently), the job is read again and decided anew.
    """
    for _ in range(5):
        job = _get(conn, job_id)
        if job is None:
            return None
        if job.status in FINISHED:
            return Cancelled("finished", job)
        if job.status == "running":
            if job.terminal_reason == CANCELLED:
                return Cancelled("already_cancelling", job)
            matched = conn.execute(
                update(jobs)
                .where(
                    jobs.c.job_id == job_id,
                    jobs.c.status == "running",
                    jobs.c.lease_token == job.lease_token,
                )
                .values(terminal_reason=CANCELLED, updated_at=now)
            ).rowcount
            if matched == 1:
                after = _get(conn, job_id)
                assert after is not None
                return Cancelled("cancelling", after)
            continue
        values: dict[str, Any] = {
            "status": "failed",
            "terminal_reason": CANCELLED,
            "finished_at": now,
            "updated_at": now,
        }
        if action.log_path is not None:
            values["log_path"] = action.log_path
        matched = conn.execute(
            update(jobs)
            .where(
                jobs.c.job_id == job_id,
                jobs.c.status == job.status,
                jobs.c.lease_token == job.lease_token,
            )
            .values(**values)
        ).rowcount
        if matched != 1:
            continue
        conn.execute(
            insert(attempts).values(
                **_operator_attempt(
                    job,
                    attempt_id=attempt_id,
                    now=now,
                    action=action,
                    outcome=CANCELLED,
                    decision="failed",
                    reason=CANCEL_REASON,
                    next_attempt_at=None,
                )
            )
        )
        after = _get(conn, job_id)
        assert after is not None
        return Cancelled(CANCELLED, after, attempt_id)
    raise RuntimeError(f"job {job_id} kept changing while being cancelled")


# -- conversations ---------------------------------------------------------------------


def get_conversation(conn: Connection, conversation_id: str) -> Conversation | None:
    row = (
        conn.execute(select(convs).where(convs.c.local_conversation_id == conversation_id))
        .mappings()
        .first()
    )
    return _conversation(row) if row else None


def set_automation_status(
    conn: Connection, *, conversation_id: str, status: str, now: int
) -> tuple[Conversation, Conversation] | None:
    """Pause ('paused': `paused_at` = now) or resume ('auto': `paused_at` cleared) a
    conversation, as the tracker does. Returns (before, after); None for no such row.
    Pausing a paused conversation keeps its `paused_at`."""
    before = get_conversation(conn, conversation_id)
    if before is None:
        return None
    if before.automation_status == status:
        return before, before
    paused_at = now if status == "paused" else None
    conn.execute(
        update(convs)
        .where(convs.c.local_conversation_id == conversation_id)
        .values(automation_status=status, paused_at=paused_at, updated_at=now)
    )
    after = get_conversation(conn, conversation_id)
    assert after is not None
    return before, after


def list_conversations(
    conn: Connection,
    *,
    statuses: Sequence[str] = (),
    conversation: str | None = None,
    limit: int = 100,
) -> list[ConversationSummary]:
    """Conversations with their pending and running job counts, most recently updated first."""
    query = select(convs)
    if statuses:
        query = query.where(convs.c.automation_status.in_(list(statuses)))
    if conversation is not None:
        query = query.where(convs.c.local_conversation_id == conversation)
    query = query.order_by(convs.c.updated_at.desc(), convs.c.local_conversation_id).limit(limit)
    rows = [_conversation(r) for r in conn.execute(query).mappings()]
    if not rows:
        return []
    ids = [r.local_conversation_id for r in rows]
    counts: dict[tuple[str, str], int] = {}
    for cid, status, n in conn.execute(
        select(jobs.c.local_conversation_id, jobs.c.status, func.count())
        .where(jobs.c.local_conversation_id.in_(ids), jobs.c.status.in_(("pending", "running")))
        .group_by(jobs.c.local_conversation_id, jobs.c.status)
    ).all():
        counts[cid, status] = int(n)
    return [
        ConversationSummary(
            r,
            counts.get((r.local_conversation_id, "pending"), 0),
            counts.get((r.local_conversation_id, "running"), 0),
        )
        for r in rows
    ]


# -- stats -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    now: int
    by_status: dict[str, int]
    due: int
    oldest_due_at: int | None
    overdue: int
    held: int  # pending, past next_attempt_at, but held back by its conversation
    unscheduled: int
    running: int
    oldest_running_started_at: int | None
    expired_leases: int
    failures_since: int
    failures: dict[str, int]
    daemons: list[DaemonRow]
    paused_targets: list[TargetPause]

    def as_dict(self, *, stale_before: int) -> dict[str, Any]:
        return {
            "now": self.now,
            "by_status": self.by_status,
            "due": self.due,
            "oldest_due_at": self.oldest_due_at,
            "oldest_due_age_ms": None
            if self.oldest_due_at is None
            else max(0, self.now - self.oldest_due_at),
            "overdue": self.overdue,
            "held": self.held,
            "unscheduled": self.unscheduled,
            "running": self.running,
            "oldest_running_started_at": self.oldest_running_started_at,
            "oldest_lease_age_ms": None
            if self.oldest_running_started_at is None
            else max(0, self.now - self.oldest_running_started_at),
            "expired_leases": self.expired_leases,
            "failures_since": self.failures_since,
            "failures": self.failures,
            "daemons": [
                {**asdict(d), "alive": d.heartbeat_at >= stale_before} for d in self.daemons
            ],
            "paused_targets": [p.as_dict() for p in self.paused_targets],
        }


def stats(
    conn: Connection,
    *,
    now: int,
    dispatch_statuses: Sequence[str],
    overdue_before: int,
    failures_since: int,
) -> Stats:
    """Queue counts for `renewald stats`; each is one count or group-by query."""
    by_status = {
        s: int(n)
        for s, n in conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
    }
    due_cond = due_condition(now, dispatch_statuses)
    due, oldest_due = conn.execute(
        select(func.count(), func.min(jobs.c.next_attempt_at)).select_from(jobs).where(due_cond)
    ).one()
    overdue = conn.execute(
        select(func.count())
        .select_from(jobs)
        .where(due_cond, jobs.c.next_attempt_at < overdue_before)
    ).scalar_one()
    held = conn.execute(
        select(func.count())
        .select_from(jobs)
        .where(
            jobs.c.status == "pending",
            jobs.c.next_attempt_at <= now,
            ~dispatch_allowed(now, dispatch_statuses),
        )
    ).scalar_one()
    unscheduled = conn.execute(
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.status == "pending", jobs.c.next_attempt_at.is_(None))
    ).scalar_one()
    running, oldest_running, expired = conn.execute(
        select(
            func.count(),
            func.min(jobs.c.started_at),
            func.count().filter(
                or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at <= now)
            ),
        ).where(jobs.c.status == "running")
    ).one()
    failures = {
        (reason or "unknown"): int(n)
        for reason, n in conn.execute(
            select(jobs.c.terminal_reason, func.count())
            .where(jobs.c.status == "failed", jobs.c.finished_at >= failures_since)
            .group_by(jobs.c.terminal_reason)
            .order_by(func.count().desc(), jobs.c.terminal_reason)
        ).all()
    }
    daemon_rows = conn.execute(
        select(renewald_daemons).order_by(renewald_daemons.c.started_at)
    ).mappings()
    return Stats(
        now=now,
        by_status=by_status,
        due=int(due),
        oldest_due_at=epoch_ms_or_none(oldest_due),
        overdue=int(overdue),
        held=int(held),
        unscheduled=int(unscheduled),
        running=int(running),
        oldest_running_started_at=epoch_ms_or_none(oldest_running),
        expired_leases=int(expired),
        failures_since=failures_since,
        failures=failures,
        daemons=[DaemonRow(**dict(r)) for r in daemon_rows],
        paused_targets=paused_targets(conn, now=now),
    )


def paused_targets(conn: Connection, *, now: int) -> list[TargetPause]:
    query = (
        select(pauses)
        .where(pauses.c.paused_until > now)
        .order_by(pauses.c.paused_until.desc(), pauses.c.target_key)
    )
    return [_pause(r) for r in conn.execute(query).mappings()]


@dataclass(frozen=True)
class Gauges:
    """What /metrics reads at scrape time: a few cheap counts, one transaction."""

    due: int
    running: int
    oldest_due_at: int | None
    paused_targets: list[TargetPause]


def gauges(conn: Connection, *, now: int, dispatch_statuses: Sequence[str]) -> Gauges:
    due, oldest = conn.execute(
        select(func.count(), func.min(jobs.c.next_attempt_at))
        .select_from(jobs)
        .where(due_condition(now, dispatch_statuses))
    ).one()
    running = conn.execute(
        select(func.count()).select_from(jobs).where(jobs.c.status == "running")
    ).scalar_one()
    return Gauges(int(due), int(running), epoch_ms_or_none(oldest), paused_targets(conn, now=now))


# -- retention -------------------------------------------------------------------------


def _prunable(before: int, table: Any = jobs):  # type: ignore[no-untyped-def]
    return and_(table.c.status.in_(FINISHED), table.c.finished_at < before)


def prune_batch(conn: Connection, *, before: int, limit: int) -> tuple[int, int]:
    """Delete up to `limit` finished jobs (finished before `before`) and their attempts.

    The DELETE re-checks status and finished_at on each row it removes, so a job the
    tracker re-armed a moment ago stays, and only the removed jobs' attempts go with them.
    Returns (jobs deleted, attempts deleted).
    """
    # An alias, so the inner SELECT is not correlated to the DELETE's own table.
    pick = jobs.alias("pick")
    chosen = select(pick.c.job_id).where(_prunable(before, pick)).limit(limit)
    deleted = list(
        conn.execute(
            delete(jobs)
            .where(jobs.c.job_id.in_(chosen), _prunable(before))
            .returning(jobs.c.job_id)
        ).scalars()
    )
    if not deleted:
        return 0, 0
    gone = conn.execute(delete(attempts).where(attempts.c.job_id.in_(deleted))).rowcount
    return len(deleted), int(gone)


def count_prunable(conn: Connection, *, before: int) -> tuple[int, int]:
    """What `prune_batch` would delete in all: (jobs, attempts)."""
    n_jobs = conn.execute(
        select(func.count()).select_from(jobs).where(_prunable(before))
    ).scalar_one()
    n_attempts = conn.execute(
        select(func.count())
        .select_from(attempts)
        .where(attempts.c.job_id.in_(select(jobs.c.job_id).where(_prunable(before))))
    ).scalar_one()
    return int(n_jobs), int(n_attempts)
