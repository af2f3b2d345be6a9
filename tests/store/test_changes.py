"""The change watcher notices jobs other processes write, on both backends."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from renewald.store import Store
from renewald.store.backend_sqlite import FORCE_POLL_ENV
from renewald.store.changes import ChangeWatcher
from tests.store.factories import make_job
from tests.store.test_schedules import make_schedule
from tests.waiting import wait_for


@pytest.fixture(params=["inotify", "poll"])
def sqlite_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the SQLite watcher notices commits: inotify, or the forced `data_version` poll."""
    if request.param == "poll":
        monkeypatch.setenv(FORCE_POLL_ENV, "poll")
    else:
        monkeypatch.delenv(FORCE_POLL_ENV, raising=False)
    return str(request.param)


@pytest.mark.parametrize(("made_by", "written"), [("url", "job"), ("store", "job"),
                                                  ("store", "schedule")])  # fmt: skip
@pytest.mark.usefixtures("sqlite_watch")
def test_watcher_notices_work_written_elsewhere(
    store: Store, db_url: str, made_by: str, written: str
) -> None:
    """A job, or a schedule: the schedule tick sleeps to the next fire while a watch is up."""
    changed = threading.Event()
    if made_by == "url":
        watcher = ChangeWatcher(db_url, changed.set, interval=0.01)
    else:
        watcher = store.change_watcher(changed.set, interval=0.01)
    assert watcher.backend is store.backend
    watcher.start()
    try:
        # Let the watcher settle (LISTEN issued / first data_version read), then write.
        for _ in range(50):
            if changed.wait(0.05):
                changed.clear()
            make_job(store) if written == "job" else make_schedule(store)
            if changed.wait(2):
                break
        assert changed.is_set(), f"no change noticed after writing {written}s"
    finally:
        watcher.stop()
    assert not watcher.is_alive(), "stop() wakes the watcher from its wait"


def test_notify_triggers_only_on_postgresql(store: Store) -> None:
    from sqlalchemy import text

    if store.dialect == "postgresql":
        names = store.read(
            lambda c: (
                c.execute(
                    text(
                        "SELECT r.relname || ':' || t.tgname FROM pg_trigger t"
                        " JOIN pg_class r ON r.oid = t.tgrelid"
                        " WHERE t.tgname LIKE 'renewald_notify_%'"
                        " AND r.relnamespace = current_schema()::regnamespace ORDER BY 1"
                    )
                )
                .scalars()
                .all()
            )
        )
        assert names == [
            "renewal_jobs:renewald_notify_pending",
            "renewal_schedules:renewald_notify_schedules",
        ]
    else:
        triggers = store.read(
            lambda c: c.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")).all()
        )
        assert triggers == []


class _Calls:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


@pytest.mark.usefixtures("sqlite_watch")
def test_sqlite_watcher_ignores_what_is_not_a_commit(tmp_path) -> None:
    """A checkpoint and reads touch the files but commit nothing: no wake-up; a commit
    afterwards still wakes it (the event is a hint, `data_version` decides)."""
    from renewald.store import migrate

    s = Store.open(f"sqlite:///{tmp_path / 'artifact.db'}", create=True)
    migrate(s.engine)
    calls = _Calls()
    watcher = s.change_watcher(calls, interval=0.01)
    watcher.start()
    try:
        assert calls.event.wait(5), "no first call once watching"
        wait_for(lambda: watcher_settled(s, calls), timeout=5)
        before = calls.count
        raw = sqlite3.connect(tmp_path / "artifact.db", isolation_level=None)
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)")
        raw.execute("SELECT count(*) FROM renewal_jobs").fetchall()
        raw.close()
        calls.event.clear()
        assert not calls.event.wait(0.3)
        assert calls.count == before
        make_job(s)
        assert calls.event.wait(5), "a commit did not wake the watcher"
    finally:
        watcher.stop()
        s.close()


def watcher_settled(s: Store, calls: _Calls) -> bool:
    """True once no call arrived for a moment (the first commits of `migrate` are noticed)."""
    calls.event.clear()
    return not calls.event.wait(0.2)
