"""The outbound host allow-list of the HTTP adapters (`[adapters.http] allow_hosts`).

Targets come from a database another program writes, so a webhook URL is untrusted
input: before any connection is opened, its host must be listed here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from renewald.errors import ConfigError

DEFAULT_ALLOW_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")

_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _normalize(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".") if host != "." else host


class HostAllowList:
    """Exact host names (case-insensitive) and IP networks (CIDR) that may be contacted.

    A host name matches only a listed name, never a network: names are not resolved to
    check them against CIDR ranges. Resolving first and connecting later is a
    time-of-check/time-of-use gap that DNS rebinding exploits (the name answers with an
    allowed address for the check and an internal one for the connection), and an
    attacker who controls a name's zone can point it anywhere. Listing a name means
    trusting whoever serves its DNS; listing a network admits only literal addresses.
    Anything that is neither a listed name nor a literal IP inside a listed network
    (including odd forms such as `127.1`) is refused: the check fails closed.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                raise ValueError(f"{entry!r} is not a host name or CIDR range")
            normalized = _normalize(entry)
            try:
                networks.append(ipaddress.ip_network(normalized, strict=False))
                continue
            except ValueError:
                pass
            if not _HOST_NAME.fullmatch(normalized):
                raise ValueError(f"{entry!r} is not a host name or CIDR range")
            names.add(normalized)
        self.names = frozenset(names)
        self.networks = tuple(networks)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> HostAllowList:
        """The list in `allow_hosts`, or the loopback default; ConfigError when malformed."""
        entries = settings.get("allow_hosts", DEFAULT_ALLOW_HOSTS)
        if isinstance(entries, str) or not isinstance(entries, list | tuple):
            raise ConfigError("[adapters.http] allow_hosts: expected a list of hosts")
        try:
            return cls(entries)
        except ValueError as exc:
            raise ConfigError(f"[adapters.http] allow_hosts: {exc}") from None

    def allows(self, host: str) -> bool:
        """Whether `host` (a URL's host: a name or a literal IP) may be contacted."""
        normalized = _normalize(host)
        if not normalized:
            return False
        try:
            address = ipaddress.ip_address(normalized)
        except ValueError:
            return normalized in self.names
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.networks
        )
