"""Output for people: tables, times in local time with a relative hint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from renewald.controls import escape_controls
from renewald.durations import format_duration

# 9999-12-31T23:59:59.999Z: `datetime` shows nothing later.
_LAST_MS = 253_402_300_799_999


def _is_time(ms: Any) -> bool:
    return isinstance(ms, int) and not isinstance(ms, bool) and 0 <= ms <= _LAST_MS


def _not_a_time(ms: Any) -> str:
    shown = repr(ms)
    return f"<not a time: {escape_controls(shown if len(shown) <= 40 else shown[:39] + '…')}>"


def relative(ms: int, now: int) -> str:
    delta = (ms - now) / 1000
    if abs(delta) < 1:
        return "now"
    text = format_duration(abs(delta))
    text = _coarse(text)
    return f"in {text}" if delta > 0 else f"{text} ago"


def _coarse(text: str) -> str:
    """Keep the two largest units: "1d2h3m4s" -> "1d2h"."""
    parts, current = [], ""
    for ch in text:
        current += ch
        if ch.isalpha() and not (ch == "m" and current.endswith("ms")):
            parts.append(current)
            current = ""
    if current:
        parts.append(current)
    return "".join(parts[:2])


def when(ms: int | None, now: int) -> str:
    """Local time and how far it is from now: "2026-11-24 10:03:05 (in 4m)"."""
    if ms is None:
        return "-"
    if not _is_time(ms):
        return _not_a_time(ms)
    local = datetime.fromtimestamp(ms / 1000).astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} ({relative(ms, now)})"


def short_when(ms: int | None, now: int) -> str:
    if ms is None:
        return "-"
    return relative(ms, now) if _is_time(ms) else _not_a_time(ms)


def line(text: str) -> str:
    """One output line of stored text: no CR, LF or other control character gets through."""
    return escape_controls(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [
        ["-" if c is None else escape_controls(str(c)) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def truncate(text: str | None, width: int) -> str | None:
    if text is None:
        return None
    text = escape_controls(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def age(since_ms: int | None, now: int) -> str:
    """How long ago `since_ms` was, coarse and without "ago": "4m", "1d2h"; "-" for None."""
    if since_ms is None:
        return "-"
    if not _is_time(since_ms):
        return _not_a_time(since_ms)
    delta = max(0, now - since_ms) / 1000
    return "0s" if delta < 1 else _coarse(format_duration(delta))


def took(ms: int | None) -> str:
    """An attempt's duration: "0ms", "250ms", "1.2s", "2m3s"; "-" for None."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    return _coarse(format_duration(ms / 1000))


def counts(values: dict[str, int]) -> str:
    """ "done 3, failed 1" in the order given; "none" when empty."""
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "none"
