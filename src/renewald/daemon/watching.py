"""The change watcher as the daemon paces itself by it: is a watch up at this moment?

The store's `ChangeWatcher` calls `on_change()` once connected and whenever another
process may have written new work (LISTEN/NOTIFY on PostgreSQL; inotify, else a polled
`data_version`, on SQLite). While such a watch is up, new work wakes the daemon without a
poll, so the regular poll is only a safety net and can be rare (`Timings.watched_poll_ms`).
While it is down (connecting, reconnecting after an error, an in-memory database) or
cannot exist (behind PgBouncer nothing LISTENs: the store's watcher then only asks for the
first poll), the daemon polls every `poll_interval` as before.

A watch counts as up from its first `on_change()` (the backend makes that call once it
is connected) until the backend's `changes_watch` returns or raises. This wraps the
backend of the store's own watcher (`store.change_watcher`) and runs no SQL; whether a
watch can exist at all is the store's to say (`Store.watches_changes`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from renewald.store import Store
from renewald.store.backend import Backend, OnChange, Stop


class _Tracked:
    """A backend whose `changes_watch` reports when its watch comes up and goes down."""

    def __init__(self, backend: Backend, on_up: Callable[[], None], on_down: OnChange) -> None:
        self._backend = backend
        self._on_up = on_up
        self._on_down = on_down

    def changes_watch(self, url: str, on_change: OnChange, *, stop: Stop, interval: float) -> None:
        def changed() -> None:
            self._on_up()
            on_change()

        try:
            self._backend.changes_watch(url, changed, stop=stop, interval=interval)
        finally:
            self._on_down()


class WatchedChanges:
    """The store's `ChangeWatcher`, which also says whether its watch is up (`watching`).

    `on_lost` runs when a watch that was up goes down: the poll planned for the end of
    the long safety interval must then come sooner.
    """

    def __init__(self, store: Store, on_change: OnChange, *, on_lost: OnChange) -> None:
        self._up = threading.Event()
        self._on_lost = on_lost
        self.can_watch = store.watches_changes
        self._watcher = store.change_watcher(on_change)
        self._watcher.backend = _Tracked(  # type: ignore[assignment]
            self._watcher.backend, self._up.set, self._down
        )

    @property
    def watching(self) -> bool:
        return self.can_watch and self._up.is_set()

    def _down(self) -> None:
        was_up = self._up.is_set()
        self._up.clear()
        if was_up and self.can_watch:
            self._on_lost()

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()
