"""Group commit for the mark that a send begins (DESIGN §2: a crash costs only what was
in flight).

Every send is preceded by a fenced write that spends its attempt (`Store.begin_sends`).
One transaction per send would put a commit — and, on SQLite, a wait for the single
write lock — in front of every delivery. Workers instead hand their marks to one thread
that writes whatever has gathered in one transaction, and each waits for its answer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from renewald.daemon.batches import gather
from renewald.daemon.parts import DaemonParts, Part

_log = structlog.get_logger("renewald.daemon")

BATCH = 64


@dataclass
class _Mark:
    job_id: str
    lease_token: int
    begun: bool | None = None  # None: not written (the daemon is stopping)
    done: threading.Event = field(default_factory=threading.Event)


class SendGate(Part):
    def __init__(self, parts: DaemonParts, *, lease_ms: int, stopping: threading.Event) -> None:
        super().__init__(parts)
        self.lease_ms = lease_ms
        self._stopping = stopping
        self._queue: queue.Queue[_Mark | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="renewald-sendgate", daemon=True)
        self._thread.start()

    def begin(self, job_id: str, lease_token: int) -> bool | None:
        """True: the send may go; False: the job is no longer ours; None: the daemon
        stopped while the database could not be reached (not sent, nothing spent)."""
        mark = _Mark(job_id, lease_token)
        self._queue.put(mark)
        while not mark.done.wait(0.5):
            if not self._thread.is_alive():
                return None
        return mark.begun

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._answer_rest()
                return
            batch = [first]
            closing = gather(self._queue, batch, BATCH)
            self._write(batch)
            if closing:
                self._answer_rest()
                return

    def begin_now(self, held: Sequence[tuple[str, int]]) -> list[bool | None]:
        """`begin` for several held jobs, written at once by the calling thread (it has
        them all in hand: nothing to gather)."""
        return self._write_marks(held)

    def _write(self, batch: list[_Mark]) -> None:
        begun = self._write_marks([(m.job_id, m.lease_token) for m in batch])
        for mark, ok in zip(batch, begun, strict=True):
            mark.begun = ok
            mark.done.set()

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

    def _answer_rest(self) -> None:
        while True:
            try:
                mark = self._queue.get_nowait()
            except queue.Empty:
                return
            if mark is not None:
                mark.done.set()
