"""The typed sections of DESIGN §9 and the whole `Config`; each field carries its rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renewald.config.rules import (
    DEFAULT_LOG_DIR,
    _choice,
    _duration,
    _integer,
    _is_db_url,
    _is_listen,
    _number,
    _path,
    _rule,
    _text,
    _words,
)

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
    # 256, not 128: what a claim, a send-begun mark and a record cost per transaction
    # (round trips, commits, statement set-up) is shared by twice the jobs. 10,000 log
    # jobs drained 1.09-1.12x faster on PostgreSQL, 1.09x on SQLite (bench/results.md).
    batch: int = field(default=256, metadata=_COUNT)
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
