"""Configuration: typed sections of DESIGN §9, loaded from defaults, file, environment, flags.

Precedence, highest first: flags (`--config`, `--db`), environment (`RENEWALD_CONFIG`,
`RENEWALD_DB`, `RENEWALD_<SECTION>_<KEY>`), the TOML file, the defaults below.

Every field of a section dataclass carries a `_Rule` in its metadata; one generic loader
walks the fields, so adding a setting is adding one line. Every mistake becomes a
`ConfigError` of one line that names where the value came from (file and key, or the
environment variable, or the flag) and what was expected.
"""

from __future__ import annotations

from renewald.config.load import load_config
from renewald.config.sections import (
    BreakerConfig,
    Config,
    DaemonConfig,
    DatabaseConfig,
    HttpConfig,
    LoggingConfig,
    RetentionConfig,
    RetryConfig,
)
from renewald.config.timings import Timings

__all__ = [
    "BreakerConfig",
    "Config",
    "DaemonConfig",
    "DatabaseConfig",
    "HttpConfig",
    "LoggingConfig",
    "RetentionConfig",
    "RetryConfig",
    "Timings",
    "load_config",
]
