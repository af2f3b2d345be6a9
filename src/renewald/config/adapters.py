"""`[adapters.*]` tables: the keys of the built-in kinds checked, the rest passed through."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from renewald.config.rules import (
    _duration,
    _fail,
    _integer,
    _Invalid,
    _is_http_url,
    _Rule,
    _text,
    _unknown,
)
from renewald.errors import ConfigError

_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?",
    re.IGNORECASE,
)


def _check_host(entry: Any) -> None:
    if not isinstance(entry, str):
        raise _Invalid(f"must be a list of host names and CIDR ranges, got {entry!r}")
    try:
        if "/" in entry:
            ipaddress.ip_network(entry)
        else:
            ipaddress.ip_address(entry)
        return
    except ValueError as err:
        if "/" in entry or ":" in entry:
            raise _Invalid(f"{entry!r} is not a valid IP address or CIDR range ({err})") from None
    last_label = entry.rstrip(".").rpartition(".")[2]
    if not _HOST_NAME.fullmatch(entry) or last_label.isdigit():
        raise _Invalid(f"{entry!r} is neither an exact host name nor an IP address/CIDR range")


def _list_of_hosts(value: Any) -> None:
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of host names and CIDR ranges, got {value!r}")
    for entry in value:
        _check_host(entry)


def _argv(value: Any) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise _Invalid(f'must be a non-empty list of strings such as ["/bin/cmd"], got {value!r}')
    if not value[0]:
        raise _Invalid("must start with a program, got an empty string")


def _table(values: Callable[[Any], bool] | None = None, expected: str = "a table") -> _Rule:
    def check(value: Any) -> None:
        if not isinstance(value, dict) or (
            values is not None and not all(values(v) for v in value.values())
        ):
            raise _Invalid(f"must be {expected}, got {value!r}")

    return _Rule(check)


def _boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")


_OUTCOMES = ("delivered", "retry", "permanent")
_TIMEOUTS = {"timeout": _duration(), "connect_timeout": _duration()}
_IN_FLIGHT = {"max_in_flight_per_target": _integer(1)}

# Keys of the built-in adapter kinds; a third-party kind's table is passed through unchecked.
ADAPTER_KEYS: dict[str, dict[str, _Rule]] = {
    "browser.proxy_delivery": {
        "url": _text(_is_http_url, 'an http(s) URL such as "http://127.0.0.1:4317/deliver"'),
        **_TIMEOUTS,
        **_IN_FLIGHT,
        "clients": _table(),
    },
    "http.webhook": {
        **_TIMEOUTS,
        "secret_env": _text(bool, "the name of an environment variable"),
        "secret": _text(),
        "signature_header": _text(bool, "a header name"),
        **_IN_FLIGHT,
    },
    "command": {
        "argv": _Rule(_argv),
        "timeout": _duration(),
        "env": _table(lambda v: isinstance(v, str), "a table of strings"),
        "exit_codes": _table(
            lambda v: v in _OUTCOMES, f"a table of exit code = {' | '.join(_OUTCOMES)}"
        ),
        **_IN_FLIGHT,
    },
    "http": {"allow_hosts": _Rule(_list_of_hosts)},
    "log": {"include_payload": _Rule(_boolean)},
}

# Settings that look plausible but are refused on purpose, with the reason.
_REFUSED = {
    ("http", "follow_redirects"): "must not be set: renewald never follows redirects, "
    "which could lead a delivery past allow_hosts",
}


def _section_name(kind: str) -> str:
    return f'adapters."{kind}"' if "." in kind else f"adapters.{kind}"


def _check_adapters(name: str, tables: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tables, dict):
        raise _fail(f"{name}: [adapters]", "must be a table of adapter sections")
    for kind, table in tables.items():
        section = _section_name(kind)
        if not isinstance(table, dict):
            raise _fail(f"{name}: [adapters] {kind}", "must be a table")
        for key, value in table.items():
            if isinstance(value, dict) and f"{kind}.{key}" in ADAPTER_KEYS:
                dotted = _section_name(f"{kind}.{key}")
                raise ConfigError(
                    f"{name}: [adapters.{kind}.{key}] is read as kind {kind!r}: "
                    f"write [{dotted}] with quotes"
                )
        rules = ADAPTER_KEYS.get(kind)
        if rules is None:
            continue
        for key, value in table.items():
            where = f"{name}: [{section}] {key}"
            if (kind, key) in _REFUSED:
                raise _fail(where, _REFUSED[kind, key])
            if key not in rules:
                raise _unknown(name, f"key [{section}] {key}", key, list(rules))
            try:
                rules[key].check(value)
            except _Invalid as err:
                raise _fail(where, str(err)) from None
    return tables
