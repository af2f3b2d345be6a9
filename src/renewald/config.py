"""Configuration: typed sections of DESIGN §9, loaded from defaults, file, environment, flags.

Precedence, highest first: flags (`--config`, `--db`), environment (`RENEWALD_CONFIG`,
`RENEWALD_DB`, `RENEWALD_<SECTION>_<KEY>`), the TOML file, the defaults below.

Every field of a section dataclass carries a `_Rule` in its metadata; one generic loader
walks the fields, so adding a setting is adding one line. Every mistake becomes a
`ConfigError` of one line that names where the value came from (file and key, or the
environment variable, or the flag) and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from renewald import credentials
from renewald.durations import parse_duration
from renewald.errors import ConfigError

__all__ = [
    "BreakerConfig",
    "Config",
    "DaemonConfig",
    "DatabaseConfig",
    "HttpConfig",
    "LoggingConfig",
    "RetentionConfig",
    "RetryConfig",
    "load_config",
]

ENV_PREFIX = "RENEWALD_"
DEFAULT_FILE = Path("config.toml")
DEFAULT_LOG_DIR = Path("var/logs/renewal")


class _Invalid(ValueError):
    """A value is wrong; the message says what was expected, without saying where."""


@dataclass(frozen=True)
class _Rule:
    """How one setting is checked (`check` returns the typed value) and read from a string."""

    check: Callable[[Any], Any]
    from_env: Callable[[str], Any] = str


def _rule(rule: _Rule) -> dict[str, _Rule]:
    return {"rule": rule}


# --- rules ---------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    # TOML `true` is a bool, and bool is an int subclass: never let it pass as a number.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lenient(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Convert an environment string, or leave it as is so the check reports it."""

    def parse(text: str) -> Any:
        try:
            return convert(text.strip())
        except ValueError:
            return text

    return parse


def _integer(minimum: int) -> _Rule:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid(f"must be an integer >= {minimum}, got {value!r}")
        return value

    return _Rule(check, _lenient(int))


def _number(expected: str, ok: Callable[[float], bool]) -> _Rule:
    def check(value: Any) -> float:
        if not _is_number(value) or not ok(value):
            raise _Invalid(f"must be {expected}, got {value!r}")
        return float(value)

    return _Rule(check, _lenient(float))


def _duration(*, positive: bool = True) -> _Rule:
    """Durations are strings with a unit; a bare number is refused (seconds or ms?)."""

    def check(value: Any) -> float:
        if _is_number(value):
            raise _Invalid(f'{value!r} has no unit: write a duration such as "{value}s"')
        if not isinstance(value, str):
            raise _Invalid(f'must be a duration such as "30s", got {value!r}')
        try:
            seconds = parse_duration(value)
        except ValueError as err:
            raise _Invalid(str(err)) from None
        if positive and seconds <= 0:
            raise _Invalid(f"must be longer than zero, got {value!r}")
        return seconds

    return _Rule(check)


def _text(ok: Callable[[str], bool] = lambda s: True, expected: str = "a string") -> _Rule:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not ok(value):
            raise _Invalid(f"must be {expected}, got {value!r}")
        return value

    return _Rule(check)


def _choice(*options: str) -> _Rule:
    """One of `options`, case-insensitive, returned as spelled in `options`."""
    by_fold = {o.casefold(): o for o in options}

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.casefold() not in by_fold:
            raise _Invalid(f"must be one of {', '.join(options)}, got {value!r}")
        return by_fold[value.casefold()]

    return _Rule(check)


def _path() -> _Rule:
    def check(value: Any) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"must be a directory path, got {value!r}")
        return Path(value)

    return _Rule(check)


