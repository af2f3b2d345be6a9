"""The daemon's view of the change watcher: up once connected, down (and said so) when
it stops or fails; never up behind a transaction pooler."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import make_url

from renewald.daemon.watching import WatchedChanges
from renewald.store import Store
from renewald.store.backend import OnChange, Stop
from tests.waiting import wait_for


def test_the_watch_is_up_once_connected_and_its_loss_is_reported(store: Store) -> None:
    changed = threading.Event()
    lost: list[bool] = []
    watch = WatchedChanges(store, changed.set, on_lost=lambda: lost.append(True))
    assert not watch.watching
    watch.start()
    try:
        # A watch that comes up asks for one poll.
        wait_for(lambda: watch.watching and changed.is_set(), timeout=10, what="the watch up")
    finally:
        watch.stop()
    wait_for(lambda: lost, timeout=10, what="the watch's end reported")
    assert not watch.watching and lost == [True]


class FailingBackend:
    """Connects (one `on_change`), then loses the connection; cannot connect again."""

    def __init__(self) -> None:
        self.calls = 0

    def changes_watch(self, url: str, on_change: OnChange, *, stop: Stop, interval: float) -> None:
        self.calls += 1
        if self.calls > 1:
            stop.wait()  # still connecting when the watcher stops
            return
        on_change()
        raise OSError("server closed the connection")


def fake_store(url: str, backend: Any) -> Any:
    from renewald.store.changes import ChangeWatcher
    from renewald.store.engine import backend_for

    return SimpleNamespace(
        watches_changes=backend_for(url).watches_changes(make_url(url)),
        change_watcher=lambda on_change: ChangeWatcher(url, on_change, backend=backend),
    )


def test_a_failed_watch_is_down_and_reported() -> None:
    lost = threading.Event()
    backend = FailingBackend()
    watch = WatchedChanges(fake_store("sqlite:///x.db", backend), lambda: None, on_lost=lost.set)
    watch.start()
    try:
        assert lost.wait(10)
        assert not watch.watching
    finally:
        watch.stop()
    assert backend.calls in (1, 2)


def test_behind_pgbouncer_nothing_watches() -> None:
    url = "postgresql+psycopg://u@127.0.0.1:1/d?pooler=pgbouncer"
    watch = WatchedChanges(fake_store(url, FailingBackend()), lambda: None, on_lost=lambda: None)
    assert not watch.can_watch and not watch.watching
