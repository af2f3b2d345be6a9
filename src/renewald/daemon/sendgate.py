"""Group commit for the mark that a send begins (DESIGN §2: a crash costs only what was
in flight).

Every send is preceded by a fenced write that spends its attempt (`Store.begin_sends`).
One transaction per send would put a commit — and, on SQLite, a wait for the single
write lock — in front of every delivery. Marks that arrive while one is being written
wait and are written together next, by one of the waiting workers: the first to arrive
at an idle gate writes its own mark at once, on its own thread, with no hand-off; while
it writes, later marks gather; when it is done it wakes the first of them to write the
lot and goes on to its send. So a lone mark costs one transaction and no thread switch,
and a burst costs one transaction per write rather than per mark.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from renewald.daemon.parts import DaemonParts, Part

_log = structlog.get_logger("renewald.daemon")

BATCH = 64


@dataclass
class _Mark:
    job_id: str
    lease_token: int
    begun: bool | None = None  # None: not written (the daemon is stopping)
    leads: bool = False  # woken to write the marks waiting, its own first
    done: threading.Event = field(default_factory=threading.Event)


class SendGate(Part):
    def __init__(self, parts: DaemonParts, *, lease_ms: int, stopping: threading.Event) -> None:
        super().__init__(parts)
        self.lease_ms = lease_ms
        self._stopping = stopping
        self._lock = threading.Lock()
        self._waiting: list[_Mark] = []
        self._writing = False

    def begin(self, job_id: str, lease_token: int) -> bool | None:
        """True: the send may go; False: the job is no longer ours; None: the daemon
        stopped while the database could not be reached (not sent, nothing spent)."""
        mark = _Mark(job_id, lease_token)
        with self._lock:
            self._waiting.append(mark)
            mark.leads = not self._writing
            self._writing = True
        if not mark.leads:
            mark.done.wait()
            if not mark.leads:
                return mark.begun
        self._write_waiting()
        return mark.begun

    def _write_waiting(self) -> None:
        """Write the marks waiting (the caller's own among the first `BATCH`), answer
        them, and pass the writing on to the first mark still waiting, if any."""
        with self._lock:
            batch = self._waiting[:BATCH]
            del self._waiting[:BATCH]
        begun: list[bool | None] = [None] * len(batch)
        try:
            begun = self._write_marks([(m.job_id, m.lease_token) for m in batch])
        finally:
            for mark, ok in zip(batch, begun, strict=True):
                mark.begun, mark.leads = ok, False
                mark.done.set()
            with self._lock:
                if self._waiting:
                    following = self._waiting[0]
                    following.leads = True
                    following.done.set()
                else:
                    self._writing = False

    def begin_now(self, held: Sequence[tuple[str, int]]) -> list[bool | None]:
        """`begin` for several held jobs, written at once by the calling thread (it has
        them all in hand: nothing to gather)."""
        return self._write_marks(held)

    def _write_marks(self, held: Sequence[tuple[str, int]]) -> list[bool | None]:
        """Write the marks, waiting out a database outage; give up only when stopping."""
        delay = 0.2
        while True:
            try:
                return list(
                    self.store.begin_sends(
                        owner=self.owner, held=held, now=self.clock.now_ms(), lease_ms=self.lease_ms
                    )
                )
            except Exception as exc:
                lines = str(exc).strip().splitlines()
                _log.error(
                    "send.begin_failed",
                    count=len(held),
                    error=f"{type(exc).__name__}: {lines[0] if lines else ''}",
                    retry_in=f"{delay:.1f}s",
                )
                if self._stopping.wait(delay):
                    return [None] * len(held)
                delay = min(delay * 2, 5.0)
