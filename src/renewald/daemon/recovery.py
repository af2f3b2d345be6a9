"""Write the JSONL lines a crash lost, from the attempt ledger.

The recorder commits an attempt row, then appends its line; a kill between the two
loses the line. Each attempt row carries an unlogged mark until its line is flushed
(store/unlogged.py); on start, and at each rescue tick, the marks of writers on this
host that are no longer alive become lines (`recovered: true`), unless the day's file
already holds one for that attempt (a kill after the flush, before the mark went).

Only this host's writers: another host's daemons write to their own log directory, and
their lines would be looked for in the wrong place.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from renewald.daemon.owner import host_of
from renewald.daemon.results import attempt_keys_of
from renewald.logging import JobLog
from renewald.store import Store
from renewald.store.unlogged import Unlogged

_log = structlog.get_logger("renewald.recovery")

_STATUS_OF = {"done": "done", "failed": "failed"}


def recover_lost_lines(*, store: Store, job_log: JobLog, owner: str, stale_before: int) -> int:
    """Write the lines of this host's dead writers' unlogged attempts; returns how many."""
    host = host_of(owner)
    found = [
        u
        for u in store.find_unlogged(stale_before=stale_before, exclude_writer=owner)
        if host_of(u.writer) == host
    ]
    if not found:
        return 0
    present: dict[str, set[str]] = {}
    written = 0
    for u in found:
        path = job_log.path_for(u.attempt.finished_at)
        if path not in present:
            present[path] = _attempt_ids_in(Path(path))
        if u.attempt.attempt_id in present[path]:
            continue
        _write_line(job_log, u)
        present[path].add(u.attempt.attempt_id)
        written += 1
    job_log.flush()
    store.mark_logged([u.attempt.attempt_id for u in found])
    if written:
        _log.warning("job_log.recovered", lines=written, checked=len(found))
    return written


def _write_line(job_log: JobLog, u: Unlogged) -> None:
    a = u.attempt
    abandoned = a.outcome == "abandoned"
    job_log.log(
        "job.rescued" if abandoned else "attempt.finished",
        now_ms=a.finished_at,
        **attempt_keys_of(a.job_id, a.attempt_id, a.attempt_no, u.conversation),
        adapter=a.adapter,
        outcome=a.outcome,
        duration_ms=a.duration_ms,
        status=_STATUS_OF.get(a.decision or "", "pending"),
        next_attempt_at=a.next_attempt_at,
        decision=a.decision,
        reason=a.decision_reason,
        error=a.error_message,
        owner=u.writer if abandoned else a.lease_owner,
        previous_owner=a.lease_owner if abandoned else None,
        recovered=True,
    )


_ENDING = ("attempt.finished", "job.rescued")


def _attempt_ids_in(path: Path) -> set[str]:
    """The attempt ids the job log file already holds an ending line for (a torn last line
    is skipped: it is the line that needs writing). `attempt.started` does not count: a
    writer killed mid-send leaves that line and owes the one that ends the attempt."""
    found: set[str] = set()
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if '"attempt_id"' not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                attempt_id = entry.get("attempt_id") if isinstance(entry, dict) else None
                if isinstance(attempt_id, str) and entry.get("event") in _ENDING:
                    found.add(attempt_id)
    except FileNotFoundError:
        pass
    return found
