"""The daemon's own series: bounded labels, what the latency histogram leaves out, the
observers' counters, and no `_created` samples. (The database gauges and a live scrape
are tested in tests/store/test_ops.py and tests/e2e/test_metrics.py.)"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from renewald.daemon.metrics import Metrics
from renewald.daemon.schedules import TickResult
from renewald.store import AttemptResult
from tests.store.factories import attempt_result, job_value

T0 = 1_795_000_000_000


class _Clock:
    def now_ms(self) -> int:
        return T0

    def monotonic(self) -> float:
        return 100.0


class _NoStore:
    """Never read here: the gauge reader is not started and nothing is scraped from it."""

    def with_budget(self, _seconds: float) -> _NoStore:
        return self


def _metrics() -> Metrics:
    return Metrics(
        store=_NoStore(),  # type: ignore[arg-type]
        clock=_Clock(),
        adapters=("log", "http.webhook"),
        in_flight=lambda: 3,
        last_poll=lambda: 90.0,
    )


def _result(**fields: Any) -> AttemptResult:
    return attempt_result(
        job_value(), now=T0, **{"lease_owner": "me", "finished_at": T0 + 40, **fields}
    )


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if family.name.startswith("renewald_") and family.name != "renewald_store_up"
    }


def test_labels_stay_bounded_and_deferrals_stay_out_of_the_latency() -> None:
    m = _metrics()
    m.observe(_result(), True)
    m.observe(_result(adapter="nosuch", outcome="permanent", status="failed",
                      terminal_reason="permanent"), True)  # fmt: skip
    m.observe(_result(adapter=None, outcome="deferred", status="pending"), True)
    m.observe(_result(outcome="retry", status="pending"), False)
    m.observe(_result(outcome="delivered", status="failed", terminal_reason="cancelled"), True)
    s = _samples(m)
    attempts = {k[1]: v for k, v in s.items() if k[0] == "renewald_attempts_total" and v}
    assert attempts == {
        (("adapter", "log"), ("outcome", "delivered")): 2.0,
        (("adapter", "other"), ("outcome", "permanent")): 1.0,
        (("adapter", "other"), ("outcome", "deferred")): 1.0,
        (("adapter", "log"), ("outcome", "retry")): 1.0,
    }
    counts = {k[1]: v for k, v in s.items() if k[0] == "renewald_delivery_duration_seconds_count"}
    assert counts == {
        (("adapter", "log"), ("outcome", "delivered")): 2.0,
        (("adapter", "other"), ("outcome", "permanent")): 1.0,
        (("adapter", "log"), ("outcome", "retry")): 1.0,
    }
    finished = {k[1][0][1]: v for k, v in s.items() if k[0] == "renewald_jobs_finished_total"}
    assert finished["delivered"] == 1.0 and finished["permanent"] == 1.0
    assert finished["cancelled"] == 1.0 and finished["exhausted"] == 0.0
    assert s[("renewald_lease_losses_total", ())] == 1.0
    assert s[("renewald_in_flight", ())] == 3.0
    assert s[("renewald_last_successful_poll_timestamp_seconds", ())] == T0 / 1000 - 10.0
    assert not any(name.endswith("_created") for name, _ in s)


def test_observers_count_schedule_fires_breaker_transitions_and_rescues() -> None:
    m = _metrics()
    m.scheduled(TickResult(created=["a", "b"], existing=["c"], skipped=1, invalid=1, dropped=4))
    for transition in ("opened", "probe", "opened", "weird"):
        m.breaker_moved(transition)
    m.rescued(2)
    m.rescued(0)
    s = _samples(m)
    fires = {k[1][0][1]: v for k, v in s.items() if k[0] == "renewald_schedule_fires_total"}
    assert fires == {
        "created": 2.0, "existing": 1.0, "skipped": 1.0, "raced": 0.0, "invalid": 1.0,
        "dropped": 4.0,
    }  # fmt: skip
    moves = {k[1][0][1]: v for k, v in s.items() if k[0] == "renewald_breaker_transitions_total"}
    assert moves == {"opened": 2.0, "probe": 1.0, "closed": 0.0, "other": 1.0}
    assert s[("renewald_rescues_total", ())] == 2.0
    info = [k for k in s if k[0] == "renewald_build_info"]
    assert len(info) == 1 and dict(info[0][1])["version"]
