"""Decoding untrusted rows: every value checked, nothing raises, problems name the column."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from renewald.controls import escape_controls
from renewald.store.decode import (
    MAX_EPOCH_MS,
    BadText,
    conversation_values,
    epoch_ms_or_none,
    job_values,
    link_values,
    malformed_error,
    sqlite_text,
)
from renewald.store.models import Job, Link
from tests.store.factories import attempt_result, job_value

T0 = 1_800_000_000_000


def good_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": "j1",
        "local_conversation_id": "c1",
        "message_id": "m1",
        "status": "pending",
        "payload": "hello",
        "payload_kind": "text",
        "target_snapshot": None,
        "attempt_count": 0,
        "max_attempts": 3,
        "next_attempt_at": T0,
        "last_attempt_at": None,
        "last_error": None,
        "log_path": None,
        "started_at": None,
        "finished_at": None,
        "created_at": T0,
        "updated_at": T0,
        "lease_owner": None,
        "lease_expires_at": None,
        "lease_token": 0,
        "terminal_reason": None,
        "deadline_at": None,
        "target_kind": None,
    }
    row.update(overrides)
    return row


def test_a_good_row_has_no_problems():
    job = Job.from_row(good_row())  # type: ignore[arg-type]
    assert job.problems == ()
    assert job.next_attempt_at == T0 and job.max_attempts == 3


@pytest.mark.parametrize("row", [good_row(), good_row(max_attempts="three", payload=b"\xff")])
def test_a_decoded_row_is_the_job_its_constructor_makes(row):
    """`Job.from_row` fills the instance without `__init__`: every field must be decoded."""
    values, problems = job_values(row)
    assert set(values) | {"problems"} == {f.name for f in dataclasses.fields(Job)}
    assert Job.from_row(row) == Job(**values, problems=problems)


@pytest.mark.parametrize(
    ("column", "value", "expect", "fallback"),
    [
        ("next_attempt_at", "soon", "next_attempt_at is text ('soon'), not an integer", None),
        ("next_attempt_at", 1.5, "next_attempt_at is a REAL (1.5), not an integer", None),
        ("next_attempt_at", 10**17, "next_attempt_at is out of range (100000000000000000)", None),
        ("next_attempt_at", -1, "next_attempt_at is out of range (-1)", None),
        ("next_attempt_at", b"\x01", "next_attempt_at is a BLOB", None),
        ("max_attempts", "three", "max_attempts is text ('three')", 1),
        ("max_attempts", 0, "max_attempts is out of range (0)", 1),
        ("max_attempts", None, "max_attempts is NULL", 1),
        ("attempt_count", -3, "attempt_count is out of range (-3)", 0),
        ("created_at", "yesterday", "created_at is text", 0),
        ("updated_at", float("nan"), "updated_at is a REAL (nan)", 0),
        ("lease_token", "x", "lease_token is text", 0),
        ("deadline_at", MAX_EPOCH_MS + 1, "deadline_at is out of range", None),
    ],
)
def test_integer_columns(column: str, value: Any, expect: str, fallback: Any):
    values, problems = job_values(good_row(**{column: value}))
    assert len(problems) == 1
    assert problems[0].startswith(f"renewal_jobs.{expect}")
    assert values[column] == fallback


def test_boundaries_of_times_are_accepted():
    for value in (0, MAX_EPOCH_MS):
        _, problems = job_values(good_row(next_attempt_at=value, deadline_at=value))
        assert problems == ()


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        ({"payload": b"\xff\xfe"}, "payload is BLOB of 2 bytes x'fffe', not valid UTF-8"),
        ({"payload": BadText("a\ufffd")}, "payload is not valid UTF-8"),
        ({"payload": None}, "payload is NULL"),
        ({"status": "weird"}, "status is 'weird', not one of pending, running, done, failed"),
        ({"payload_kind": "xml"}, "payload_kind is 'xml', not one of text, json"),
        ({"payload_kind": "json", "payload": "{no"}, "payload is not JSON"),
        ({"target_snapshot": "{no"}, "target_snapshot is not JSON"),
        ({"target_snapshot": "[1]"}, "target_snapshot is JSON list, not an object"),
        ({"job_id": b"\x80"}, "job_id is BLOB"),
    ],
)
def test_text_and_json_columns(overrides: dict[str, Any], expect: str):
    values, problems = job_values(good_row(**overrides))
    assert [p for p in problems if p.startswith(f"renewal_jobs.{expect}")], problems
    assert all(isinstance(values[c], str) for c in ("job_id", "payload", "status"))


def test_a_blob_holding_utf8_text_is_text():
    values, problems = job_values(good_row(payload="héllo".encode()))
    assert problems == () and values["payload"] == "héllo"


def test_a_json_payload_with_a_bad_encoding_is_reported_once():
    _, problems = job_values(good_row(payload_kind="json", payload=b"\xff"))
    assert len(problems) == 1


def test_every_problem_is_collected():
    _, problems = job_values(good_row(next_attempt_at="x", max_attempts="y", payload=b"\xff"))
    assert len(problems) == 3


def test_shown_values_are_escaped_and_truncated():
    _, problems = job_values(good_row(next_attempt_at="a\r\nforged line\x1b[2J" + "x" * 100))
    [problem] = problems
    assert "\n" not in problem and "\r" not in problem and "\x1b" not in problem
    assert len(problem) < 120


def test_link_and_conversation_rows():
    link, problems = link_values({"platform": "claude", "target_payload": "{bad", "page_url": None})
    assert link["platform"] == "claude"
    [problem] = problems
    assert problem.startswith("conversation_links.target_payload is not JSON (Expecting")
    assert Link.from_row({"client_id": b"\xff"}).problems  # type: ignore[arg-type]
    conv, problems = conversation_values(
        {"local_conversation_id": "c", "platform": "p", "automation_status": "auto",
         "cooldown_until": "later", "paused_at": None, "updated_at": T0}
    )  # fmt: skip
    assert conv["cooldown_until"] is None and len(problems) == 1


def test_sqlite_text_factory_never_raises():
    assert sqlite_text(b"ok") == "ok"
    bad = sqlite_text(b"\xc3(")
    assert isinstance(bad, BadText) and bad == "\ufffd("


@pytest.mark.parametrize(
    ("value", "expected"),
    [(T0, T0), (float(T0), T0), (1.5, None), ("soon", None), (10**17, None), (None, None)],
)
def test_epoch_ms_or_none(value: Any, expected: int | None):
    assert epoch_ms_or_none(value) == expected


def test_malformed_error_is_one_bounded_line():
    error = malformed_error(["a\nb"] * 500)
    assert error.startswith("malformed: a\\nb; ")
    assert len(error) <= 1000 and "\n" not in error


def test_escape_controls():
    assert escape_controls("a\r\nb\tc\x00\x1b\x7f\u2028é") == "a\\r\\nb\\tc\\x00\\x1b\\x7f\\u2028é"


def test_attempt_results_store_errors_on_one_line():
    result = attempt_result(
        job_value(), status="failed", adapter="http.webhook", target='{"url": "http://h/\\r\\n"}',
        outcome="permanent", error_message="host 'evil\r\nstatus       done' is not allowed",
        response_summary="line1\nline2", decision_reason="x\x1by",
    )  # fmt: skip
    assert result.error_message == "host 'evil\\r\\nstatus       done' is not allowed"
    assert result.response_summary == "line1\\nline2"
    assert result.decision_reason == "x\\x1by"
