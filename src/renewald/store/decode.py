"""Decoding rows another program wrote: every value checked against its declared type.

SQLite lets any column hold any type, so a `renewal_jobs` row may carry text in
`next_attempt_at`, `'three'` in `max_attempts`, a BLOB payload or a time past year 9999.
Decoding never raises: each value that does not fit is replaced by a safe stand-in and
named in a list of problems, and the daemon ends a job with problems `failed/malformed`
(DESIGN §2, "rows are untrusted").

Invalid UTF-8 in a SQLite TEXT value reaches here as `BadText` (see `sqlite_text` and the
engine's connect hook) rather than as a driver error that would fail the whole read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Text

from renewald.controls import escape_controls
from renewald.store.schema import Millis, renewal_jobs

# 9999-12-31T23:59:59.999Z: the last instant `datetime` can show.
MAX_EPOCH_MS = 253_402_300_799_999
MAX_ATTEMPTS_LIMIT = 1_000_000
STATUSES = ("pending", "running", "done", "failed")
PAYLOAD_KINDS = ("text", "json")
_SHOWN = 40


class BadText(str):
    """A TEXT value that was not valid UTF-8, decoded with U+FFFD replacements."""


def sqlite_text(raw: bytes) -> str:
    """The sqlite3 `text_factory`: a bad byte never fails the read that met it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return BadText(raw.decode("utf-8", "replace"))


def shown(value: Any) -> str:
    """A stored value as it may appear in an error: escaped and truncated."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        text = f"BLOB of {len(raw)} bytes x'{raw[:16].hex()}{'…' if len(raw) > 16 else ''}'"
        return text
    text = repr(value) if not isinstance(value, str) else repr(str(value))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _type_name(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return "a BLOB"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a REAL"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int):
        return "an integer"
    return type(value).__name__


class Decoder:
    """Collects the problems of one row while its values are decoded."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.problems: list[str] = []

    def problem(self, column: str, what: str) -> None:
        self.problems.append(f"{self.table}.{column} {what}")

    def integer(
        self,
        column: str,
        value: Any,
        *,
        low: int,
        high: int,
        nullable: bool,
        default: int,
    ) -> int | None:
        if value is None:
            if nullable:
                return None
            self.problem(column, "is NULL")
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            if low <= value <= high:
                return value
            self.problem(column, f"is out of range ({value})")
            return None if nullable else default
        self.problem(column, f"is {_type_name(value)} ({shown(value)}), not an integer")
        return None if nullable else default

    def epoch_ms(self, column: str, value: Any, *, nullable: bool = True) -> int | None:
        return self.integer(column, value, low=0, high=MAX_EPOCH_MS, nullable=nullable, default=0)

    def text(self, column: str, value: Any, *, nullable: bool = True) -> str | None:
        if value is None:
            if not nullable:
                self.problem(column, "is NULL")
                return ""
            return None
        if isinstance(value, BadText):
            self.problem(column, "is not valid UTF-8")
            return str(value)
        if isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.problem(column, f"is {shown(raw)}, not valid UTF-8")
                return raw.decode("utf-8", "replace")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                self.problem(column, f"is {_type_name(value)} ({shown(value)}), not text")
            return str(value)
        self.problem(column, f"is {_type_name(value)}, not text")
        return str(value)

    def texts(
        self, row: Mapping[Any, Any], columns: tuple[str, ...], *, nullable: bool = True
    ) -> dict[str, Any]:
        out = {}
        for column in columns:
            value = row.get(column)
            # What nearly every row holds, answered without the checks (`BadText` is a
            # subclass of str, so it goes through them).
            fits = type(value) is str or (value is None and nullable)
            out[column] = value if fits else self.text(column, value, nullable=nullable)
        return out

    def times(
        self, row: Mapping[Any, Any], columns: tuple[str, ...], *, nullable: bool = True
    ) -> dict[str, Any]:
        out = {}
        for column in columns:
            value = row.get(column)
            if (type(value) is int and 0 <= value <= MAX_EPOCH_MS) or (value is None and nullable):
                out[column] = value
            else:
                out[column] = self.epoch_ms(column, value, nullable=nullable)
        return out

    def one_of(self, column: str, value: str | None, allowed: tuple[str, ...]) -> None:
        if value is not None and value not in allowed:
            self.problem(column, f"is {shown(value)}, not one of {', '.join(allowed)}")

    def json_object(self, column: str, value: str | None) -> None:
        """A JSON column renewald merges into a target: NULL, empty, or a JSON object."""
        if value is None or not value.strip():
            return
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.problem(column, f"is not JSON ({_json_error(exc)})")
            return
        if not isinstance(parsed, dict):
            self.problem(column, f"is JSON {type(parsed).__name__}, not an object")

    def json_value(self, column: str, value: str | None) -> None:
        if value is None:
            return
        try:
            json.loads(value)
        except ValueError as exc:
            self.problem(column, f"is not JSON ({_json_error(exc)})")


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return type(exc).__name__


