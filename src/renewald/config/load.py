"""Loading: defaults, then the TOML file, the environment and the flags (package docstring)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from renewald import credentials
from renewald.config.adapters import _check_adapters
from renewald.config.rules import DEFAULT_FILE, ENV_PREFIX, _fail, _Invalid, _Rule, _unknown
from renewald.config.sections import SECTIONS, Config
from renewald.errors import ConfigError


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
    adapters = _file_layer(name, document, raw)
    _env_layer(env, _secret_env_names(adapters), raw)
    if db_url is not None:
        raw["database"]["url"] = (db_url, "--db")

    built = {section: _build(cls, raw[section]) for section, cls in SECTIONS.items()}
    daemon = built["daemon"]
    if daemon.heartbeat is not None and daemon.heartbeat >= daemon.lease:
        where = raw["daemon"]["heartbeat"][1]
        raise _fail(where, f"must be shorter than lease ({daemon.lease:g}s)")
    return Config(**built, adapters=adapters, source=source)


def _file_layer(
    name: str, document: Mapping[str, Any], raw: dict[str, dict[str, tuple[Any, str]]]
) -> dict[str, dict[str, Any]]:
    """The config file's values into `raw`; returns its `[adapters.*]` tables."""
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
    return adapters


def _env_layer(
    env: Mapping[str, str], foreign: set[str], raw: dict[str, dict[str, tuple[Any, str]]]
) -> None:
    """`RENEWALD_<SECTION>_<KEY>` variables and the database URL's credential into `raw`.

    Only our own sections' prefixes are claimed: RENEWALD_WEBHOOK_SECRET and any variable
    named by an adapter's secret_env (`foreign`) belong to someone else."""
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
