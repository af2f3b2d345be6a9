"""Following jobs from the command line, with the real executable and a real database:
`jobs` (total, WHY, filters), `daemons`, `logs [JOB] [--follow]`, one error prefix,
global options after the command, and `enqueue` refusing an unknown target kind."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from renewald.store import Store
from tests.e2e.conftest import RENEWALD, HookTarget, Renewald, add_webhook_jobs
from tests.e2e.test_ops import gated_command_config, ok, one_line_error
from tests.store.factories import attempt_rows
from tests.waiting import wait_for


def run_without_env_db(renewald: Renewald, *args: str) -> subprocess.CompletedProcess[str]:
    """`renewald ARGS` with neither RENEWALD_DB nor RENEWALD_CONFIG set."""
    env = {k: v for k, v in renewald.env.items() if k not in ("RENEWALD_DB", "RENEWALD_CONFIG")}
    return subprocess.run(
        [RENEWALD, *args], env=env, cwd=renewald.dir, capture_output=True, text=True, timeout=120
    )


# -- errors and options ------------------------------------------------------------------


def test_one_error_prefix(renewald: Renewald, e2e_store: Store) -> None:
    line = one_line_error(renewald.run("jobs", "--nope"))
    assert line.startswith("renewald: jobs: No such option") and "--nope" in line
    line = one_line_error(renewald.run("conversations", "pause"))
    assert line.startswith("renewald: conversations pause: Missing argument")
    assert one_line_error(renewald.run("nope")).startswith("renewald: No such command")
    for out in (renewald.run("jobs", "--limit", "0"), renewald.run("show", "missing")):
        assert one_line_error(out).count("renewald") == 1, out.stderr


def test_global_options_after_the_command(renewald: Renewald, e2e_store: Store) -> None:
    renewald.enqueue("c1", "hello", "--job-id", "j1", "--target-kind", "log")
    url, config = renewald.db_url, str(renewald.config_path)
    assert "j1" in ok(run_without_env_db(renewald, "jobs", "--db", url))
    assert "j1" in ok(run_without_env_db(renewald, "jobs", "--db", url, "--config", config))
    assert "j1" in ok(run_without_env_db(renewald, "--config", config, "show", "j1", "--db", url))
    # After the command wins over before it.
    missing = f"sqlite:///{renewald.dir / 'missing.db'}"
    assert "j1" in ok(run_without_env_db(renewald, "--db", missing, "jobs", "--db", url))
    # The subgroups' commands take them too.
    assert "c1" in ok(run_without_env_db(renewald, "conversations", "list", "--db", url))
    assert ok(run_without_env_db(renewald, "schedules", "--db", url, "list"))
    line = one_line_error(run_without_env_db(renewald, "jobs", "--db", missing))
    assert "no database at" in line and line.count("renewald:") == 1


def test_enqueue_refuses_an_unknown_target_kind(renewald: Renewald, e2e_store: Store) -> None:
    line = one_line_error(
        renewald.run("enqueue", "--conversation", "c", "--payload", "p", "--target-kind", "nosuch")
    )
    assert line == (
        "renewald: --target-kind: unknown kind 'nosuch' "
        "(known: browser.proxy_delivery, command, http.webhook, log)"
    )
    assert e2e_store.list_jobs() == []


def test_schedules_add_refuses_an_unknown_target_kind(renewald: Renewald, e2e_store: Store) -> None:
    out = renewald.run(
        "schedules", "add", "--conversation", "c", "--every", "1h", "--payload", "p",
        "--target-kind", "nosuch",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert one_line_error(out) == (
        "renewald: --target-kind: unknown kind 'nosuch' "
        "(known: browser.proxy_delivery, command, http.webhook, log)"
    )
    assert e2e_store.list_schedules() == []
    ok(renewald.run("schedules", "add", "--conversation", "c", "--every", "1h", "--payload", "p",
                    "--target-kind", "log"))  # fmt: skip


# -- jobs ----------------------------------------------------------------------------------


def test_jobs_total_why_and_filters(renewald: Renewald, e2e_store: Store) -> None:
    for n in range(3):
        renewald.enqueue("later", f"p{n}", "--job-id", f"later-{n}", "--at", "+1h")
    renewald.enqueue("held", "x", "--job-id", "held", "--target-kind", "log")
    ok(renewald.run("conversations", "pause", "held"))
    renewald.enqueue("now", "y", "--job-id", "done", "--target-kind", "log")
    ok(renewald.run("run", "--once"))

    text = ok(renewald.run("jobs"))
    header, *rows, footer = text.splitlines()
    assert header.split() == [
        "JOB", "STATUS", "CONVERSATION", "ATTEMPTS", "NEXT", "UPDATED", "WHY", "LAST", "ERROR"
    ]  # fmt: skip
    assert footer == "5 jobs"
    why = {row.split()[0]: row for row in rows}
    assert "conversation paused" in why["held"]
    assert "due in 59m" in why["later-0"] or "due in 1h" in why["later-0"]
    assert "delivered" in why["done"]

    text = ok(renewald.run("jobs", "--limit", "2"))
    assert text.splitlines()[-1] == "showing 2 of 5; --limit N or --all for more"
    assert len(text.splitlines()) == 4
    assert ok(renewald.run("jobs", "--limit", "2", "--all")).splitlines()[-1] == "5 jobs"
    out = renewald.run("jobs", "--limit", "2", "--json")
    assert len(json.loads(ok(out))) == 2 and "showing 2 of 5" in out.stderr

    # jobs and show tell the same rule, from the same code.
    for job in json.loads(ok(renewald.run("jobs", "--json"))):
        shown = json.loads(ok(renewald.run("show", job["job_id"], "--json")))
        assert job["explain"] == shown["explain"], job["job_id"]
        assert job["target"] == shown["target"] and job["target_kind"] == shown["target_kind"]

    def ids(*args: str) -> list[str]:
        return sorted(j["job_id"] for j in json.loads(ok(renewald.run("jobs", "--json", *args))))

    assert ids("--reason", "delivered") == ["done"]
    assert ids("--target-kind", "log") == ["done", "held"]
    assert ids("--target-kind", "log", "--status", "pending") == ["held"]
    assert ids("--since", "1h") == ["done", "held", "later-0", "later-1", "later-2"]
    assert ids("--since", "2000-01-01T00:00:00Z", "--conversation", "held") == ["held"]
    assert ids("--since", "2999-01-01T00:00:00+00:00") == []
    assert ok(renewald.run("jobs", "--reason", "nosuch")) == "no jobs\n"
    assert "--since" in one_line_error(renewald.run("jobs", "--since", "yesterday"))


# -- daemons -------------------------------------------------------------------------------


def test_daemons_alive_then_gone(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    assert ok(renewald.run("daemons")) == "no daemons registered\n"
    assert json.loads(ok(renewald.run("daemons", "--json"))) == []
    hook_target.delay = lambda job_id, attempt: 120.0  # held until the daemon is killed
    add_webhook_jobs(e2e_store, hook_target.url, ["slow"])
    renewald.write_config(lease="120s")  # the lease outlives the checks below
    proc = renewald.start()

    def registered() -> list[dict]:
        found = json.loads(ok(renewald.run("daemons", "--json")))
        return [d for d in found if d["pid"] == proc.pid and d["running"] == 1]

    [daemon] = wait_for(registered, what="the daemon in `renewald daemons`")
    assert daemon["state"] == "alive" and daemon["alive"] is True
    assert daemon["heartbeat_age_ms"] >= 0
    assert daemon["owner_id"] and daemon["host"] and daemon["version"]
    text = ok(renewald.run("daemons"))
    assert text.splitlines()[0].split() == [
        "OWNER", "HOST", "PID", "VERSION", "STARTED", "HEARTBEAT", "STATUS", "RUNNING", "STATE"
    ]  # fmt: skip
    assert daemon["owner_id"] in text and " alive" in text
    assert text.splitlines()[-1].startswith("1 alive of 1 registered")

    # Killed: its row stays until it goes stale, but this host can tell its pid is gone.
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    [after] = json.loads(ok(renewald.run("daemons", "--json")))
    assert (after["owner_id"], after["state"], after["alive"]) == (
        daemon["owner_id"],
        "gone",
        False,
    )
    assert "gone" in ok(renewald.run("daemons"))
    # Its job's lease is still valid, but show and jobs know its owner is dead.
    explained = json.loads(ok(renewald.run("show", "slow", "--json")))["explain"]
    assert explained["rule"] == "owner_dead" and "is gone from" in explained["detail"]
    [listed] = json.loads(ok(renewald.run("jobs", "--json")))
    assert listed["explain"] == explained
    assert "running      for " in ok(renewald.run("show", "slow"))
    hook_target.release.set()


# -- logs ----------------------------------------------------------------------------------


@contextmanager
def following(renewald: Renewald, *args: str) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    """`renewald logs ARGS` running, with its stdout read line by line; killed (if still
    running) and its pipes closed on the way out."""
    proc = subprocess.Popen(
        [RENEWALD, "logs", *args],
        env=renewald.env,
        cwd=renewald.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = LineReader(proc)
    try:
        yield proc, reader
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        reader.join()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class LineReader:
    """A process's stdout, line by line, read on a thread so waits stay bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=10)

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait().rstrip("\n"))
            except queue.Empty:
                return self.seen


