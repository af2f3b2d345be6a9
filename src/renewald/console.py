"""The console: structlog's output on stderr, the same events as the job log.

Human columns on a TTY (or `console = "human"`), JSON lines otherwise; the processors that
order and redact an event are the job log's own (`renewald.logging`). JSON lines at info
and below are gathered and written together (`_GatheredLines`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO, cast

import structlog

from renewald.clock import iso_utc
from renewald.logging import ConsoleLane, _ordered, _redact, set_console_lane


def _stamp(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`ts` as in the job log; an event that carries its own (`emit`) keeps it."""
    if "ts" not in event:
        event["ts"] = iso_utc(time.time_ns() // 1_000_000)
    return event


def configure_console(
    *, level: str = "info", console: str = "auto", stream: TextIO | CurrentStderr | None = None
) -> None:
    """Console output: human on a TTY (or `console = "human"`), JSON lines otherwise."""
    stream = stream or sys.stderr
    human = console == "human" or (console == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty(), timestamp_key="ts")
        if human
        else structlog.processors.JSONRenderer()
    )
    # Third-party libraries log through the standard library: warnings and up, one line each.
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(name)s: %(message)s")
    # A poll that is still draining a backlog when its next interval comes is expected.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _stamp,
            _redact,
            structlog.processors.format_exc_info,
            _ordered,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=(
            structlog.PrintLoggerFactory(cast(TextIO, stream))
            if human
            else _GatheredLines.factory(cast(TextIO, stream))
        ),
        cache_logger_on_first_use=False,
    )
    least = logging.getLevelNamesMapping()[level.upper()]
    set_console_lane(None if human or _gathered is None else ConsoleLane(least, _gathered))


class _GatheredLines:
    """The JSON console's writer: lines at info and below are gathered for up to
    `GATHER_S` and written together, since a busy daemon prints thousands a second and a
    write and flush per line cost more than rendering them. A warning or worse is written
    at once, with whatever is gathered before it; the rest is written at exit."""

    GATHER_S = 0.05

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        atexit.register(self.flush)

    @classmethod
    def factory(cls, stream: TextIO) -> Callable[..., _GatheredLines]:
        global _gathered
        shared = _gathered = cls(stream)
        return lambda *_args: shared

    def gather(self, message: str) -> None:
        with self._lock:
            self._lines.append(message)
            if self._timer is None:
                self._timer = threading.Timer(self.GATHER_S, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def at_once(self, message: str) -> None:
        with self._lock:
            self._lines.append(message)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            self._timer = None
            if lines:
                with contextlib.suppress(OSError, ValueError):
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()

    msg = info = debug = gather
    warning = error = critical = exception = failure = fatal = at_once


_gathered: _GatheredLines | None = None


def flush_console() -> None:
    """Write the console lines gathered so far (JSON console; the human one never waits)."""
    if _gathered is not None:
        _gathered.flush()


class CurrentStderr:
    """Whatever `sys.stderr` is at the time of each write: a live progress display that
    redirects stderr (rich) then prints the console lines above itself."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()
