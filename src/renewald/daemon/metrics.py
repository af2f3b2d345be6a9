"""Prometheus `/metrics` and `/healthz` over HTTP (optional: `[http] listen`, off by default).

Two kinds of series (docs/operations.md lists them all):

- *This process*: counters and histograms fed by hooks — the dispatcher's observer (every
  recorded attempt), the rescuer's, the breaker's and the schedule tick's observers —
  plus gauges read from the process at scrape time (`renewald_in_flight`, the last
  successful poll, `renewald_build_info`, `process_*`). Sum these across daemons.
- *The whole database*: due and running jobs, the oldest due job's age, paused targets
  (their help says "Database-wide"). Every daemon reports the same values; use `max()`,
  not `sum()`. They come from a `GaugeReader` (daemon/gauges.py) on a thread of
  its own: a scrape never waits on the database for more than a second, and answers
  `renewald_store_up 0` with the last values while the database is away.

Every label takes a bounded set of values: adapters are the configured kinds, anything
else (a tracker's typo, a missing kind) is `other`; outcomes and reasons are the daemon's
own words. No `_created` series. Everything lives in a dedicated `CollectorRegistry`.

`/healthz` answers 200 while the daemon's poll succeeded within `Timings.healthy_within_ms`
(the watchdog's own limit) and the store answers, else 503.

The server (daemon/listener.py) is the standard library's `ThreadingHTTPServer` on a
daemon thread, started by `Service.run()` and shut down when it returns.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import prometheus_client
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.exposition import generate_latest

from renewald import __version__
from renewald.clock import Clock
from renewald.daemon.gauges import READ_BUDGET, GaugeReader, ProcessGauges, StoreGauges, one_of
from renewald.daemon.listener import MetricsServer
from renewald.store import AttemptResult, Store

if TYPE_CHECKING:
    from renewald.adapters import AdapterRegistry
    from renewald.config import Config, Timings
    from renewald.daemon.dispatcher import Dispatcher
    from renewald.daemon.rescuer import Rescuer
    from renewald.daemon.schedules import TickResult


class Observed(Protocol):
    """What metrics attach to: the running service (daemon/service.py), named by the parts
    it reads, so that this module does not import the service that starts it."""

    config: Config
    store: Store
    clock: Clock
    timings: Timings
    adapters: AdapterRegistry
    dispatcher: Dispatcher
    rescuer: Rescuer
    schedule_observers: list[Callable[[TickResult], None]]
    polled_ok_at: float | None


_log = structlog.get_logger("renewald.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Outcomes of attempts that reached a target (or tried to): the latency histogram's.
SENT_OUTCOMES = ("delivered", "retry", "rate_limited", "permanent")
OUTCOMES = (*SENT_OUTCOMES, "deferred", "expired", "malformed", "abandoned")
FINISH_REASONS = (
    "delivered",
    "exhausted",
    "permanent",
    "expired",
    "cancelled",
    "abandoned",
    "malformed",
)
SCHEDULE_RESULTS = ("created", "existing", "skipped", "raced", "invalid", "dropped")
BREAKER_TRANSITIONS = ("opened", "probe", "closed")

# `_created` samples double the series count and no dashboard reads them.
prometheus_client.disable_created_metrics()


class Metrics:
    """The daemon's metrics: counters it updates, gauges it reads from itself and the store."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        adapters: Sequence[str] = (),
        last_poll: Callable[[], float | None] = lambda: None,
        in_flight: Callable[[], int] = lambda: 0,
        healthy_within: float = 8.0,
        refresh_every: float = 5.0,
    ) -> None:
        self.store = store.with_budget(READ_BUDGET)
        self.clock = clock
        self.adapters = tuple(adapters)
        self._last_poll = last_poll
        self._in_flight = in_flight
        self.healthy_within = healthy_within
        self.reader = GaugeReader(
            lambda: self.store.gauges(now=self.clock.now_ms()),
            interval=refresh_every,
        )
        self.registry = r = CollectorRegistry()
        self._define_series(r)
        Info("renewald_build", "The running renewald.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        ProcessCollector(registry=r)
        for outcome in OUTCOMES:  # the common series exist from the start (rate() needs them)
            for adapter in self.adapters:
                self.attempts.labels(adapter, outcome)
        for reason in FINISH_REASONS:
            self.finished.labels(reason)
        for result in SCHEDULE_RESULTS:
            self.schedule_fires.labels(result)
        for transition in BREAKER_TRANSITIONS:
            self.breaker_transitions.labels(transition)
        r.register(ProcessGauges(in_flight, self.last_poll_age, clock))
        r.register(StoreGauges(self.reader, clock, self.adapters))

    def _define_series(self, r: CollectorRegistry) -> None:
        """The series this daemon feeds (the database-wide gauges are read at a scrape)."""
        self.attempts = Counter(
            "renewald_attempts",
            "Delivery attempts finished by this daemon, by adapter and outcome.",
            ("adapter", "outcome"),
            registry=r,
        )
        self.duration = Histogram(
            "renewald_delivery_duration_seconds",
            "How long the deliveries this daemon sent took, by adapter and outcome "
            "(deferrals and attempts never sent are not in it).",
            ("adapter", "outcome"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.finished = Counter(
            "renewald_jobs_finished",
            "Jobs this daemon's attempts ended, by terminal reason (delivered for done).",
            ("reason",),
            registry=r,
        )
        self.rescues = Counter(
            "renewald_rescues",
            "Abandoned running jobs this daemon took back (lease expired or owner dead).",
            registry=r,
        )
        self.lease_losses = Counter(
            "renewald_lease_losses",
            "Attempt results not recorded because the job was taken away first.",
            registry=r,
        )
        self.schedule_fires = Counter(
            "renewald_schedule_fires",
            "Schedule fires this daemon handled, by result (created: a job; existing: "
            "the job was there; skipped: gated; raced: another daemon fired it; invalid: "
            "an unreadable schedule parked; dropped: by the misfire policy).",
            ("result",),
            registry=r,
        )
        self.breaker_transitions = Counter(
            "renewald_breaker_transitions",
            "Circuit-breaker transitions this daemon made (opened, probe, closed).",
            ("transition",),
            registry=r,
        )

    # -- feeding ---------------------------------------------------------------------

    def observe(self, result: AttemptResult, applied: bool) -> None:
        """The dispatcher's observer: one call per recorded (or fenced-off) attempt."""
        adapter = one_of(result.adapter, self.adapters)
        outcome = one_of(result.outcome, OUTCOMES)
        self.attempts.labels(adapter, outcome).inc()
        if outcome in SENT_OUTCOMES:
            seconds = max(0, result.finished_at - result.started_at) / 1000
            self.duration.labels(adapter, outcome).observe(seconds)
        if not applied:
            self.lease_losses.inc()
        elif result.status == "done":
            self.finished.labels("delivered").inc()
        elif result.status == "failed":
            self.finished.labels(one_of(result.terminal_reason, FINISH_REASONS)).inc()

    def rescued(self, count: int) -> None:
        if count > 0:
            self.rescues.inc(count)

    def scheduled(self, tick: TickResult) -> None:
        counts = {
            "created": len(tick.created),
            "existing": len(tick.existing),
            "skipped": tick.skipped,
            "raced": tick.raced,
            "invalid": tick.invalid,
            "dropped": tick.dropped,
        }
        for result, n in counts.items():
            if n:
                self.schedule_fires.labels(result).inc(n)

    def breaker_moved(self, transition: str) -> None:
        self.breaker_transitions.labels(one_of(transition, BREAKER_TRANSITIONS)).inc()

    # -- answering -------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def last_poll_age(self) -> float | None:
        last = self._last_poll()
        return None if last is None else self.clock.monotonic() - last

    def health(self) -> tuple[bool, str]:
        """(healthy, one line saying why) from the age of the last successful poll and
        whether the store answers now."""
        age = self.last_poll_age()
        if age is None:
            return False, "no successful poll yet"
        if age > self.healthy_within:
            return False, f"no successful poll for {age:.1f}s (limit {self.healthy_within:g}s)"
        reading = self.reader.current()
        if not reading.up:
            return False, f"database unavailable: {reading.error}"
        return True, f"last poll {age:.1f}s ago"


def start_metrics(service: Observed) -> MetricsServer:
    """Attach metrics to a service (its observers) and start serving them."""
    metrics = Metrics(
        store=service.store,
        clock=service.clock,
        adapters=service.adapters.kinds(),
        last_poll=lambda: service.polled_ok_at,
        in_flight=service.dispatcher.in_flight,
        healthy_within=service.timings.healthy_within_ms / 1000,
    )
    server = MetricsServer(metrics, service.config.http.listen)  # bind first: fail early
    service.dispatcher.add_observer(metrics.observe)
    service.dispatcher.breakers.observers.append(metrics.breaker_moved)
    service.rescuer.observers.append(metrics.rescued)
    service.schedule_observers.append(metrics.scheduled)
    metrics.reader.start()
    server.start()
    _log.info("http.listening", address=server.address, paths="/metrics /healthz")
    return server
