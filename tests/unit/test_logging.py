"""The event vocabulary's one emitter and the warning throttle."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

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
