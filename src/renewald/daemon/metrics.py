"""Prometheus `/metrics` and `/healthz` over HTTP (optional: `[http] listen`, off by default).

Counters and the duration histogram are fed by the dispatcher's observer hook (every
recorded attempt) and by the rescuer; gauges come from a few cheap count queries that
describe the whole database, not one daemon, read by a `GaugeReader` (daemon/gauges.py)
on a thread of its own: a scrape never waits on the database for more than a second, and
answers `renewald_store_up 0` with the last values while the database is away.
Everything lives in a dedicated `CollectorRegistry`: nothing leaks into (or from) the
global one.

`/healthz` answers 200 while the daemon's poll succeeded within `3 * poll_interval + 5s`
(the watchdog's own limit) and the store answers, else 503.

The server (daemon/listener.py) is the standard library's `ThreadingHTTPServer` on a
daemon thread, started by `Service.run()` and shut down when it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from renewald.clock import Clock
from renewald.daemon.gauges import READ_BUDGET, GaugeReader
from renewald.daemon.listener import MetricsServer
from renewald.store import AttemptResult, Store

if TYPE_CHECKING:
    from renewald.daemon.service import Service

_log = structlog.get_logger("renewald.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The daemon's metrics: counters it updates, gauges it reads from the store."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        dispatch_statuses: Sequence[str] = ("auto",),
        last_poll: Callable[[], float | None] = lambda: None,
        healthy_within: float = 8.0,
        refresh_every: float = 5.0,
    ) -> None:
        self.store = store.with_budget(READ_BUDGET)
        self.clock = clock
        self.dispatch_statuses = tuple(dispatch_statuses)
        self._last_poll = last_poll
        self.healthy_within = healthy_within
        self.reader = GaugeReader(
            lambda: self.store.gauges(
                now=self.clock.now_ms(), dispatch_statuses=self.dispatch_statuses
            ),
            interval=refresh_every,
        )
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "renewald_attempts",
            "Delivery attempts finished by this daemon, by adapter and outcome.",
            ("adapter", "outcome"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "renewald_delivery_duration_seconds",
            "How long delivery attempts took, by adapter.",
            ("adapter",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rescues = Counter(
            "renewald_rescues",
            "Abandoned running jobs this daemon took back (lease expired or owner dead).",
            registry=self.registry,
        )
        self.lease_losses = Counter(
            "renewald_lease_losses",
            "Attempt results not recorded because the job was taken away first.",
            registry=self.registry,
        )
        self.registry.register(_StoreGauges(self))

    # -- feeding ---------------------------------------------------------------------

    def observe(self, result: AttemptResult, applied: bool) -> None:
        """The dispatcher's observer: one call per recorded (or fenced-off) attempt."""
        adapter = result.adapter or "none"
        self.attempts.labels(adapter, result.outcome).inc()
        self.duration.labels(adapter).observe(max(0, result.finished_at - result.started_at) / 1000)
        if not applied:
            self.lease_losses.inc()

    def rescued(self, count: int) -> None:
        if count > 0:
            self.rescues.inc(count)

    # -- answering -------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, str]:
        """(healthy, one line saying why) from the age of the last successful poll and
        whether the store answers now."""
        last = self._last_poll()
        if last is None:
            return False, "no successful poll yet"
        age = self.clock.monotonic() - last
        if age > self.healthy_within:
            return False, f"no successful poll for {age:.1f}s (limit {self.healthy_within:g}s)"
        reading = self.reader.current()
        if not reading.up:
            return False, f"database unavailable: {reading.error}"
        return True, f"last poll {age:.1f}s ago"


class _StoreGauges(Collector):
    """Gauges from the `GaugeReader`'s last successful read: due and running jobs, the
    oldest due job's age, paused targets; `renewald_store_up` says whether the database
    answered the read this scrape asked for (or has been answering, when it is slow)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # read the store at scrape time only, never at registration

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        reading = m.reader.current()
        yield GaugeMetricFamily(
            "renewald_store_up",
            "1 when the database answered the latest gauge read in time.",
            value=1 if reading.up else 0,
        )
        g = reading.gauges
        if g is None or reading.read_at is None:
            return
        now = m.clock.now_ms()
        yield GaugeMetricFamily(
            "renewald_gauges_age_seconds",
            "How old the database-derived gauges below are (they keep their last values "
            "while the database is away).",
            value=max(0.0, time.monotonic() - reading.read_at),
        )
        yield GaugeMetricFamily("renewald_jobs_due", "Jobs due now (dispatchable).", value=g.due)
        yield GaugeMetricFamily("renewald_jobs_running", "Jobs running now.", value=g.running)
        oldest = 0.0 if g.oldest_due_at is None else max(0, now - g.oldest_due_at) / 1000
        yield GaugeMetricFamily(
            "renewald_oldest_due_age_seconds",
            "How long the oldest due job has been due (0 when none is).",
            value=oldest,
        )
        yield GaugeMetricFamily(
            "renewald_targets_paused",
            "Delivery targets the breaker has paused now.",
            value=len(g.paused_targets),
        )
        remaining = GaugeMetricFamily(
            "renewald_target_pause_remaining_seconds",
            "Seconds until the breaker lets a paused target be tried again.",
            labels=("target", "adapter"),
        )
        for p in g.paused_targets:
            left = max(0, (p.paused_until or now) - now) / 1000
            remaining.add_metric([p.target_key, p.adapter or ""], left)
        yield remaining


def start_metrics(service: Service) -> MetricsServer:
    """Attach metrics to a service (observer, rescue counts) and start serving them."""
    d = service.config.daemon
    metrics = Metrics(
        store=service.store,
        clock=service.clock,
        dispatch_statuses=d.dispatch_statuses,
        last_poll=lambda: service.polled_ok_at,
        healthy_within=3 * d.poll_interval + 5,
    )
    server = MetricsServer(metrics, service.config.http.listen)  # bind first: fail early
    service.dispatcher.add_observer(metrics.observe)
    # The rescuer has no observer hook; count what each of its runs took back.
    rescue = service.rescuer.run_once

    def counted_rescue(now: int) -> int:
        rescued = rescue(now)
        metrics.rescued(rescued)
        return rescued

    service.rescuer.run_once = counted_rescue  # type: ignore[method-assign]
    metrics.reader.start()
    server.start()
    _log.info("http.listening", address=server.address, paths="/metrics /healthz")
    return server