def test_logs_follow_one_job_through_a_retry(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    """One job from `enqueue` through a retry to delivery, seen step by step in `logs JOB
    --follow`, in `logs JOB`, and on the daemon's console: the same events, the same keys,
    the database's attempt ids. `other` is delivered at once and must not appear."""
    hook_target.status = lambda job_id, attempt: 503 if attempt == 1 else 200
    target = json.dumps({"url": hook_target.url})
    with following(renewald, "flaky", "--follow", "--interval", "50ms") as (follower, reader):
        daemon = renewald.start()
        renewald.enqueue(
            "conv-flaky", "hello", "--job-id", "flaky", "--target-kind", "http.webhook",
            "--target", target,
        )  # fmt: skip
        renewald.enqueue("other", "hello", "--job-id", "other", "--target-kind", "log")

        def delivered() -> list[dict]:
            lines = [json.loads(line) for line in reader.drain()]
            done = [x for x in lines if x["event"] == "attempt.finished"]
            return lines if any(x["outcome"] == "delivered" for x in done) else []

        followed = wait_for(delivered, timeout=60, what="flaky delivered in `logs --follow`")
        renewald.stop(daemon)
        assert {x["job_id"] for x in followed} == {"flaky"}
        rows = attempt_rows(e2e_store, "flaky")
        ids = [r["attempt_id"] for r in rows]
        steps = [
            (x["event"], x.get("outcome"), x.get("attempt_id"), x.get("attempt"))
            for x in followed
            if x["event"].startswith("attempt.")
        ]
        assert steps == [
            ("attempt.started", None, ids[0], 1),
            ("attempt.finished", "retry", ids[0], 1),
            ("attempt.started", None, ids[1], 2),
            ("attempt.finished", "delivered", ids[1], 2),
        ]
        finished = [x for x in followed if x["event"] == "attempt.finished"]
        assert [x["reason"] for x in finished][1] == "delivered"
        assert finished[0]["error"] and "503" in finished[0]["error"]

        follower.send_signal(signal.SIGINT)  # Ctrl-C
        assert follower.wait(timeout=20) == 0
        assert follower.stderr is not None and follower.stderr.read() == ""

    # The console says the same things with the same keys (a delivery at info too).
    console = [json.loads(x) for x in renewald.stderr(daemon).splitlines() if x.startswith("{")]
    mine = [x for x in console if x.get("job_id") == "flaky"]
    assert [(x["event"], x.get("attempt_id")) for x in mine] == [
        (x["event"], x.get("attempt_id")) for x in followed
    ]
    for on_console, in_log in zip(mine, followed, strict=True):
        assert {k: v for k, v in on_console.items() if k != "level"} == in_log
    assert [x["level"] for x in mine if x["event"] == "attempt.finished"] == ["info", "info"]
    assert [json.loads(x) for x in ok(renewald.run("logs", "flaky")).splitlines()] == followed

    # Without --follow: everything, or one job's lines, then exit.
    everything = [json.loads(line) for line in ok(renewald.run("logs")).splitlines()]
    assert {x["job_id"] for x in everything} == {"flaky", "other"}
    mine = [json.loads(line) for line in ok(renewald.run("logs", "other")).splitlines()]
    assert mine and {x["job_id"] for x in mine} == {"other"}
    assert ok(renewald.run("logs", "nosuch")) == ""


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_logs_follow_picks_up_new_files_and_partial_lines(renewald: Renewald) -> None:
    log_dir = renewald.log_dir
    with following(renewald, "--follow", "--interval", "50ms") as (follower, reader):
        log_dir.mkdir(parents=True, exist_ok=True)  # the directory may come later
        day1 = log_dir / "2026-01-01.jsonl"
        day1.write_text('{"job_id": "a", "n": 1}\n{"job_id": "a", "n": 2')  # a line half-written
        wait_for(lambda: reader.drain() == ['{"job_id": "a", "n": 1}'], what="the first line")
        with open(day1, "a") as fh:
            fh.write("}\n")
        (log_dir / "2026-01-02.jsonl").write_text('{"job_id": "b"}\n')
        wait_for(lambda: len(reader.drain()) == 3, what="the rest of the line, the next day")
        assert reader.seen == [
            '{"job_id": "a", "n": 1}',
            '{"job_id": "a", "n": 2}',
            '{"job_id": "b"}',
        ]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_logs_without_a_log_yet(renewald: Renewald) -> None:
    out = renewald.run("logs")
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr.strip() == f"renewald: no job log files in {renewald.log_dir}"
    assert "--interval" in one_line_error(renewald.run("logs", "--interval", "0s"))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_logs_needs_no_database(renewald: Renewald) -> None:
    renewald.log_dir.mkdir(parents=True)
    (renewald.log_dir / "2026-01-01.jsonl").write_text('{"job_id": "x"}\n')
    assert ok(renewald.run("logs", "x")) == '{"job_id": "x"}\n'
    assert not os.path.exists(renewald.dir / "artifact.db")


def test_a_job_cancelled_while_running_ends_on_job_cancelled(
    renewald: Renewald, e2e_store: Store, tmp_path: Path
) -> None:
    script = 'touch "$GATE/started"; while [ ! -e "$GATE/release" ]; do sleep 0.02; done'
    gated_command_config(renewald, script, gate=tmp_path)
    renewald.enqueue("c", "first", "--job-id", "a", "--target-kind", "command")
    proc = renewald.start()
    try:
        wait_for(lambda: (tmp_path / "started").exists(), what="job a started")
        # The send is in the job log while it runs.
        started = [x for x in renewald.log_lines() if x["event"] == "attempt.started"]
        assert [x["job_id"] for x in started] == ["a"]
        ok(renewald.run("cancel", "a"))
        (tmp_path / "release").touch()
        wait_for(lambda: getattr(e2e_store.get_job("a"), "status", None) == "failed", what="a ends")
    finally:
        (tmp_path / "release").touch()
        code, err = renewald.stop(proc)
    assert code == 0, err
    events = [x["event"] for x in renewald.log_lines() if x["job_id"] == "a"]
    assert events[-2:] == ["attempt.finished", "job.cancelled"]
    [row] = attempt_rows(e2e_store, "a")
    last = renewald.log_lines()[-1]
    assert (last["attempt_id"], last["status"]) == (row["attempt_id"], "failed")
