"""The database-derived gauges, read on a thread of their own so that `/metrics` and
`/healthz` never wait on the database (DESIGN §6).

A scrape asks for a fresh read and waits at most `SCRAPE_WAIT` for it; whatever it gets
by then is the last successful read plus whether the store is up. The store counts as
down as soon as a read fails or has been running longer than `IN_FLIGHT_LIMIT`: a
database that hangs (a dropped network, a full pool) is as down as one that refuses.
Between scrapes the reader refreshes every `interval`, so `/healthz` notices an outage
without being scraped first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from renewald.store.engine import describe
from renewald.store.ops import Gauges

_log = structlog.get_logger("renewald.metrics")

# How long one gauge read may retry a database that refuses (the reader's store budget).
READ_BUDGET = 0.5
# A read still running after this long means the store is down (it may still land later).
IN_FLIGHT_LIMIT = 0.75
# How long a scrape waits for the read it asked for; then it answers with what it has.
SCRAPE_WAIT = 0.8


@dataclass(frozen=True)
class Reading:
    """What a scrape gets: the last successful gauges (None before the first), whether
    the store is up now, why not, and when (monotonic) those gauges were read."""

    gauges: Gauges | None
    up: bool
    error: str | None
    read_at: float | None


class GaugeReader:
    def __init__(
        self,
        read: Callable[[], Gauges],
        *,
        interval: float = 5.0,
        in_flight_limit: float = IN_FLIGHT_LIMIT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.interval = interval
        self.in_flight_limit = in_flight_limit
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._started = 0  # reads begun
        self._done = 0  # reads finished
        self._kicked = False
        self._in_flight_since: float | None = None
        self._gauges: Gauges | None = None
        self._read_at: float | None = None
        self._ok = False
        self._error: str | None = "no read yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="renewald-gauges", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # Not joined: a read stuck on the database must not hold up the shutdown.

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            with self._cond:
                self._cond.wait_for(lambda: self._kicked or self._stop.is_set(), self.interval)
                self._kicked = False

    def refresh(self) -> None:
        """Read the gauges once, now, on the calling thread."""
        with self._cond:
            self._started += 1
            seq = self._started
            self._in_flight_since = self._monotonic()
        gauges: Gauges | None = None
        error: str | None = None
        try:
            gauges = self._read()
        except Exception as exc:  # whatever the database does, the reader goes on
            error = describe(exc)
        with self._cond:
            was_ok = self._ok
            self._ok = error is None
            self._error = error
            if gauges is not None:
                self._gauges = gauges
                self._read_at = self._monotonic()
            self._done = max(self._done, seq)
            self._in_flight_since = None
            self._cond.notify_all()
        if error is not None and (was_ok or seq == 1):
            _log.warning("metrics.store_down", error=error)
        elif error is None and not was_ok and seq > 1:
            _log.info("metrics.store_up")

    def current(self, wait: float = SCRAPE_WAIT) -> Reading:
        """Ask for a fresh read, wait up to `wait` for it, answer with what there is.
        Without the reader thread (tests, tools), the read happens here."""
        if self._thread is None:
            self.refresh()
            return self._reading()
        with self._cond:
            wanted = self._started + 1
            self._kicked = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._done >= wanted, wait)
            return self._reading()

    def _reading(self) -> Reading:
        with self._cond:
            up, error = self._ok, self._error
            since = self._in_flight_since
            if since is not None and self._monotonic() - since > self.in_flight_limit:
                up = False
                error = f"the database did not answer within {self.in_flight_limit:g}s"
            return Reading(self._gauges, up, None if up else error, self._read_at)
