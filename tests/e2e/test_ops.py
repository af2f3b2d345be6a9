"""Operating renewald as a person does: show/explain, retry, cancel, pause, stats, prune,
retention and /metrics, with the real executable and a real database."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from select import select as wait_readable

import pytest
from sqlalchemy import insert, update

from renewald.store import Store
from renewald.store.schema import (
    renewal_jobs,
    renewal_target_pauses,
)
from tests.e2e.conftest import RENEWALD, Renewald
from tests.store.factories import attempt_rows, conversation_row, job_of
from tests.waiting import wait_for

DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def one_line_error(out, code: int = 2) -> str:
    assert out.returncode == code, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def ok(out) -> str:
    assert out.returncode == 0, (out.stdout, out.stderr)
    return out.stdout


def show(renewald: Renewald, job_id: str) -> dict:
    return json.loads(ok(renewald.run("show", job_id, "--json")))


def set_job(store: Store, job_id: str, **values) -> None:
    store.write(
        lambda c: c.execute(
            update(renewal_jobs).where(renewal_jobs.c.job_id == job_id).values(**values)
        )
    )


# -- show / explain, conversations -----------------------------------------------------


def test_pause_explain_resume(renewald: Renewald, e2e_store: Store) -> None:
    renewald.enqueue("c1", "later", "--job-id", "later", "--at", "+1h", "--target-kind", "log")
    renewald.enqueue("c1", "now", "--job-id", "now", "--target-kind", "log")
    assert show(renewald, "now")["explain"]["rule"] == "due"
    later = show(renewald, "later")["explain"]
    assert (later["state"], later["rule"]) == ("waiting", "not_due")
    assert later["until"] == job_of(e2e_store, "later").next_attempt_at

    assert "conversation c1 paused" in ok(renewald.run("conversations", "pause", "c1"))
    why = show(renewald, "now")["explain"]
    assert (why["rule"], why["state"]) == ("conversation_status", "waiting")
    assert "is paused" in why["detail"]
    assert [h["rule"] for h in show(renewald, "later")["explain"]["also"]] == ["not_due"]
    text = ok(renewald.run("show", "now"))
    assert "explain      waiting: conversation c1 is paused" in text
    [listed] = json.loads(ok(renewald.run("conversations", "list", "--json")))
    assert (listed["local_conversation_id"], listed["automation_status"]) == ("c1", "paused")
    assert (listed["pending"], listed["running"]) == (2, 0) and listed["paused_at"] is not None
    table = ok(renewald.run("conversations", "list"))
    assert table.splitlines()[0].split() == [
        "CONVERSATION", "PLATFORM", "STATUS", "PENDING", "RUNNING", "COOLDOWN"
    ]  # fmt: skip
    assert ok(renewald.run("run", "--once")) and job_of(e2e_store, "now").status == "pending"

    assert "resumed" in ok(renewald.run("conversations", "resume", "c1"))
    row = conversation_row(e2e_store, "c1")
    assert (row["automation_status"], row["paused_at"]) == ("auto", None)
    ok(renewald.run("run", "--once"))
    text = ok(renewald.run("show", "now"))
    assert "explain      finished: delivered at" in text
    assert "delivered" in text.split("attempts\n")[1]  # the attempts table

    assert one_line_error(renewald.run("conversations", "pause", "nope")) == (
        "renewald: no conversation nope"
    )
    assert "No such command" in one_line_error(renewald.run("conversations", "stop", "c1"))


def test_retry_and_cancel(renewald: Renewald, e2e_store: Store) -> None:
    renewald.enqueue("c-bad", "hello", "--job-id", "j", "--max-attempts", "4")  # no target
    assert renewald.run("run", "--once").returncode == 1
    why = show(renewald, "j")["explain"]
    assert (why["state"], why["rule"]) == ("finished", "permanent")
    assert "no target" in why["detail"]

    assert "job j retried" in ok(renewald.run("retry", "j"))
    job = job_of(e2e_store, "j")
    assert (job.status, job.attempt_count, job.max_attempts) == ("pending", 0, 4)
    assert (job.terminal_reason, job.finished_at) == (None, None)
    assert job.next_attempt_at is not None and job.next_attempt_at <= now_ms()
    op = attempt_rows(e2e_store, "j")[-1]
    assert (op["outcome"], op["decision_reason"]) == ("operator_retry", "retried by operator")
    [line] = [x for x in renewald.log_lines() if x["event"] == "job.retried"]
    assert line["attempt_id"] == op["attempt_id"] and line["job_id"] == "j"
    assert job.log_path and Path(job.log_path).exists()
    assert "is pending, not failed" in one_line_error(renewald.run("retry", "j"))

    assert "job j cancelled" in ok(renewald.run("cancel", "j"))
    job = job_of(e2e_store, "j")
    assert (job.status, job.terminal_reason) == ("failed", "cancelled")
    assert attempt_rows(e2e_store, "j")[-1]["outcome"] == "cancelled"
    assert [x["event"] for x in renewald.log_lines()][-1] == "job.cancelled"
    assert one_line_error(renewald.run("cancel", "j")) == (
        "renewald: job j is already finished (failed/cancelled)"
    )
    assert one_line_error(renewald.run("cancel", "nope")) == "renewald: no job nope"
    assert one_line_error(renewald.run("retry", "nope")) == "renewald: no job nope"

    # Bulk: cancelled jobs are left alone unless named.
    dry = json.loads(ok(renewald.run("retry", "--failed", "--dry-run", "--json")))
    assert dry == {"dry_run": True, "count": 0, "job_ids": []}
    named = ok(renewald.run("retry", "--failed", "--reason", "cancelled", "--since", "1h"))
    assert named.strip() == "retried 1 failed job"
    assert job_of(e2e_store, "j").status == "pending"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "give a JOB or --failed"),
        (["j", "--failed"], "not both"),
        (["j", "--since", "2h"], "go with --failed"),
        (["--failed", "--since", "soon"], "--since"),
        (["--failed", "--since", "0s"], "longer than zero"),
    ],
)
def test_retry_bad_input(renewald: Renewald, e2e_store: Store, args, expected) -> None:
    assert expected in one_line_error(renewald.run("retry", *args))


def test_cancel_running_job(renewald: Renewald, e2e_store: Store, tmp_path: Path) -> None:
    """A running job cancelled mid-delivery ends failed/cancelled although it delivered."""
    script = (
        'touch "$GATE/started-$RENEWALD_JOB_ID"; '
        'while [ ! -e "$GATE/release" ]; do sleep 0.02; done'
    )
    gated_command_config(renewald, script, gate=tmp_path)
    renewald.enqueue("c", "first", "--job-id", "a", "--target-kind", "command")
    renewald.enqueue("c", "second", "--job-id", "b", "--target-kind", "command", "--at", "+0s")
    proc = renewald.start()
    try:
        wait_for(lambda: (tmp_path / "started-a").exists(), what="job a started")
        running = show(renewald, "a")["explain"]
        assert (running["state"], running["rule"]) == ("running", "leased")
        assert "owner alive" in running["detail"]
        busy = show(renewald, "b")["explain"]
        assert busy["rule"] == "conversation_busy"
        assert "job a" in busy["detail"] and "owner alive" in busy["detail"]

        out = ok(renewald.run("cancel", "a"))
        assert "marked cancelled" in out
        assert show(renewald, "a")["explain"]["rule"] == "cancelling"
        assert "already being cancelled" in ok(renewald.run("cancel", "a"))
        (tmp_path / "release").touch()
        wait_for(lambda: job_of(e2e_store, "a").status == "failed", what="a ends")
        wait_for(lambda: job_of(e2e_store, "b").status == "done", what="b delivered")
    finally:
        (tmp_path / "release").touch()
        code, err = renewald.stop(proc)
    assert code == 0, err
    job = job_of(e2e_store, "a")
    assert (job.terminal_reason, job.lease_owner) == ("cancelled", None)
    [row] = attempt_rows(e2e_store, "a")
    assert (row["outcome"], row["decision"]) == ("delivered", "failed")
    assert row["decision_reason"].startswith("cancelled by operator")
    assert "job.cancel_requested" in [x["event"] for x in renewald.log_lines()]


# -- stats -----------------------------------------------------------------------------


def test_stats(renewald: Renewald, e2e_store: Store) -> None:
    t = now_ms()
    renewald.enqueue("c-bad", "x", "--job-id", "failed")  # no target: permanent
    renewald.run("run", "--once")
    renewald.enqueue("c-ok", "x", "--job-id", "due", "--target-kind", "log")
    renewald.enqueue("c-ok", "x", "--job-id", "unscheduled")
    set_job(e2e_store, "unscheduled", next_attempt_at=None)
    renewald.enqueue("c-held", "x", "--job-id", "held", "--target-kind", "log")
    ok(renewald.run("conversations", "pause", "c-held"))
    e2e_store.write(
        lambda c: c.execute(
            insert(renewal_target_pauses).values(
                target_key="webhook:http://127.0.0.1:9", adapter="http.webhook", failures=5,
                paused_until=t + 3_600_000, opened_at=t, last_error="HTTP 503", updated_at=t,
            )
        )
    )  # fmt: skip
    data = json.loads(ok(renewald.run("stats", "--json")))
    assert data["by_status"] == {"failed": 1, "pending": 3}
    assert (data["due"], data["held"], data["unscheduled"], data["running"]) == (1, 1, 1, 0)
    assert data["failures"] == {"permanent": 1}
    assert [p["target_key"] for p in data["paused_targets"]] == ["webhook:http://127.0.0.1:9"]
    assert data["daemons"] == []
    text = ok(renewald.run("stats"))
    assert "jobs       pending 3, running 0, done 0, failed 1" in text
    assert "failures   last 24h: permanent 1" in text
    assert "webhook:http://127.0.0.1:9" in text

    line = one_line_error(renewald.run("stats", "--watch"))
    assert "--watch needs a terminal" in line
    assert "--since" in one_line_error(renewald.run("stats", "--since", "yesterday"))


def test_stats_watch_redraws_on_a_terminal(renewald: Renewald, e2e_store: Store) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [RENEWALD, "stats", "--watch", "--interval", "100ms"],
        env=renewald.env,
        cwd=renewald.dir,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""

    def frames() -> bool:
        nonlocal seen
        readable, _, _ = wait_readable([leader], [], [], 0.1)
        if readable:
            with contextlib.suppress(OSError):  # EIO once the child has gone
                seen += os.read(leader, 65536)
        return seen.count(b"renewald stats, every 100ms") >= 2

    try:
        wait_for(frames, what="two frames of stats --watch")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(leader)
    assert b"Traceback" not in seen and b"jobs       pending 0" in seen


# -- prune and retention ---------------------------------------------------------------


def finished_jobs(renewald: Renewald, e2e_store: Store, *ids: str, age_ms: int) -> None:
    for job_id in ids:
        renewald.enqueue(f"c-{job_id}", "x", "--job-id", job_id, "--target-kind", "log")
    ok(renewald.run("run", "--once"))
    for job_id in ids:
        set_job(e2e_store, job_id, finished_at=now_ms() - age_ms)


def test_prune(renewald: Renewald, e2e_store: Store) -> None:
    finished_jobs(renewald, e2e_store, "old-1", "old-2", age_ms=31 * DAY_MS)
    finished_jobs(renewald, e2e_store, "recent", age_ms=DAY_MS)
    renewald.enqueue("c-p", "x", "--job-id", "pending", "--at", "+1h")
    dry = ok(renewald.run("prune", "--older-than", "30d", "--dry-run"))
    assert dry.startswith("would delete 2 finished jobs and 2 attempts")
    assert len(e2e_store.list_jobs()) == 4
    out = json.loads(ok(renewald.run("prune", "--older-than", "30d", "--batch", "1", "--json")))
    assert (out["dry_run"], out["jobs"], out["attempts"]) == (False, 2, 2)
    assert {j.job_id for j in e2e_store.list_jobs()} == {"recent", "pending"}
    assert attempt_rows(e2e_store, "old-1") == []

    assert "--older-than" in one_line_error(renewald.run("prune"))
    assert "--older-than" in one_line_error(renewald.run("prune", "--older-than", "month"))


def test_daemon_retention_tick(renewald: Renewald, e2e_store: Store) -> None:
    finished_jobs(renewald, e2e_store, "old", age_ms=3 * DAY_MS)
    finished_jobs(renewald, e2e_store, "recent", age_ms=DAY_MS // 2)
    renewald.write_config(extra='[retention]\nolder_than = "2d"\ninterval = "200ms"')
    proc = renewald.start()
    try:
        wait_for(lambda: e2e_store.get_job("old") is None, what="old job pruned")
    finally:
        code, err = renewald.stop(proc)
    assert code == 0, err
    assert "retention.pruned" in err
    assert e2e_store.get_job("recent") is not None


# -- /metrics and /healthz --------------------------------------------------------------


def listening_address(renewald: Renewald, proc) -> str:
    def address() -> str | None:
        for line in renewald.stderr(proc).splitlines():
            if '"http.listening"' in line:
                return json.loads(line)["address"]
        return None

    return wait_for(address, what="http.listening")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split(" ")[1])
    return None


def test_metrics_and_healthz(renewald: Renewald, e2e_store: Store) -> None:
    renewald.write_config(extra='[http]\nlisten = "127.0.0.1:0"')
    proc = renewald.start()
    try:
        base = f"http://{listening_address(renewald, proc)}"
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, what="healthz 200")
        assert get(f"{base}/healthz")[1].startswith("ok: last poll")

        job_id = renewald.enqueue("c1", "hello", "--target-kind", "log")
        wait_for(lambda: job_of(e2e_store, job_id).status == "done", what="delivered")
        renewald.enqueue("c2", "later", "--at", "+1h", "--target-kind", "log")
        t = now_ms()
        e2e_store.write(
            lambda c: c.execute(
                insert(renewal_target_pauses).values(
                    target_key="browser:firefox", adapter="browser.proxy_delivery", failures=5,
                    paused_until=t + 60_000, opened_at=t, updated_at=t,
                )
            )
        )  # fmt: skip

        def scraped() -> str | None:
            code, text = get(f"{base}/metrics")
            assert code == 200
            delivered = 'renewald_attempts_total{adapter="log",outcome="delivered"} 1.0'
            return text if delivered in text else None

        text = wait_for(scraped, what="the delivered attempt in /metrics")
        assert sample(text, "renewald_store_up") == 1.0
        assert sample(text, "renewald_jobs_due") == 0.0
        assert sample(text, "renewald_jobs_running") == 0.0
        assert sample(text, "renewald_targets_paused") == 1.0
        assert sample(text, "renewald_rescues_total") == 0.0
        assert sample(text, "renewald_lease_losses_total") == 0.0
        count = 'renewald_delivery_duration_seconds_count{adapter="log",outcome="delivered"}'
        assert f"{count} 1.0" in text
        assert 'target="browser:firefox"' in text
        assert "python_gc_objects_collected_total" not in text  # a registry of our own
        assert get(f"{base}/nope")[0] == 404
    finally:
        code, err = renewald.stop(proc)
    assert code == 0, err
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=5)


def test_metrics_port_in_use_is_one_line(renewald: Renewald, e2e_store: Store) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        renewald.write_config(extra=f'[http]\nlisten = "127.0.0.1:{port}"')
        out = renewald.run("run")
    line = one_line_error(out)
    assert "[http] listen" in line and "cannot listen" in line
    assert e2e_store.list_daemons() == []


def gated_command_config(renewald: Renewald, script: str, *, gate: Path) -> None:
    """The command adapter runs `script` under /bin/sh with $GATE, a directory the test
    uses to see a delivery start and to let it finish."""
    renewald.write_config(
        extra="\n".join(
            [
                "[adapters.command]",
                f"argv = {json.dumps(['/bin/sh', '-c', script])}",
                'timeout = "60s"',
                f"env = {{ GATE = {json.dumps(str(gate))} }}",
            ]
        )
    )
