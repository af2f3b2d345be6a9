"""Delivery adapters, found by `target_kind`.

Built-in kinds are listed in `BUILTIN`; third-party ones register a factory in the
`renewald.adapters` entry-point group under the kind they serve. The group is read the
first time a kind is not built in (or every kind is asked for): reading it means scanning
every installed package's metadata, which a daemon that only uses built-in kinds never
needs at start-up.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from renewald.adapters.base import (
    Adapter,
    AdapterFactory,
    Conversation,
    Delivery,
    Outcome,
    OutcomeKind,
)
from renewald.errors import ConfigError

__all__ = [
    "BUILTIN",
    "Adapter",
    "AdapterFactory",
    "AdapterRegistry",
    "Conversation",
    "Delivery",
    "Outcome",
    "OutcomeKind",
]

BUILTIN: dict[str, str] = {
    "log": "renewald.adapters.log:factory",
    "browser.proxy_delivery": "renewald.adapters.bridge:factory",
    "http.webhook": "renewald.adapters.webhook:factory",
    "command": "renewald.adapters.command:factory",
}


def _load(ref: str) -> AdapterFactory:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class AdapterRegistry:
    """Adapters by kind, built lazily from their config sections and reused across jobs."""

    def __init__(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        self._settings = settings
        self._factories: dict[str, str | AdapterFactory] = dict(BUILTIN)
        self._plugins_read = False
        self._adapters: dict[str, Adapter] = {}
        self._failed: dict[str, ConfigError] = {}
        self._lock = threading.Lock()

    def kinds(self) -> list[str]:
        with self._lock:
            self._read_plugins()
            return sorted(self._factories)

    def _read_plugins(self) -> None:
        """Add the entry-point group's kinds (under `_lock`); a built-in or registered
        kind keeps its own factory."""
        if self._plugins_read:
            return
        from importlib.metadata import entry_points

        for ep in entry_points(group="renewald.adapters"):
            self._factories.setdefault(ep.name, ep.value)
        self._plugins_read = True

    def register(self, kind: str, factory: AdapterFactory) -> None:
        with self._lock:
            self._factories[kind] = factory
            self._failed.pop(kind, None)

    def get(self, kind: str) -> Adapter | None:
        """The adapter for `kind`, or None when no adapter serves it.

        Safe to call from many worker threads: each adapter is built once. An adapter
        that cannot be built (a bad setting, a secret variable that is not set, a plugin
        that fails to load) raises `ConfigError`, and keeps raising the same error:
        configuration and environment do not change while the process runs.
        """
        adapter = self._adapters.get(kind)
        if adapter is not None:
            return adapter
        with self._lock:
            adapter = self._adapters.get(kind)
            if adapter is not None:
                return adapter
            failed = self._failed.get(kind)
            if failed is not None:
                raise failed
            ref = self._factories.get(kind)
            if ref is None:
                self._read_plugins()
                ref = self._factories.get(kind)
            if ref is None:
                return None
            try:
                factory = _load(ref) if isinstance(ref, str) else ref
                section = dict(self._settings.get("http", {})) if kind != "log" else {}
                section.update(self._settings.get(kind, {}))
                adapter = factory(section)
            except ConfigError as exc:
                self._failed[kind] = exc
                raise
            except Exception as exc:  # a plugin's bug is a configuration problem here
                error = ConfigError(
                    f"adapter {kind!r} could not be built: {type(exc).__name__}: {exc}"
                )
                self._failed[kind] = error
                raise error from exc
            self._adapters[kind] = adapter
            return adapter

    def close(self) -> None:
        with self._lock:
            adapters = list(self._adapters.values())
            self._adapters.clear()
        for adapter in adapters:
            adapter.close()
