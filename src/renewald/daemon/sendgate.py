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
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from renewald.store import Store

_log = structlog.get_logger("renewald.daemon")

BATCH = 64


@dataclass
class _Mark:
    job_id: str
    lease_token: int
    begun: bool | None = None  # None: not written (the daemon is stopping)
    done: threading.Event = field(default_factory=threading.Event)


class SendGate:
    def __init__(
        self,
        *,
        store: Store,
        owner: str,
        lease_ms: int,
        now_ms: Callable[[], int],
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_ms = lease_ms
        self._now_ms = now_ms
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
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(batch)
                    self._answer_rest()
                    return
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[_Mark]) -> None:
        """Write the marks, waiting out a database outage; give up only when stopping."""
        delay = 0.2
        while True:
            try:
                begun = self.store.begin_sends(
                    owner=self.owner,
                    held=[(m.job_id, m.lease_token) for m in batch],
                    now=self._now_ms(),
                    lease_ms=self.lease_ms,
                )
                break
            except Exception as exc:
                lines = str(exc).strip().splitlines()
                _log.error(
                    "send.begin_failed",
                    count=len(batch),
                    error=f"{type(exc).__name__}: {lines[0] if lines else ''}",
                    retry_in=f"{delay:.1f}s",
                )
                if self._stopping.wait(delay):
                    begun = [None] * len(batch)  # type: ignore[list-item]
                    break
                delay = min(delay * 2, 5.0)
        for mark, ok in zip(batch, begun, strict=True):
            mark.begun = ok
            mark.done.set()

    def _answer_rest(self) -> None:
        while True:
            try:
                mark = self._queue.get_nowait()
            except queue.Empty:
                return
            if mark is not None:
                mark.done.set()
