"""What every part of one daemon works with: the database, the clock, the job log, the
owner name that fences its writes, and the tally of what the run did."""

from __future__ import annotations

from dataclasses import dataclass, field

from renewald.clock import Clock
from renewald.daemon.summary import Summary
from renewald.logging import JobLog
from renewald.store import Store


@dataclass(frozen=True)
class DaemonParts:
    store: Store
    clock: Clock
    job_log: JobLog
    owner: str
    summary: Summary = field(default_factory=Summary)


class Part:
    """A part of one daemon (dispatcher, planner, recorder, send gate, upkeep).

    The shared parts are kept as its own attributes, not reached through `parts`: the
    hot path reads them for every job.
    """

    def __init__(self, parts: DaemonParts) -> None:
        self.parts = parts
        self.store = parts.store
        self.clock = parts.clock
        self.job_log = parts.job_log
        self.owner = parts.owner
        self.summary = parts.summary
