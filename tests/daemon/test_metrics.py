"""Metrics: the gauges read at scrape time and the health answer, on both backends."""

from __future__ import annotations

from renewald.daemon.metrics import Metrics
from renewald.store import Store
from tests.clock import ManualClock
from tests.store.factories import T0, attempt_result, job_value, make_job
from tests.store.test_ops import OWNER, add_pause, claim, finish


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split(" ")[1])
    return None


def test_metrics_gauges_and_health(store: Store) -> None:
    make_job(store, job_id="running", conversation="c", next_attempt_at=T0 - 100_000)
    [c] = claim(store, now=T0)
    make_job(store, job_id="due", conversation="c", next_attempt_at=T0 - 90_000)
    add_pause(store, "log:x", until=T0 + 30_000)
    clock = ManualClock(T0, monotonic=100.0)
    last_poll: list[float | None] = [None]
    metrics = Metrics(
        store=store,
        clock=clock,
        adapters=("log",),
        last_poll=lambda: last_poll[0],
        healthy_within=8,
    )
    text = metrics.exposition().decode()
    assert sample(text, "renewald_store_up") == 1.0
    assert sample(text, "renewald_jobs_due") == 1.0
    assert sample(text, "renewald_jobs_running") == 1.0
    assert sample(text, "renewald_targets_paused") == 1.0
    assert 'renewald_target_pause_remaining_seconds{adapter="log",target="log:x"} 30.0' in text

    finish(store, c, status="done", now=T0)
    make_job(store, job_id="other", next_attempt_at=T0 - 30_000)
    text = metrics.exposition().decode()
    assert sample(text, "renewald_jobs_due") == 2.0
    assert sample(text, "renewald_jobs_running") == 0.0
    assert sample(text, "renewald_oldest_due_age_seconds") == 90.0

    result = attempt_result(job_value(job_id="x"), lease_owner=OWNER, finished_at=T0 + 250)
    metrics.observe(result, True)
    metrics.observe(result, False)
    metrics.rescued(2)
    text = metrics.exposition().decode()
    assert 'renewald_attempts_total{adapter="log",outcome="delivered"} 2.0' in text
    labels = 'adapter="log",le="0.25",outcome="delivered"'
    assert f"renewald_delivery_duration_seconds_bucket{{{labels}}} 2.0" in text
    assert 'renewald_jobs_finished_total{reason="delivered"} 1.0' in text
    assert sample(text, "renewald_lease_losses_total") == 1.0
    assert sample(text, "renewald_rescues_total") == 2.0

    assert metrics.health() == (False, "no successful poll yet")
    last_poll[0] = 92.0
    assert metrics.health()[0] is True  # 8s: the boundary is still healthy
    clock.mono = 100.001
    healthy, why = metrics.health()
    assert not healthy and "no successful poll for 8.0s" in why