def _job_columns(declared: Callable[[Any], bool], *, nullable: bool) -> tuple[str, ...]:
    """The `renewal_jobs` columns the schema declares of one type and nullability, in table
    order (the order their problems are named in), but those `job_values` reads apart."""
    return tuple(
        c.name
        for c in renewal_jobs.columns
        if declared(c.type) and c.nullable == nullable and c.name not in _READ_APART
    )


# payload_kind (NULL reads as 'text') and the two columns only renewald writes.
_READ_APART = ("payload_kind", "send_token", "delivered_at")
_TEXT_REQUIRED = _job_columns(lambda t: isinstance(t, Text), nullable=False)
_TEXT_OPTIONAL = _job_columns(lambda t: isinstance(t, Text), nullable=True)
_TIMES_REQUIRED = _job_columns(lambda t: t is Millis, nullable=False)
_TIMES_OPTIONAL = _job_columns(lambda t: t is Millis, nullable=True)


def job_values(row: Mapping[Any, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The values of a `renewal_jobs` row as `Job` declares them, and what did not fit."""
    row = dict(row)  # a plain dict's `get`, not the result row's Mapping one
    d = Decoder("renewal_jobs")
    values = d.texts(row, _TEXT_REQUIRED, nullable=False)
    kind = row.get("payload_kind")
    values["payload_kind"] = d.text("payload_kind", "text" if kind is None else kind)
    values.update(d.texts(row, _TEXT_OPTIONAL))
    values.update(d.times(row, _TIMES_REQUIRED, nullable=False))
    values.update(d.times(row, _TIMES_OPTIONAL))
    for column, low in (("attempt_count", 0), ("max_attempts", 1)):
        values[column] = d.integer(
            column, row.get(column), low=low, high=MAX_ATTEMPTS_LIMIT, nullable=False, default=low
        )
    token = row.get("lease_token")
    values["lease_token"] = d.integer(
        "lease_token", 0 if token is None else token, low=0, high=2**62, nullable=False, default=0
    )
    # Only renewald writes these two; a value that is not an integer reads as unset.
    for column in ("send_token", "delivered_at"):
        value = row.get(column)
        values[column] = value if isinstance(value, int) and not isinstance(value, bool) else None
    d.one_of("status", values["status"], STATUSES)
    d.one_of("payload_kind", values["payload_kind"], PAYLOAD_KINDS)
    if values["payload_kind"] == "json" and "payload" not in _columns_with_problems(d):
        d.json_value("payload", values["payload"])
    d.json_object("target_snapshot", values["target_snapshot"])
    return values, tuple(d.problems)


_LINK_TEXT = (
    "platform",
    "remote_conversation_id",
    "page_url",
    "client_id",
    "target_kind",
    "target_id",
    "target_payload",
)


def link_values(row: Mapping[Any, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The fields of a `conversation_links` row that a delivery uses, and what did not fit."""
    d = Decoder("conversation_links")
    values = d.texts(row, _LINK_TEXT)
    d.json_object("target_payload", values["target_payload"])
    return values, tuple(d.problems)


def conversation_gate(row: Mapping[Any, Any]) -> tuple[str | None, tuple[str, ...]]:
    """A claimed job's conversation: its platform, and the problems of the values that
    decide its delivery (platform, automation_status, cooldown_until)."""
    d = Decoder("local_conversations")
    platform = d.text("platform", row.get("platform"))
    d.text("automation_status", row.get("automation_status"))
    d.epoch_ms("cooldown_until", row.get("cooldown_until"))
    return platform, tuple(d.problems)


def epoch_ms_or_none(value: Any) -> int | None:
    """A time read by an aggregate (`min(next_attempt_at)`): None unless it is one."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MS:
        return value
    return None


def _columns_with_problems(d: Decoder) -> set[str]:
    prefix = f"{d.table}."
    return {p[len(prefix) :].split(" ", 1)[0] for p in d.problems if p.startswith(prefix)}


MAX_ERROR = 1000


def malformed_error(problems: tuple[str, ...] | list[str]) -> str:
    """The `last_error` of a job ended failed/malformed: every problem, on one line."""
    text = "malformed: " + "; ".join(problems)
    text = escape_controls(text)
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def conversation_values(row: Mapping[Any, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The fields of a `local_conversations` row that `show` and the gate read."""
    d = Decoder("local_conversations")
    values = d.texts(row, ("local_conversation_id", "platform", "automation_status"))
    values.update(d.times(row, ("cooldown_until", "paused_at")))
    values.update(d.times(row, ("updated_at",), nullable=False))
    return values, tuple(d.problems)
