"""How one setting is checked: a `_Rule` per field, and the one-line errors they raise."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from renewald.durations import parse_duration, parse_positive_duration
from renewald.errors import ConfigError

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
            return (parse_positive_duration if positive else parse_duration)(value)
        except ValueError as err:
            raise _Invalid(str(err)) from None

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


def _fail(where: str, problem: str) -> ConfigError:
    sep = " " if problem.startswith("must ") else ": "
    return ConfigError(f"{where}{sep}{problem}")


def _unknown(where: str, what: str, word: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(word, known, n=1)
    hint = f", did you mean {close[0]}?" if close else ""
    return ConfigError(f"{where}: unknown {what}{hint} (known: {', '.join(sorted(known))})")
