"""The gauge reader behind /metrics and /healthz: a scrape never waits on the database
for long, says `up` False as soon as a read fails or hangs, and keeps the last values."""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy.exc import OperationalError

from renewald.daemon.gauges import GaugeReader
from renewald.store.stats import Gauges

GAUGES = Gauges(due=3, running=1, oldest_due_at=None, paused_targets=[])


class Database:
    """A stand-in read: answers, fails, or blocks until released."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.release = threading.Event()
        self.entered = threading.Event()
        self.reads = 0

    def read(self) -> Gauges:
        self.reads += 1
        if self.mode == "fail":
            raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))
        if self.mode == "hang":
            self.entered.set()
            self.release.wait(10)
        return GAUGES


def test_without_the_thread_a_reading_reads_inline() -> None:
    db = Database()
    reader = GaugeReader(db.read)
    reading = reader.current()
    assert reading.up and reading.gauges == GAUGES and reading.error is None
    db.mode = "fail"
    reading = reader.current()
    assert not reading.up
    assert reading.gauges == GAUGES  # the last successful read
    assert reading.error == "database is locked"


def test_a_scrape_gets_a_fresh_read_then_up_again() -> None:
    db = Database()
    reader = GaugeReader(db.read, interval=60)
    reader.start()
    try:
        assert reader.current(wait=5).up
        before = db.reads
        db.mode = "fail"
        reading = reader.current(wait=5)
        assert db.reads > before  # the scrape asked for (and waited for) its own read
        assert not reading.up and reading.gauges == GAUGES
        db.mode = "ok"
        assert reader.current(wait=5).up
    finally:
        reader.close()


def test_a_hanging_read_is_down_and_does_not_hold_the_scrape() -> None:
    db = Database()
    now = [0.0]
    reader = GaugeReader(db.read, interval=60, in_flight_limit=0.75, monotonic=lambda: now[0])
    reader.start()
    try:
        assert reader.current(wait=5).up
        db.mode = "hang"
        reader.current(wait=0.01)  # kicks a read that hangs
        assert db.entered.wait(5)
        assert reader.current(wait=0.01).up  # in flight for 0s: not judged yet
        now[0] += 0.76
        reading = reader.current(wait=0.01)  # returns although the read is still stuck
        assert not reading.up and "did not answer within 0.75s" in (reading.error or "")
        assert reading.gauges == GAUGES
    finally:
        db.release.set()
        reader.close()
