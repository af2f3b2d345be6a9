"""When the daemon polls next: at the earliest due time, never later than poll_interval."""

from __future__ import annotations

from datetime import datetime

import pytest

from renewald.clock import ms_to_datetime
from renewald.config import Config, DaemonConfig, LoggingConfig
from renewald.daemon.service import Service
from renewald.store import Store

T0 = 1_800_000_000_000


class ManualClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000


class SchedulerProbe:
    """Records what the service asks of APScheduler's `modify_job`."""

    def __init__(self) -> None:
        self.runs: list[datetime] = []

    def modify_job(self, job_id: str, **changes: datetime) -> None:
        assert job_id == "poll"
        self.runs.append(changes["next_run_time"])


@pytest.fixture
def service(store: Store, tmp_path) -> Service:
    config = Config(
        daemon=DaemonConfig(poll_interval=1.0),
        logging=LoggingConfig(dir=tmp_path / "logs"),
    )
    svc = Service(config, store, clock=ManualClock(T0))
    svc._scheduler = SchedulerProbe()  # type: ignore[assignment]
    return svc


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_wake_at_the_due_time_when_sooner_than_the_interval(service: Service) -> None:
    service.wake_at(T0 + 250, polled_at=T0)
    assert service._scheduler.runs == [ms_to_datetime(T0 + 250)]  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_far_due_time_never_stretches_the_interval(service: Service) -> None:
    service.wake_at(T0 + 3_600_000, polled_at=T0)
    assert service._scheduler.runs == [ms_to_datetime(T0 + 1000)]  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_later_wake_does_not_replace_a_sooner_one(service: Service) -> None:
    service.wake_at(T0 + 100, polled_at=T0)
    service.wake_at(T0 + 500)
    service.wake_at(T0 + 50)
    assert service._scheduler.runs == [  # type: ignore[union-attr]
        ms_to_datetime(T0 + 100),
        ms_to_datetime(T0 + 50),
    ]
