"""Delivery adapters, found by `target_kind`.

Built-in kinds are listed in `BUILTIN`; third-party ones register a factory in the
`renewald.adapters` entry-point group under the kind they serve.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from renewald.adapters.base import (
    Adapter,
    AdapterFactory,
    Conversation,
    Delivery,
    Outcome,
    OutcomeKind,
)

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
        for ep in entry_points(group="renewald.adapters"):
            self._factories.setdefault(ep.name, ep.value)
        self._adapters: dict[str, Adapter] = {}

    def kinds(self) -> list[str]:
        return sorted(self._factories)

    def register(self, kind: str, factory: AdapterFactory) -> None:
        self._factories[kind] = factory

    def get(self, kind: str) -> Adapter | None:
        """The adapter for `kind`, or None when no adapter serves it."""
        adapter = self._adapters.get(kind)
        if adapter is not None:
            return adapter
        ref = self._factories.get(kind)
        if ref is None:
            return None
        factory = _load(ref) if isinstance(ref, str) else ref
        section = dict(self._settings.get("http", {})) if kind != "log" else {}
        section.update(self._settings.get(kind, {}))
        adapter = factory(section)
        self._adapters[kind] = adapter
        return adapter

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()
