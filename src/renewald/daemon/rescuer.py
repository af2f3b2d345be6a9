"""Rescue: take back what a gone owner held, and put rewound jobs back to done.

Three kinds of rows come back (DESIGN §2):
- a held job whose lease expired and whose send had begun (`send_token` is the claim's
  token): an `abandoned` attempt row, then pending with backoff, or `failed/abandoned`
  when its attempts are used up;
- a held job whose lease expired before its send began, or a `running` row that carries
  no lease at all: pending again, due as it was, no attempt spent (`job.released`);
- a job the attempt ledger says was delivered but whose row a later write rewound to
  pending or running: done again (`job.reconciled`).

Every write is fenced by the lease the rescuer saw: if the owner finishes the job at the
same moment, exactly one of the two writes matches. A rescuer never looks at its own
process's rows: those are alive, whatever their lease says after an outage.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from typing import Any

import structlog

from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.malformed import log_ended
from renewald.daemon.results import ResultMaker, attempt_keys
from renewald.logging import JobLog, emit
from renewald.store import AttemptResult, Job, Store
from renewald.store.attempts import CANCELLED

_log = structlog.get_logger("renewald.rescue")


class Rescuer:
    def __init__(
        self,
        *,
        store: Store,
        job_log: JobLog,
        policy: RetryPolicy,
        owner: str,
        rand: random.Random | None = None,
        limit: int = 100,
        settle_ms: int = 0,
        gap_ms: int | None = None,
        held_here: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.store = store
        self.job_log = job_log
        self.owner = owner
        self.results = ResultMaker(owner=owner, policy=policy, job_log=job_log, rand=rand)
        self.limit = limit
        self.retries_at: list[int] = []  # when the last pass's rescued jobs fall due again
        self.settle_ms = settle_ms
        self._held_here = held_here
        self.gap_ms = gap_ms if gap_ms is not None else settle_ms
        self._last_ok: int | None = None
        self._blind: tuple[int, int] | None = None  # (outage began, rescue saw it end)
        # Called with each pass's count of jobs that changed hands (metrics).
        self.observers: list[Callable[[int], None]] = []

    def run_once(self, now: int) -> int:
        """Take back what is abandoned now; returns how many jobs changed hands.

        A lease that expired while this rescuer could not see the database (its passes
        failed, or one pass waited out an outage in its retries) is no sign that its owner
        died: every owner lost its heartbeat too. After a gap of more than `gap_ms` between
        successful passes, for `settle_ms` only leases that had expired before the gap
        began are taken, so owners renew theirs (and record the results they held) first.
        """
        if self._last_ok is not None and now - self._last_ok > self.gap_ms:
            began = self._last_ok if self._blind is None else min(self._blind[0], self._last_ok)
            self._blind = (began, now)
        changed = self._pass(now, expired_by=self._cutoff(now))
        self._last_ok = now
        for observer in self.observers:
            observer(changed)
        return changed

    def _cutoff(self, now: int) -> int:
        if self._blind is None:
            return now
        began, ended = self._blind
        if now >= ended + self.settle_ms:
            self._blind = None
            return now
        return min(now, began)

    def _pass(self, now: int, *, expired_by: int) -> int:
        self.retries_at = []
        # This process's own rows are left to it while its dispatcher holds them (their
        # results may wait in its recorder); one it lost track of (a claim whose commit
        # answer was lost) is taken back like any other once its lease expired.
        here = set(self._held_here())
        found = [
            j
            for j in self.store.find_abandoned(now=expired_by, limit=self.limit)
            if not (j.lease_owner == self.owner and j.job_id in here)
        ]
        rewound = self.store.find_rewound(limit=self.limit)
        if not found and not rewound:
            return 0
        unreadable = [j for j in found if j.problems]
        if unreadable:
            ended = self.store.end_held_malformed(
                unreadable, now=now, owner=self.owner, log_path=self.job_log.path_for(now)
            )
            log_ended(ended, job_log=self.job_log, owner=self.owner, now=now)
            found = [j for j in found if not j.problems]
        candidates = {j.job_id: j for j in [*found, *rewound]}
        delivered = self.store.delivered_attempts(sorted(candidates))
        spent: list[Job] = []
        unsent: list[Job] = []
        for job in candidates.values():
            if job.job_id in delivered:
                continue
            sent = job.lease_owner is not None and job.send_token == job.lease_token
            (spent if sent or job.terminal_reason == CANCELLED else unsent).append(job)
        changed = self._reconcile(
            [(j, delivered[j.job_id]) for j in candidates.values() if j.job_id in delivered], now
        )
        changed += self._abandon(spent, now)
        changed += self._put_back(unsent, now)
        self.job_log.flush()
        return changed

    def _reconcile(self, found: list, now: int) -> int:  # type: ignore[type-arg]
        applied = self.store.reconcile_delivered(found, now=now)
        for job, d in found:
            if not applied.get(job.job_id):
                continue
            self._taken_back(
                "job.reconciled",
                job,
                now,
                level="warning",
                attempt_id=d.attempt_id,
                status="done",
                reason=f"the ledger records a delivered attempt; the row said {job.status}",
                was=job.status,
            )
        return sum(1 for ok in applied.values() if ok)

    def _put_back(self, found: list[Job], now: int) -> int:
        applied = self.store.put_back_unsent(found, now=now)
        for job in found:
            if not applied.get(job.job_id):
                continue
            if job.next_attempt_at is not None:
                self.retries_at.append(job.next_attempt_at)
            why = (
                f"owner {job.lease_owner} stopped before the send began; no attempt spent"
                if job.lease_owner
                else f"the row said {job.status} but no daemon held it"
            )
            self._taken_back(
                "job.released",
                job,
                now,
                status="pending",
                next_attempt_at=job.next_attempt_at,
                reason=why,
            )
        return sum(1 for ok in applied.values() if ok)

    def _taken_back(self, event: str, job: Job, now: int, **fields: Any) -> None:
        """One line for a job this rescuer took back from its previous owner."""
        keys: dict[str, Any] = {"job_id": job.job_id, "conversation": job.local_conversation_id}
        emit(self.job_log, event, now_ms=now, **keys, **fields, **self._owners(job.lease_owner))

    def _owners(self, previous: str | None) -> dict[str, Any]:
        return {"owner": self.owner, "previous_owner": previous}

    def _abandon(self, found: list[Job], now: int) -> int:
        if not found:
            return 0
        results = self.results_for(found, now=now)
        applied = self.store.record_results(results, now=now, writer=self.owner)
        logged = []
        for result, ok in zip(results, applied, strict=True):
            if not ok:
                continue  # its owner finished it first: the fence let exactly one write in
            logged.append(result.attempt_id)
            if result.next_attempt_at is not None:
                self.retries_at.append(result.next_attempt_at)
            emit(
                self.job_log,
                "job.rescued",
                now_ms=now,
                level="warning",
                **attempt_keys(result),
                outcome="abandoned",
                status=result.status,
                next_attempt_at=result.next_attempt_at,
                reason=result.decision_reason,
                error=result.error_message,
                **self._owners(result.lease_owner),
            )
        self.job_log.flush()
        self.store.mark_logged(logged)
        return len(logged)

    def results_for(self, found: list[Job], *, now: int) -> list[AttemptResult]:
        return [self.results.abandoned(job, now) for job in found]
