"""The `browser.proxy_delivery` adapter: POSTs the bridge request to the browser bridge.

The bridge (a local service in front of the browser extension) listens at the configured
`url`; the target's `clientId` picks the browser. `clients` overrides the url and
timeouts for one clientId:

```toml
[adapters."browser.proxy_delivery"]
url = "http://127.0.0.1:4317/deliver"
timeout = "10s"
connect_timeout = "3s"
max_in_flight_per_target = 1
clients."firefox-claude" = { url = "http://127.0.0.1:4318/deliver", timeout = "20s" }
```
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from renewald.adapters.allowlist import HostAllowList
from renewald.adapters.base import Delivery, Outcome
from renewald.adapters.http import (
    BadPayload,
    Clock,
    HttpSender,
    Timeouts,
    check_url,
    request_body,
    request_headers,
    setting_int,
)
from renewald.errors import ConfigError

KIND = "browser.proxy_delivery"
SECTION = f'[adapters."{KIND}"]'
DEFAULT_URL = "http://127.0.0.1:4317/deliver"
_CLIENT_KEYS = frozenset({"url", "timeout", "connect_timeout"})


@dataclass(frozen=True)
class _Route:
    url: str
    timeouts: Timeouts


def _route(settings: Mapping[str, Any], allow: HostAllowList, *, section: str) -> _Route:
    url = settings.get("url", DEFAULT_URL)
    checked = check_url(url, allow, what="url")
    if isinstance(checked, str):
        # A bad bridge url is the operator's to fix: refuse to start rather than fail
        # every job permanently.
        raise ConfigError(f"{section} {checked}")
    return _Route(url=str(url), timeouts=Timeouts.from_settings(settings, section=section))


class BridgeAdapter:
    """Delivers through the browser bridge; one target = one browser (`clientId`)."""

    kind = KIND

    def __init__(self, settings: Mapping[str, Any], *, clock: Clock = time.time) -> None:
        allow = HostAllowList.from_settings(settings)
        self.max_in_flight_per_target = setting_int(
            settings, "max_in_flight_per_target", 1, section=SECTION
        )
        self._default = _route(settings, allow, section=SECTION)
        clients = settings.get("clients", {})
        if not isinstance(clients, Mapping):
            raise ConfigError(f"{SECTION} clients: expected a table of clientId = {{ url = ... }}")
        self._clients: dict[str, _Route] = {}
        for client_id, overrides in clients.items():
            section = f'{SECTION} clients."{client_id}"'
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"{section}: expected a table with url and/or timeout")
            unknown = sorted(set(overrides) - _CLIENT_KEYS)
            if unknown:
                raise ConfigError(f"{section}: unknown keys {', '.join(unknown)}")
            merged = {key: settings[key] for key in _CLIENT_KEYS if key in settings}
            merged.update(overrides)
            self._clients[str(client_id)] = _route(merged, allow, section=section)
        self._sender = HttpSender(allow, clock=clock)

    def target_key(self, delivery: Delivery) -> str:
        return f"browser:{delivery.target.get('clientId') or ''}"

    def deliver(self, delivery: Delivery) -> Outcome:
        client_id = delivery.target.get("clientId")
        if not isinstance(client_id, str) or not client_id:
            return Outcome.permanent("target has no clientId", error_class="BadTarget")
        try:
            body = request_body(delivery)
        except BadPayload as exc:
            return Outcome.permanent(str(exc), error_class="BadPayload")
        route = self._clients.get(client_id, self._default)
        return self._sender.post(route.url, body, request_headers(delivery), route.timeouts)

    def close(self) -> None:
        self._sender.close()


def factory(settings: Mapping[str, Any]) -> BridgeAdapter:
    return BridgeAdapter(settings)
