"""A duty that ends in a database error is logged, not raised, and still marks the watchdog."""

from __future__ import annotations

import pytest

from renewald.config import Config, LoggingConfig
from renewald.daemon.service import Service
from renewald.store import Store
from tests.store.factories import T0, locked


class Clock:
    def now_ms(self) -> int:
        return T0

    def monotonic(self) -> float:
        return 1000.0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_tick_ending_in_a_database_error_still_marks_the_watchdog(store: Store, tmp_path) -> None:
    service = Service(Config(logging=LoggingConfig(dir=tmp_path / "logs")), store, clock=Clock())

    def poll_tick() -> None:
        store.with_budget(0.05).read(locked)

    service.guarded(poll_tick)()  # logged, not raised
    assert service.gate.last("poll") == 1000.0
    assert service.polled_ok_at is None  # /healthz still sees no successful poll

    def rescue_tick() -> None:
        raise RuntimeError("a bug in the duty")

    with pytest.raises(RuntimeError):
        service.guarded(rescue_tick)()  # a bug still ends the duty (and the process)
