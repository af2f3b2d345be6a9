"""The outbound host allow-list."""

from __future__ import annotations

import pytest

from renewald.adapters.allowlist import DEFAULT_ALLOW_HOSTS, HostAllowList
from renewald.errors import ConfigError


def test_default_allows_loopback_only():
    allow = HostAllowList(DEFAULT_ALLOW_HOSTS)

    assert allow.allows("127.0.0.1")
    assert allow.allows("::1")
    assert allow.allows("[::1]")
    assert allow.allows("localhost")
    assert allow.allows("LocalHost.")
    assert not allow.allows("127.0.0.2")
    assert not allow.allows("10.0.0.1")
    assert not allow.allows("example.com")
    assert not allow.allows("")


def test_names_match_exactly_and_case_insensitively():
    allow = HostAllowList(["hooks.example.com"])

    assert allow.allows("HOOKS.example.com")
    assert not allow.allows("evil.hooks.example.com")
    assert not allow.allows("hooks.example.com.evil.net")
    assert not allow.allows("example.com")


def test_networks_match_literal_addresses():
    allow = HostAllowList(["10.0.0.0/8", "fd00::/8", "192.168.1.7"])

    assert allow.allows("10.200.3.4")
    assert allow.allows("fd12::1")
    assert allow.allows("192.168.1.7")
    assert not allow.allows("192.168.1.8")
    assert not allow.allows("11.0.0.1")
    assert allow.allows("::ffff:10.1.2.3")  # IPv4-mapped IPv6


def test_names_are_never_resolved_against_networks():
    allow = HostAllowList(["127.0.0.0/8"])

    assert not allow.allows("localhost")
    assert not allow.allows("127.1")  # resolves to 127.0.0.1, but is not a literal address
    assert not allow.allows("2130706433")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "", "  ", "host name", "a/b", "x:80", 42])
def test_malformed_entries_are_rejected(entry):
    with pytest.raises(ValueError):
        HostAllowList([entry])


def test_from_settings():
    assert HostAllowList.from_settings({}).allows("localhost")
    assert HostAllowList.from_settings({"allow_hosts": ["10.0.0.0/8"]}).allows("10.1.1.1")
    with pytest.raises(ConfigError, match=r"\[adapters.http\] allow_hosts"):
        HostAllowList.from_settings({"allow_hosts": "127.0.0.1"})
    with pytest.raises(ConfigError, match="not a host name or CIDR range"):
        HostAllowList.from_settings({"allow_hosts": ["10.0.0.0/33"]})
