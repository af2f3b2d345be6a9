"""The event vocabulary's one emitter and the warning throttle."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from renewald.console import configure_console, flush_console
from renewald.logging import EVENT_KEYS, JobLog, Throttle, emit, read_lines
from tests.waiting import wait_for

T0 = 1_795_000_000_000


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_emit_writes_the_same_dict_to_the_job_log_and_the_console(tmp_path: Path) -> None:
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    job_log = JobLog(tmp_path)
    emit(
        job_log,
        "attempt.finished",
        now_ms=T0,
        owner="me",
        reason="delivered",
        error=None,  # absent, not null
        job_id="j1",
        attempt_id="a1",
        attempt=1,
        outcome="delivered",
        status="done",
        duration_ms=12,
        conversation="c1",
        adapter="log",
    )
    job_log.close()
    [line] = read_lines(job_log.path_for(T0))
    flush_console()
    [printed] = [json.loads(x) for x in console.getvalue().splitlines()]
    assert printed.pop("level") == "info"
    assert printed == line
    assert list(line)[: len(EVENT_KEYS)] == list(EVENT_KEYS)
    assert line["ts"] == "2026-11-18T11:06:40.000Z" and "error" not in line


def test_emit_without_a_job_log_and_below_the_level(tmp_path: Path) -> None:
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    emit(None, "schedule.fired", now_ms=T0, level="debug", job_id="x")
    emit(None, "lease.lost", now_ms=T0, level="warning", job_id="x")
    flush_console()
    [printed] = [json.loads(x) for x in console.getvalue().splitlines()]
    assert (printed["event"], printed["level"]) == ("lease.lost", "warning")


def test_the_console_uses_ts_like_the_job_log() -> None:
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    structlog.get_logger("x").info("daemon.started", owner="me")
    flush_console()
    printed = json.loads(console.getvalue())
    assert list(printed)[:2] == ["ts", "event"] and "timestamp" not in printed


class _Logger:
    def __init__(self) -> None:
        self.said: list[dict] = []

    def warning(self, event: str, **fields: object) -> None:
        self.said.append({"event": event, **fields})


def test_throttle_says_a_repeated_warning_once_per_interval_with_a_count() -> None:
    now = [0.0]
    throttle = Throttle(60, monotonic=lambda: now[0])
    logger = _Logger()
    for second in range(125):
        now[0] = float(second)
        throttle.warn("tick:poll", logger, "tick.database_error", tick="poll_tick")
        throttle.warn("tick:schedule", logger, "tick.database_error", tick="schedule_tick")
    polls = [x for x in logger.said if x["tick"] == "poll_tick"]
    assert [x.get("repeated") for x in polls] == [None, 59, 59]
    assert len(logger.said) == 6
    assert throttle.clear("tick:poll") and not throttle.clear("tick:poll")
    throttle.warn("tick:poll", logger, "tick.database_error", tick="poll_tick")
    assert "repeated" not in logger.said[-1]


def test_the_json_console_gathers_info_lines_and_writes_a_warning_at_once() -> None:
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    emit(None, "attempt.started", now_ms=T0, job_id="j1")
    emit(None, "attempt.finished", now_ms=T0 + 1, job_id="j1")
    assert console.getvalue() == ""  # gathered, not yet written
    emit(None, "lease.lost", now_ms=T0 + 2, level="warning", job_id="j2")
    events = [json.loads(x)["event"] for x in console.getvalue().splitlines()]
    assert events == ["attempt.started", "attempt.finished", "lease.lost"]  # in order


def test_gathered_console_lines_are_written_within_a_moment_without_a_flush() -> None:
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    emit(None, "attempt.finished", now_ms=T0, job_id="j1")
    wait_for(console.getvalue, timeout=5, what="the gathered line written")
    assert json.loads(console.getvalue())["job_id"] == "j1"


def test_a_job_events_console_line_is_the_processors_own_line_byte_for_byte(
    tmp_path: Path,
) -> None:
    """`emit` with a job log writes the console line from the job log's (ConsoleLane);
    without one, structlog's processors make it. Both ways give the same bytes."""
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    job_log = JobLog(tmp_path)
    events: list[tuple[str, str, dict[str, Any]]] = [
        ("attempt.finished", "info", {"job_id": "j1", "attempt": 2, "status": "done",
                                      "summary": "logged: é ✓ \"quoted\"", "next_attempt_at": None,
                                      "target": {"url": "https://h/?token=abc12345"}}),
        ("lease.lost", "warning", {"job_id": "j2", "reason": "taken away", "owner": "me",
                                   "not_json": frozenset({"x"})}),
        ("schedule.fired", "debug", {"job_id": "j3"}),
        ("job.released", "error", {"job_id": "j4", "during": "send"}),
    ]  # fmt: skip
    ways = []
    for log in (job_log, None):
        for event, level, fields in events:
            emit(log, event, now_ms=T0, level=level, **fields)
        flush_console()
        ways.append(console.getvalue())
        console.truncate(0)
        console.seek(0)
    job_log.close()
    assert ways[0] == ways[1] and len(ways[0].splitlines()) == 3  # debug is below the level
    assert "abc12345" not in ways[0]


def test_bound_context_variables_reach_the_console_line_of_a_job_event(tmp_path: Path) -> None:
    console = io.StringIO()
    configure_console(level="info", console="json", stream=console)
    job_log = JobLog(tmp_path)
    with structlog.contextvars.bound_contextvars(request="r-1"):
        emit(job_log, "attempt.started", now_ms=T0, job_id="j1")
    job_log.close()
    flush_console()
    assert json.loads(console.getvalue())["request"] == "r-1"
