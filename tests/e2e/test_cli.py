"""The command line as a person uses it: the real executable, a real database."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from renewald.store import Store
from tests.e2e.conftest import RENEWALD, Renewald
from tests.e2e.test_ops import one_line_error
from tests.store.factories import job_of


def test_migrate_is_idempotent(renewald: Renewald) -> None:
    first = renewald.run("migrate")
    assert first.returncode == 0, first.stderr
    assert "schema created" in first.stdout
    again = renewald.run("migrate")
    assert again.returncode == 0 and "schema is current" in again.stdout


def test_commands_ask_for_migrate(renewald: Renewald, backend: str) -> None:
    if backend == "sqlite":
        line = one_line_error(renewald.run("jobs"))
        assert "no database at" in line and "renewald migrate" in line
    renewald.run("migrate")
    assert renewald.run("jobs").returncode == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_schema_check_on_empty_postgres(renewald: Renewald) -> None:
    line = one_line_error(renewald.run("jobs"))
    assert "run `renewald migrate`" in line


def test_enqueue_list_show(renewald: Renewald, e2e_store: Store) -> None:
    job_id = renewald.enqueue("conv-1", "hello", "--job-id", "j1", "--at", "+5m")
    assert job_id == "j1"
    job = e2e_store.get_job("j1")
    assert job is not None and job.status == "pending" and job.message_id.startswith("renewald:")
    listed = renewald.run("jobs")
    assert listed.returncode == 0 and "j1" in listed.stdout
    assert re.search(r"in (5m|4m\d+s)\b", listed.stdout), listed.stdout
    as_json = json.loads(renewald.run("jobs", "--json").stdout)
    assert [j["job_id"] for j in as_json] == ["j1"]
    shown = renewald.run("show", "j1")
    assert shown.returncode == 0 and "conv-1" in shown.stdout and "pending" in shown.stdout
    data = json.loads(renewald.run("show", "j1", "--json").stdout)
    assert data["job_id"] == "j1" and data["attempts"] == []


def test_enqueue_with_every_option(renewald: Renewald, e2e_store: Store) -> None:
    out = renewald.run(
        "enqueue", "--conversation", "c", "--payload", '{"text": "hi"}', "--payload-kind", "json",
        "--message", "m-1", "--job-id", "j-1", "--at", "2030-01-01T00:00:00Z",
        "--max-attempts", "5", "--target-kind", "http.webhook",
        "--target", '{"url": "http://127.0.0.1:9/hook"}', "--deadline", "2030-01-02T00:00:00Z",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    job = e2e_store.get_job("j-1")
    assert job is not None
    assert (job.message_id, job.payload_kind, job.max_attempts) == ("m-1", "json", 5)
    assert job.next_attempt_at == 1893456000000 and job.deadline_at == 1893542400000
    assert job.target_kind == "http.webhook"
    assert json.loads(job.target_snapshot or "") == {"url": "http://127.0.0.1:9/hook"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--payload-kind", "xml"], "--payload-kind"),
        (["--payload-kind", "json"], "needs JSON"),
        (["--target", "[1, 2]"], "must be a JSON object"),
        (["--target", "{nope"], "--target: not JSON"),
        (["--at", "tomorrow"], "--at"),
        (["--at", "+10x"], "--at"),
        (["--max-attempts", "0"], "--max-attempts"),
        (["--bogus"], "No such option"),
    ],
)
def test_enqueue_bad_input_writes_nothing(
    renewald: Renewald, e2e_store: Store, args: list[str], expected: str
) -> None:
    out = renewald.run("enqueue", "--conversation", "c", "--payload", "not json {", *args)
    assert expected in one_line_error(out)
    assert e2e_store.list_jobs() == []


def test_duplicate_message_is_refused(renewald: Renewald, e2e_store: Store) -> None:
    renewald.enqueue("c", "one", "--message", "m-1")
    out = renewald.run("enqueue", "--conversation", "c", "--payload", "two", "--message", "m-1")
    assert "message m-1 already has a job" in one_line_error(out)
    assert len(e2e_store.list_jobs()) == 1


def test_missing_job(renewald: Renewald, e2e_store: Store) -> None:
    assert one_line_error(renewald.run("show", "nope")) == "renewald: no job nope"


def test_bad_config_and_db(renewald: Renewald, e2e_store: Store, tmp_path) -> None:
    renewald.config_path.write_text("[daemon]\nlease = '10x'\n")
    line = one_line_error(renewald.run("jobs"))
    assert "lease" in line and "10x" in line
    renewald.write_config()
    bad = renewald.run("--db", "mysql://x/y", "jobs")
    assert "only sqlite" in one_line_error(bad)
    missing = renewald.run("--config", str(tmp_path / "nope.toml"), "jobs")
    assert "nope.toml" in one_line_error(missing)


def test_an_unknown_database_fails_at_start(renewald: Renewald) -> None:
    for args in (("run", "--once"), ("migrate",)):
        line = one_line_error(renewald.run("--db", "mssql+pyodbc://x/y", *args))
        assert "only sqlite:/// and postgresql+psycopg:// are supported" in line


def test_schema_newer_than_code(renewald: Renewald, e2e_store: Store) -> None:
    from sqlalchemy import text

    e2e_store.write(
        lambda c: c.execute(text("UPDATE renewald_schema_version SET version_num = '9999'"))
    )
    for command in ("migrate", "jobs"):
        assert "newer than this renewald" in one_line_error(renewald.run(command))


def test_closed_standard_streams_are_no_trap(renewald: Renewald, e2e_store: Store) -> None:
    """`renewald run --once <&- >&- 2>&-` (a crontab that wants silence) delivers what is
    due and exits 0; the streams are opened on /dev/null, so the database file cannot take
    their descriptors and receive the console."""
    job_id = renewald.enqueue("conv-quiet", "keepalive", "--target-kind", "log")
    out = subprocess.run(
        ["sh", "-c", f"exec {RENEWALD} run --once <&- >&- 2>&-"],
        env=renewald.env, cwd=renewald.dir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0
    assert job_of(e2e_store, job_id).status == "done"
    assert [line["event"] for line in renewald.log_lines() if line.get("job_id") == job_id] == [
        "attempt.started",
        "attempt.finished",
    ]
