"""Why a job is where it is: the due rule of `jobs.due_condition` told as sentences.

`explain` reads the same rows the claim reads and names the first rule that holds the job
back; `facts.py` gathers those rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from renewald.clock import iso_utc
from renewald.store.attempts import CANCELLED
from renewald.store.facts import JobFacts
from renewald.store.models import Job
from renewald.store.schema import (
    local_conversations,
    renewal_jobs,
    renewal_target_pauses,
)

jobs = renewal_jobs
convs = local_conversations
pauses = renewal_target_pauses

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

UNTIL = "{until}"


class _Rule:
    """What `Hold` and `Explanation` both tell: a rule, its sentence (`detail`, for
    `show`), its time, and the few words of a table cell (`brief`, `jobs`' WHY column),
    where `{until}` stands for `until` as the caller shows times."""

    rule: str
    detail: str
    until: int | None
    brief: str

    def summary(self, when: Callable[[int], str] = iso_utc) -> str:
        """The rule in a few words, `when` rendering its time ("due in 4m")."""
        if not self.brief:
            return self.rule.replace("_", " ")
        if UNTIL not in self.brief:
            return self.brief
        return self.brief.replace(UNTIL, when(self.until) if self.until is not None else "-")

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "detail": self.detail,
            "until": self.until,
            "brief": self.summary(),
        }


@dataclass(frozen=True)
class Hold(_Rule):
    """One rule that holds a job back (or says what became of it)."""

    rule: str
    detail: str
    until: int | None = None
    brief: str = ""


@dataclass(frozen=True)
class Explanation(_Rule):
    """Why a job is (not) running. `state` is due | waiting | running | finished; `rule` the
    first rule that applies; `also` the other rules that would still hold it back."""

    state: str
    rule: str
    detail: str
    until: int | None = None
    also: tuple[Hold, ...] = ()
    brief: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            **super().as_dict(),
            "also": [h.as_dict() for h in self.also],
        }


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
    if job.status in ("done", "failed"):
        return _explain_finished(job)
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
        return _explain_due(facts, now=now, stale_before=stale_before)
    first, *rest = deciding_first(holds)
    return Explanation(
        "waiting", first.rule, first.detail, first.until, tuple(rest), brief=first.brief
    )


def _explain_finished(job: Job) -> Explanation:
    if job.status == "done":
        return Explanation(
            "finished",
            "delivered",
            f"delivered at {_at(job.finished_at or job.updated_at)}",
            job.finished_at,
            brief="delivered",
        )
    reason = job.terminal_reason or "failed"
    detail = f"failed ({reason}) at {_at(job.finished_at or job.updated_at)}"
    if job.last_error:
        detail += f": {job.last_error}"
    return Explanation("finished", reason, detail, job.finished_at, brief=ENDED.get(reason, reason))


def _explain_due(facts: JobFacts, *, now: int, stale_before: int) -> Explanation:
    """Nothing holds the job back: whether a live daemon will claim it."""
    since = _at(facts.job.next_attempt_at or now)
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
