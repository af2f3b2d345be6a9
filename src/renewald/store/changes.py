"""Noticing new work written by other processes, without polling the tables.

How is the backend's (`Backend.changes_watch`): LISTEN/NOTIFY on PostgreSQL, `PRAGMA
data_version` on SQLite. Either way the watcher only says "something changed": the daemon
then polls, and the poll decides what is due. A watcher that loses its connection
reconnects with backoff; missing a notification only costs latency (the regular poll
still runs), and every (re)connect is followed by one poll for whatever was written while
nobody watched.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from renewald.background import BackgroundLoop
from renewald.store.backend import Backend, Stop
from renewald.store.engine import backend_for

_log = structlog.get_logger("renewald.store.changes")


class ChangeWatcher:
    """Runs `on_change()` when another process may have written new work."""

    def __init__(
        self,
        url: str,
        on_change: Callable[[], None],
        *,
        interval: float = 0.05,
        backend: Backend | None = None,
    ) -> None:
        self.url = url
        self.on_change = on_change
        self.interval = interval
        self.backend = backend or backend_for(url)
        self._stop = Stop()
        self._loop = BackgroundLoop(self._run, name="renewald-changes", stopping=self._stop)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        if self._loop.stop(wait=2):
            self._stop.close()
        # else still inside a driver call: its pipe is left to the process

    def is_alive(self) -> bool:
        return self._loop.is_alive()

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._watch()
                delay = 0.5
            except Exception as exc:
                _log.warning(
                    "changes.watch_failed", error=str(exc).strip().splitlines()[0], retry_in=delay
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _watch(self) -> None:
        self.backend.changes_watch(
            self.url, self.on_change, stop=self._stop, interval=self.interval
        )
