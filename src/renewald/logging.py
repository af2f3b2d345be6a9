"""Logs (DESIGN §5): the JSONL job log and the console, both rendered by structlog.

The job log is one JSON object per line in `<dir>/<UTC date>.jsonl`, appended by the
recorder right after the database commit that its lines describe. The console
(`renewald.console`) renders the same events for people and for journald.

A job log that cannot be written (directory gone, disk full, permissions) never stops a
delivery or its database record: the failure is said loudly on the console, at most once
a minute, and the lines are dropped; the first line that reaches the file again says so.
A file moved or deleted underneath (logrotate, a cleanup) is noticed at the next line.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from renewald.clock import iso_utc
from renewald.redact import redact_value

# An unwritable job log is said at most this often (seconds), however many lines are lost.
COMPLAIN_EVERY = 60.0
CHECK_EVERY = 0.1
"""Seconds between checks that the job log file is still at its path."""

_REDACTED_FIELDS = ("error", "reason", "summary", "target", "url", "last_error")
# The event vocabulary (docs/operations.md): these keys, in this order, on the console and
# in the job log alike. `reason` is always why the job is where it is now (the decision);
# what went wrong is `error`.
EVENT_KEYS = (
    "ts",
    "event",
    "job_id",
    "attempt_id",
    "attempt",
    "conversation",
    "adapter",
    "outcome",
    "duration_ms",
    "reason",
    "owner",
)
_ORDER = EVENT_KEYS
# A line as structlog's JSONRenderer writes it (a value JSON has no form for, as its repr),
# from one encoder built once: json.dumps given a `default` builds a new encoder for every
# line, a third of the time a line takes to encode.
_JSON = json.JSONEncoder(default=repr)


# True while `emit` hands the console a dict it has redacted already for the job log.
_redacted_already: ContextVar[bool] = ContextVar("renewald_redacted_already", default=False)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _redacted_already.get():
        return event
    for key in _REDACTED_FIELDS:
        if event.get(key) is not None:
            event[key] = redact_value(event[key])
    return event


def _ordered(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    head = {k: event.pop(k) for k in _ORDER if k in event}
    head.update(event)
    return head


class JobLog:
    """The JSONL job log, appended to `<dir>/<UTC date>.jsonl`. `log(event, now_ms=...,
    **fields)` returns the file's path.

    Like the standard library's WatchedFileHandler, a write first checks that the open
    file is still the one at its path: a file renamed away (logrotate), deleted, or a
    directory replaced underneath is noticed and the path is opened anew, instead of
    appending in silence to a file nobody can see. The check (a `stat`) runs at most
    every `CHECK_EVERY` seconds, not per line: a burst of lines costs one.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._name: str | None = None
        self._file: TextIO | None = None
        self._identity: tuple[int, int] | None = None
        self._lock = threading.Lock()
        # Set from a signal handler, so a plain flag: the next write acts on it.
        self._reopen_requested = False
        self.last_error: str | None = None
        self._error_said_at: float | None = None
        self._checked_at = 0.0
        self._day_path: tuple[int | None, str] = (None, "")

    def path_for(self, now_ms: int) -> str:
        day = now_ms // 86_400_000
        known = self._day_path  # one tuple: threads never see a day with another's path
        if known[0] != day:
            date = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")
            known = self._day_path = (day, str(self.directory / f"{date}.jsonl"))
        return known[1]

    def log(self, event: str, *, now_ms: int, **fields: Any) -> str:
        data = {k: v for k, v in fields.items() if v is not None}
        return self.append(self.render(event, now_ms, _redact(None, "", data)), now_ms)

    def render(self, event: str, now_ms: int, fields: Mapping[str, Any]) -> str:
        """The line of an event whose fields are redacted already and hold no None."""
        data: dict[str, Any] = {"ts": iso_utc(now_ms), "event": event}
        data.update(fields)
        return _JSON.encode(_ordered(None, "", data))

    def append(self, line: str, now_ms: int) -> str:
        """Append a line made by `render`; the path of its file."""
        path = self.path_for(now_ms)
        self._append(line, path)
        return path

    def _append(self, line: str, path: str) -> None:
        with self._lock:
            try:
                if self._reopen_requested or self._name != path or self._moved():
                    self._reopen(path)
                assert self._file is not None
                self._file.write(line + "\n")
            except OSError as exc:
                self._close()
                self._complain(exc)

    def _moved(self) -> bool:
        """Whether the path no longer names the open file (or nothing is open)."""
        if self._file is None or self._name is None:
            return True
        now = time.monotonic()
        if now - self._checked_at < CHECK_EVERY:
            return False
        self._checked_at = now
        try:
            st = os.stat(self._name)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def _reopen(self, path: str) -> None:
        requested = self._reopen_requested
        self._reopen_requested = False
        self._close()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        st = os.fstat(self._file.fileno())
        self._identity = (st.st_dev, st.st_ino)
        self._name = path
        if requested:
            _log().info("job_log.reopened", path=path)

    def flush(self) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.flush()
            except OSError as exc:
                self._close()
                self._complain(exc)
                return
            if self.last_error is not None:
                # Only a flush that reached the file proves it: a full disk takes the
                # buffered write and fails here.
                _log().info("job_log.writable", directory=str(self.directory))
                self.last_error = None

    def reopen(self) -> None:
        """Open the file anew at the next line (SIGHUP); safe in a signal handler."""
        self._reopen_requested = True

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        self._name = None
        self._identity = None

    def _complain(self, exc: OSError) -> None:
        self.last_error = f"{exc.strerror or exc} ({self.directory})"
        now = time.monotonic()
        if self._error_said_at is None or now - self._error_said_at >= COMPLAIN_EVERY:
            self._error_said_at = now
            _log().error(
                "job_log.unwritable",
                directory=str(self.directory),
                error=self.last_error,
                hint="deliveries and their database records go on; the JSONL lines are lost",
            )