def _words() -> _Rule:
    """A non-empty list of strings; from the environment, comma-separated."""

    def check(value: Any) -> tuple[str, ...]:
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise _Invalid(f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    return _Rule(check, lambda s: [w.strip() for w in s.split(",") if w.strip()])


def _is_db_url(text: str) -> bool:
    try:
        make_url(text)
    except ArgumentError:
        return False
    return True


def _is_listen(text: str) -> bool:
    if text == "":
        return True
    host, sep, port = text.rpartition(":")
    return bool(sep and host.strip("[]") and port.isdigit() and int(port) <= 65535)


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# --- sections ------------------------------------------------------------------------

_DURATION = _rule(_duration())
_DURATION_OR_ZERO = _rule(_duration(positive=False))
_COUNT = _rule(_integer(1))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = field(
        default="sqlite:///var/artifact.db",
        metadata=_rule(
            _text(
                _is_db_url,
                "a database URL such as sqlite:///var/artifact.db or "
                "postgresql+psycopg://user@host/db",
            )
        ),
    )
    sqlite_synchronous: str = field(default="NORMAL", metadata=_rule(_choice("NORMAL", "FULL")))
    busy_timeout: float = field(default=5.0, metadata=_DURATION)
    # How long `migrate` and `run` wait for an unreachable database before exit 69; fits
    # in the unit's TimeoutStartSec (120s), which they extend while waiting anyway.
    startup_wait: float = field(default=90.0, metadata=_DURATION_OR_ZERO)


@dataclass(frozen=True)
class DaemonConfig:
    workers: int = field(default=8, metadata=_COUNT)
    batch: int = field(default=32, metadata=_COUNT)
    poll_interval: float = field(default=1.0, metadata=_DURATION)
    lease: float = field(default=60.0, metadata=_DURATION)
    heartbeat: float | None = field(default=None, metadata=_DURATION)
    rescue_interval: float = field(default=15.0, metadata=_DURATION)
    shutdown_grace: float = field(default=25.0, metadata=_DURATION_OR_ZERO)
    dispatch_statuses: tuple[str, ...] = field(default=("auto",), metadata=_rule(_words()))
    cooldown_after_delivery: float = field(default=0.0, metadata=_DURATION_OR_ZERO)

    @property
    def heartbeat_interval(self) -> float:
        """How often a running job's lease is extended: `heartbeat`, else a third of `lease`."""
        return self.heartbeat if self.heartbeat is not None else self.lease / 3


@dataclass(frozen=True)
class RetryConfig:
    base: float = field(default=30.0, metadata=_DURATION)
    factor: float = field(default=2.0, metadata=_rule(_number("a number >= 1", lambda x: x >= 1)))
    cap: float = field(default=21600.0, metadata=_DURATION)
    jitter: float = field(
        default=0.1, metadata=_rule(_number("a number in [0, 1)", lambda x: 0 <= x < 1))
    )
    max_retry_after: float = field(default=86400.0, metadata=_DURATION)


@dataclass(frozen=True)
class LoggingConfig:
    dir: Path = field(default=DEFAULT_LOG_DIR, metadata=_rule(_path()))
    level: str = field(default="info", metadata=_rule(_choice("debug", "info", "warning", "error")))
    console: str = field(default="auto", metadata=_rule(_choice("auto", "human", "json")))


@dataclass(frozen=True)
class BreakerConfig:
    failures: int = field(default=5, metadata=_COUNT)
    pause: float = field(default=300.0, metadata=_DURATION)


@dataclass(frozen=True)
class HttpConfig:
    listen: str = field(
        default="", metadata=_rule(_text(_is_listen, '"host:port" such as "127.0.0.1:9464" or ""'))
    )
    token: str = field(default="", metadata=_rule(_text()))  # the status page's, off-loopback


@dataclass(frozen=True)
class RetentionConfig:
    """Pruning of finished jobs' history; off while `older_than` is None."""

    older_than: float | None = field(default=None, metadata=_DURATION)
    interval: float = field(default=3600.0, metadata=_DURATION)
    batch: int = field(default=500, metadata=_COUNT)


SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "daemon": DaemonConfig,
    "retry": RetryConfig,
    "logging": LoggingConfig,
    "breaker": BreakerConfig,
    "http": HttpConfig,
    "retention": RetentionConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration. `adapters` holds the raw `[adapters.*]` tables, as written
    (durations stay strings: each adapter parses its own); `source` is the file read, if any.
    """

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    adapters: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None


# --- adapters ------------------------------------------------------------------------

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


# --- loading -------------------------------------------------------------------------


def _fail(where: str, problem: str) -> ConfigError:
    sep = " " if problem.startswith("must ") else ": "
    return ConfigError(f"{where}{sep}{problem}")


def _unknown(where: str, what: str, word: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(word, known, n=1)
    hint = f", did you mean {close[0]}?" if close else ""
    return ConfigError(f"{where}: unknown {what}{hint} (known: {', '.join(sorted(known))})")


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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def _exists(path: Path) -> bool:
    # Path.exists() raises PermissionError when a directory on the way cannot be searched
    # (an image run under an arbitrary UID, as OpenShift does): one line, never a traceback.
    try:
        return path.exists()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None


def _choose_file(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if path is not None and str(path) != "":
        chosen = Path(path)
    elif env.get(f"{ENV_PREFIX}CONFIG"):
        chosen = Path(env[f"{ENV_PREFIX}CONFIG"])
    elif _exists(DEFAULT_FILE):
        return DEFAULT_FILE
    else:
        return None
    if not _exists(chosen):
        raise ConfigError(f"{chosen}: no such file")
    return chosen


def _secret_env_names(adapters: Mapping[str, Any]) -> set[str]:
    return {t["secret_env"] for t in adapters.values() if isinstance(t.get("secret_env"), str)}


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    db_url: str | None = None,
) -> Config:
    """The configuration from flags > environment > file > defaults (module docstring).

    `path` and `db_url` are the `--config` and `--db` flags. Without a file named by the
    flag or `RENEWALD_CONFIG`, `./config.toml` is read when it exists. `env` defaults to
    `os.environ`. Raises `ConfigError` with one line naming the file, key or variable.
    """
    env = os.environ if env is None else env
    source = _choose_file(path, env)
    name = str(source)
    document = _read_toml(source) if source is not None else {}

    # raw[section][key] = (value, where it came from); later layers overwrite earlier ones.
    raw: dict[str, dict[str, tuple[Any, str]]] = {s: {} for s in SECTIONS}
    adapters: dict[str, dict[str, Any]] = {}
    for section, table in document.items():
        if section == "adapters":
            adapters = _check_adapters(name, table)
            continue
        if section not in SECTIONS:
            if not isinstance(table, dict):
                homes = [s for s, c in SECTIONS.items() if section in _fields(c)]
                hint = f" (put it under [{homes[0]}])" if homes else ""
                raise ConfigError(f"{name}: {section} is not inside a section{hint}")
            raise _unknown(name, f"section [{section}]", section, [*SECTIONS, "adapters"])
        if not isinstance(table, dict):
            raise _fail(f"{name}: [{section}]", "must be a table")
        for key, value in table.items():
            if key not in _fields(SECTIONS[section]):
                known = list(_fields(SECTIONS[section]))
                raise _unknown(name, f"key [{section}] {key}", key, known)
            raw[section][key] = (value, f"{name}: [{section}] {key}")

    # Only our own sections' prefixes are claimed: RENEWALD_WEBHOOK_SECRET and any variable
    # named by an adapter's secret_env belong to someone else.
    foreign = _secret_env_names(adapters)
    credentials.name_secret_variables(foreign)
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in foreign:
            continue
        section, _, key = var.removeprefix(ENV_PREFIX).lower().partition("_")
        if section not in SECTIONS:
            continue
        fields = _fields(SECTIONS[section])
        where = f"environment {var}"
        if key not in fields:
            raise _unknown(where, f"key [{section}] {key}", key, list(fields))
        raw[section][key] = (fields[key].from_env(env[var]), where)
    db_credential = credentials.credential(f"{ENV_PREFIX}DB", env)
    if db_credential:
        raw["database"]["url"] = (db_credential, f"credential {ENV_PREFIX}DB")
    elif env.get(f"{ENV_PREFIX}DB"):
        raw["database"]["url"] = (env[f"{ENV_PREFIX}DB"], f"environment {ENV_PREFIX}DB")
    if db_url is not None:
        raw["database"]["url"] = (db_url, "--db")

    built = {section: _build(cls, raw[section]) for section, cls in SECTIONS.items()}
    daemon = built["daemon"]
    if daemon.heartbeat is not None and daemon.heartbeat >= daemon.lease:
        where = raw["daemon"]["heartbeat"][1]
        raise _fail(where, f"must be shorter than lease ({daemon.lease:g}s)")
    return Config(**built, adapters=adapters, source=source)


def _fields(cls: type) -> dict[str, _Rule]:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls)}


def _build(cls: type, values: Mapping[str, tuple[Any, str]]) -> Any:
    rules = _fields(cls)
    kwargs = {}
    for key, (value, where) in values.items():
        try:
            kwargs[key] = rules[key].check(value)
        except _Invalid as err:
            raise _fail(where, str(err)) from None
    return cls(**kwargs)
