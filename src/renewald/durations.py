"""Durations as people write them: "500ms", "30s", "5m", "6h", "30d", or combined "1h30m"."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")

DURATION_HINT = 'a duration such as "500ms", "30s", "5m", "6h" or "30d"'


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError naming what was expected."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or not _WHOLE.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not {DURATION_HINT}")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(cleaned))


def parse_positive_duration(text: str) -> float:
    """Seconds in `text`, a duration longer than zero; raises ValueError saying why not."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, got {text!r}")
    return seconds


def parse_positive_ms(text: str) -> int:
    """Milliseconds in `text`, a duration longer than zero; raises ValueError saying why not."""
    return round(parse_positive_duration(text) * 1000)


def format_duration(seconds: float) -> str:
    """The shortest readable form: 0.25 -> "250ms", 90 -> "1m30s", 7200 -> "2h"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