def _log() -> Any:
    return structlog.get_logger("renewald.logging")


_events_bound: tuple[tuple[int, int], Any] | None = None


def _events() -> Any:
    """The console's event logger, bound once per structlog configuration (binding on
    every call costs more than rendering the line)."""
    global _events_bound
    key = _config_key()
    bound = _events_bound
    if bound is None or bound[0] != key:
        bound = _events_bound = (key, structlog.get_logger("renewald.events").bind())
    return bound[1]


def emit(
    job_log: JobLog | None,
    event: str,
    *,
    now_ms: int,
    level: str = "info",
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """One event, one dict: the job-log line (when `job_log` is given) and the console line
    are rendered from the same keys and the same `ts`. Every job event goes through here.
    A traceback (`exc_info`) goes to the console only."""
    data = _redact(None, "", {k: v for k, v in fields.items() if v is not None})
    if job_log is not None:
        line = job_log.render(event, now_ms, data)
        job_log.append(line, now_ms)
        lane = _console_lane
        if lane is not None and exc_info is None and lane.usable(level):
            lane.write(line, level)
            return
    extra = {"exc_info": exc_info} if exc_info is not None else {}
    token = _redacted_already.set(True)
    try:
        getattr(_events(), level)(event, ts=iso_utc(now_ms), **data, **extra)
    finally:
        _redacted_already.reset(token)


class ConsoleLane:
    """The JSON console's short way for job events (`emit`): their console line is the
    job log's line with its `level`, exactly what the console's processors would make of
    the same dict (tests/unit/test_logging.py compares them), without running them again.

    Set by `console.configure_console` for the JSON console; taken only while structlog
    still has that configuration and no context variables are bound (they would add
    keys), so anything else gets the processors' own way."""

    def __init__(self, least: int, writer: Any) -> None:
        self._least = least
        self._writer = writer
        self._config = _config_key()

    def usable(self, level: str) -> bool:
        return (
            level in _LEVELS
            and self._config == _config_key()
            and not structlog.contextvars.get_contextvars()
        )

    def write(self, line: str, level: str) -> None:
        if _LEVELS[level] >= self._least:
            getattr(self._writer, level)(f'{line[:-1]}, "level": "{level}"}}')


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_console_lane: ConsoleLane | None = None


def set_console_lane(lane: ConsoleLane | None) -> None:
    global _console_lane
    _console_lane = lane


def _config_key() -> tuple[int, int]:
    config = structlog.get_config()
    return id(config["processors"]), id(config["logger_factory"])


class Throttle:
    """Say a repeated warning at most once per `every` seconds per key, with how many
    times it happened since it was last said (`repeated`): an outage of hours is a
    line a minute, not one per tick, and the count says how busy it was."""

    def __init__(self, every: float = COMPLAIN_EVERY, *, monotonic: Any = time.monotonic) -> None:
        self.every = every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._said: dict[str, tuple[float, int]] = {}  # key -> (last said, suppressed since)

    def warn(
        self, key: str, logger: Any, event: str, *, level: str = "warning", **fields: Any
    ) -> bool:
        """Log `event` unless `key` was said within `every`; True when it was logged."""
        now = self._monotonic()
        with self._lock:
            said = self._said.get(key)
            if said is not None and now - said[0] < self.every:
                self._said[key] = (said[0], said[1] + 1)
                return False
            self._said[key] = (now, 0)
        repeated = said[1] if said is not None else 0
        getattr(logger, level)(event, **fields, **({"repeated": repeated} if repeated else {}))
        return True

    def clear(self, key: str) -> bool:
        """Forget `key` (the condition ended); True when it had been said."""
        with self._lock:
            return self._said.pop(key, None) is not None


def read_lines(path: str | os.PathLike[str]) -> list[Mapping[str, Any]]:
    """Every JSON object in a job log file (for tests and `show`)."""
    import json

    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
