"""The change watcher notices jobs other processes write, on both backends."""

from __future__ import annotations

import threading

import pytest

from renewald.store import Store
from renewald.store.changes import ChangeWatcher
from tests.store.factories import make_job


@pytest.mark.parametrize("made_by", ["url", "store"])
def test_watcher_notices_a_job_written_elsewhere(store: Store, db_url: str, made_by: str) -> None:
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
            make_job(store)
            if changed.wait(2):
                break
        assert changed.is_set(), "no change noticed after writing jobs"
    finally:
        watcher.stop()


def test_notify_trigger_only_on_postgresql(store: Store) -> None:
    from sqlalchemy import text

    if store.dialect == "postgresql":
        names = store.read(
            lambda c: (
                c.execute(
                    text(
                        "SELECT t.tgname FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid"
                        " WHERE t.tgname = 'renewald_notify_pending'"
                        " AND r.relnamespace = current_schema()::regnamespace"
                    )
                )
                .scalars()
                .all()
            )
        )
        assert names == ["renewald_notify_pending"]
    else:
        triggers = store.read(
            lambda c: c.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")).all()
        )
        assert triggers == []
