"""The adapter registry under concurrent workers, and adapters that cannot be built."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from renewald.adapters import AdapterRegistry
from renewald.adapters.base import Outcome
from renewald.errors import ConfigError
from tests.adapters.conftest import make_delivery


class Counting:
    kind = "acme.counting"
    max_in_flight_per_target = 1

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.closed = False

    def target_key(self, delivery: Any) -> str:
        return "acme:1"

    def deliver(self, delivery: Any) -> Outcome:
        return Outcome.delivered()

    def close(self) -> None:
        self.closed = True


def test_concurrent_gets_build_one_adapter() -> None:
    built: list[Counting] = []
    gate = threading.Event()

    def factory(settings: Mapping[str, Any]) -> Counting:
        gate.wait(5)  # keep the first builder busy while the other threads call get()
        adapter = Counting(settings)
        built.append(adapter)
        return adapter

    registry = AdapterRegistry({"acme.counting": {"channel": "ops"}})
    registry.register("acme.counting", factory)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(registry.get, "acme.counting") for _ in range(8)]
        gate.set()
        got = {id(f.result()) for f in futures}
    assert len(built) == 1 and got == {id(built[0])}
    assert built[0].settings["channel"] == "ops"
    registry.close()
    assert built[0].closed


def test_a_config_error_is_raised_every_time_and_built_once() -> None:
    calls: list[int] = []

    def factory(settings: Mapping[str, Any]) -> Counting:
        calls.append(1)
        raise ConfigError("[adapters.acme] token_env: environment variable ACME is not set")

    registry = AdapterRegistry({})
    registry.register("acme.counting", factory)
    for _ in range(3):
        with pytest.raises(ConfigError, match="ACME is not set"):
            registry.get("acme.counting")
    assert calls == [1], "the environment does not change: no second try"


def test_a_crashing_factory_becomes_a_config_error() -> None:
    def factory(settings: Mapping[str, Any]) -> Counting:
        raise KeyError("channel")

    registry = AdapterRegistry({})
    registry.register("acme.counting", factory)
    with pytest.raises(ConfigError, match=r"adapter 'acme.counting' could not be built: KeyError"):
        registry.get("acme.counting")


def test_registering_again_forgets_the_failure() -> None:
    registry = AdapterRegistry({})

    def broken(settings: Mapping[str, Any]) -> Counting:
        raise ConfigError("bad")

    registry.register("acme.counting", broken)
    with pytest.raises(ConfigError):
        registry.get("acme.counting")
    registry.register("acme.counting", Counting)
    adapter = registry.get("acme.counting")
    assert adapter is not None and adapter.target_key(make_delivery()) == "acme:1"
    registry.close()


def test_missing_webhook_secret_variable_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RENEWALD_TEST_NO_SUCH_SECRET", raising=False)
    registry = AdapterRegistry({"http.webhook": {"secret_env": "RENEWALD_TEST_NO_SUCH_SECRET"}})
    with pytest.raises(ConfigError, match="RENEWALD_TEST_NO_SUCH_SECRET is not set"):
        registry.get("http.webhook")
    assert registry.get("log") is not None, "other kinds are unaffected"
    registry.close()


def test_unknown_kind_is_none() -> None:
    assert AdapterRegistry({}).get("carrier.pigeon") is None
