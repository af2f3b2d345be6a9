"""The database-derived gauges, read on a thread of their own so that `/metrics` and
`/healthz` never wait on the database (DESIGN §6).

A scrape asks for a fresh read and waits at most `SCRAPE_WAIT` for it; whatever it gets
by then is the last successful read plus whether the store is up. The store counts as
down as soon as a read fails or has been running longer than `IN_FLIGHT_LIMIT`: a
database that hangs (a dropped network, a full pool) is as down as one that refuses.
Between scrapes the reader refreshes every `interval`, so `/healthz` notices an outage
without being scraped first.

`StoreGauges` turns the reader's gauges into Prometheus families at scrape time;
`ProcessGauges` does the same for this daemon's own state (in flight, last poll).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from renewald.background import BackgroundLoop
from renewald.clock import Clock
from renewald.store.engine import describe
from renewald.store.stats import Gauges

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
        self._reader = BackgroundLoop(self._loop, name="renewald-gauges", stopping=self._stop)

    def start(self) -> None:
        self._reader.start()

    def close(self) -> None:
        self._reader.stop()
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
        if not self._reader.started:
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


OTHER = "other"


def one_of(value: str | None, known: Sequence[str]) -> str:
    """`value` when it is one of `known`, else `other`: a label's values stay bounded
    whatever the database holds."""
    return value if value is not None and value in known else OTHER


class ProcessGauges(Collector):
    """This daemon's own state, read at scrape time without the database."""

    def __init__(
        self, in_flight: Callable[[], int], poll_age: Callable[[], float | None], clock: Clock
    ) -> None:
        self.in_flight = in_flight
        self.poll_age = poll_age
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "renewald_in_flight",
            "Deliveries this daemon has in flight now (sum across daemons).",
            value=self.in_flight(),
        )
        age = self.poll_age()
        if age is not None:
            yield GaugeMetricFamily(
                "renewald_last_successful_poll_timestamp_seconds",
                "When this daemon's last poll of the database succeeded (Unix time).",
                value=self.clock.now_ms() / 1000 - age,
            )


class StoreGauges(Collector):
    """Gauges from the `GaugeReader`'s last successful read: due and running jobs, the
    oldest due job's age, paused targets; `renewald_store_up` says whether the database
    answered the read this scrape asked for (or has been answering, when it is slow).
    They describe the whole database: every daemon reports the same values."""

    def __init__(self, reader: GaugeReader, clock: Clock, adapters: Sequence[str]) -> None:
        self.reader = reader
        self.clock = clock
        self.adapters = adapters

    def describe(self) -> list[Metric]:
        return []  # read the store at scrape time only, never at registration

    def collect(self) -> Iterator[Metric]:
        reading = self.reader.current()
        yield GaugeMetricFamily(
            "renewald_store_up",
            "1 when the database answered the latest gauge read in time.",
            value=1 if reading.up else 0,
        )
        g = reading.gauges
        if g is None or reading.read_at is None:
            return
        now = self.clock.now_ms()
        whole = " Database-wide: the same on every daemon (use max(), not sum())."
        yield GaugeMetricFamily(
            "renewald_gauges_age_seconds",
            "How old the database-derived gauges are (they keep their last values "
            "while the database is away).",
            value=max(0.0, time.monotonic() - reading.read_at),
        )
        yield GaugeMetricFamily("renewald_jobs_due", "Jobs due now." + whole, value=g.due)
        yield GaugeMetricFamily(
            "renewald_jobs_running",
            "Jobs running now, held by any daemon." + whole + " This daemon's own: "
            "renewald_in_flight.",
            value=g.running,
        )
        oldest = 0.0 if g.oldest_due_at is None else max(0, now - g.oldest_due_at) / 1000
        yield GaugeMetricFamily(
            "renewald_oldest_due_age_seconds",
            "How long the oldest due job has been due (0 when none is)." + whole,
            value=oldest,
        )
        yield GaugeMetricFamily(
            "renewald_targets_paused",
            "Delivery targets the breaker has paused now." + whole,
            value=len(g.paused_targets),
        )
        remaining = GaugeMetricFamily(
            "renewald_target_pause_remaining_seconds",
            "Seconds until the breaker lets a paused target be tried again." + whole,
            labels=("target", "adapter"),
        )
        for p in g.paused_targets:
            left = max(0, (p.paused_until or now) - now) / 1000
            remaining.add_metric([p.target_key, one_of(p.adapter, self.adapters)], left)
        yield remaining
