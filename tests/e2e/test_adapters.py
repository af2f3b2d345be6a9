"""Every adapter through the real `renewald` process, against real local targets.

HTTP targets are a threaded `http.server` on 127.0.0.1 (port 0) that records each request
and answers as the test scripts it; the command target is a real Python script. Jobs and
links are written as the tracker writes them. Assertions compare recorded values (attempt
rows, JSONL lines, what the server saw), never the wall clock.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from renewald.store import Store
from renewald.store.schema import (
    conversation_links,
    local_conversations,
    renewal_job_attempts,
    renewal_jobs,
    renewal_target_pauses,
)
from tests.e2e.conftest import Renewald
from tests.httpd import reply
from tests.waiting import wait_for

SECRET = "e2e-webhook-secret-5f0c9a2d"
BRIDGE = "browser.proxy_delivery"
WEBHOOK = "http.webhook"

# --- a real HTTP target -----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    path: str
    headers: Message
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Target:
    """What the server answers and how long it holds each request (to observe overlap).

    Requests are counted in flight per `clientId` (or path) from arrival until just
    before the answer is written: the client cannot start its next delivery before it
    has the answer, so any overlap counted here is an overlap in the daemon.
    """

    answer: Callable[[int, Seen], Answer] = lambda n, seen: (200, {}, b'{"accepted":true}')
    hold: float = 0.0
    requests: list[Seen] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    peak_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = Seen(self.path, self.headers, raw)
        target = self.server.target
        try:
            unit = str(seen.body.get("target", {}).get("clientId") or self.path)
        except ValueError:
            unit = self.path
        with target.lock:
            target.requests.append(seen)
            n = len(target.requests)
            target.in_flight[unit] += 1
            target.peak[unit] = max(target.peak[unit], target.in_flight[unit])
            target.peak_total = max(target.peak_total, sum(target.in_flight.values()))
        try:
            if target.hold:
                target.release.wait(target.hold)
            status, headers, body = target.answer(n, seen)
        finally:
            with target.lock:
                target.in_flight[unit] -= 1
        reply(self, status, body, headers)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins every handler thread
    block_on_close = True
    target: Target


@pytest.fixture
def http_target() -> Iterator[tuple[Target, str]]:
    """A scripted HTTP target and its base URL (`http://127.0.0.1:<port>`)."""
    target = Target()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.target = target
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield target, f"http://127.0.0.1:{server.server_address[1]}"
    target.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


# --- rows as the tracker writes them ----------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def add_conversation(
    store: Store,
    conversation: str,
    *,
    kind: str | None,
    client_id: str | None = None,
    target_payload: str | None = None,
) -> None:
    t = now_ms()

    def tx(conn):  # type: ignore[no-untyped-def]
        conn.execute(
            insert(local_conversations).values(
                local_conversation_id=conversation,
                platform="claude",
                automation_status="auto",
                created_at=t,
                updated_at=t,
            )
        )
        conn.execute(
            insert(conversation_links).values(
                link_id=f"link-{conversation}",
                local_conversation_id=conversation,
                platform="claude",
                remote_conversation_id=f"remote-{conversation}",
                client_id=client_id,
                page_url=f"https://claude.ai/chat/remote-{conversation}",
                target_kind=kind,
                target_payload=target_payload,
                is_active=1,
                observed_at=t,
                created_at=t,
                updated_at=t,
            )
        )

    store.write(tx)


def add_job(
    store: Store,
    job_id: str,
    conversation: str,
    *,
    payload: str | None = None,
    max_attempts: int = 3,
) -> None:
    t = now_ms()
    store.write(
        lambda conn: conn.execute(
            insert(renewal_jobs).values(
                job_id=job_id,
                local_conversation_id=conversation,
                message_id=f"msg-{job_id}",
                status="pending",
                payload=f"keepalive {job_id}" if payload is None else payload,
                payload_kind="text",
                attempt_count=0,
                max_attempts=max_attempts,
                next_attempt_at=t,
                created_at=t,
                updated_at=t,
            )
        )
    )


def jobs(store: Store) -> dict[str, dict[str, Any]]:
    rows = store.read(lambda c: c.execute(select(renewal_jobs)).mappings().all())
    return {r["job_id"]: dict(r) for r in rows}


def attempts(store: Store, job_id: str | None = None) -> list[dict[str, Any]]:
    query = select(renewal_job_attempts).order_by(
        renewal_job_attempts.c.started_at, renewal_job_attempts.c.finished_at
    )
    if job_id is not None:
        query = query.where(renewal_job_attempts.c.job_id == job_id)
    return [dict(r) for r in store.read(lambda c: c.execute(query).mappings().all())]


def assert_log_matches(renewald: Renewald, store: Store) -> dict[str, dict[str, Any]]:
    """Every attempt row has exactly one `attempt.finished` line with the same attempt_id
    and the same facts; returns the lines by attempt_id."""
    lines = [line for line in renewald.log_lines() if line["event"] == "attempt.finished"]
    by_id = {line["attempt_id"]: line for line in lines}
    assert len(by_id) == len(lines), "one line per attempt"
    rows = attempts(store)
    assert set(by_id) == {r["attempt_id"] for r in rows}
    for row in rows:
        line = by_id[row["attempt_id"]]
        assert line["job_id"] == row["job_id"]
        assert line["outcome"] == row["outcome"]
        assert line["attempt"] == row["attempt_no"]
        assert line.get("next_attempt_at") == row["next_attempt_at"]
        assert line["duration_ms"] == row["duration_ms"]
    return by_id


def run_until_all_done(renewald: Renewald, store: Store, *, what: str) -> str:
    """Start the daemon, wait (30s at most) until every job is done, stop it cleanly; its
    stderr."""
    proc = renewald.start()
    wait_for(
        lambda: all(j["status"] == "done" for j in jobs(store).values()), timeout=30, what=what
    )
    code, err = renewald.stop(proc)
    assert code == 0, err
    return err


def config(renewald: Renewald, text: str, **daemon: Any) -> None:
    renewald.write_config(textwrap.dedent(text), **daemon)


def ok(out) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in out.stderr, out.stderr


# --- each adapter kind ------------------------------------------------------------------


def test_bridge_routes_by_client_with_idempotency_key_and_attempt(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    config(
        renewald,
        f"""
        [adapters."{BRIDGE}"]
        url = "{base}/deliver"
        clients."firefox-claude" = {{ url = "{base}/firefox" }}
        """,
    )
    add_conversation(e2e_store, "c-ff", kind=BRIDGE, client_id="firefox-claude")
    add_conversation(e2e_store, "c-gpt", kind=BRIDGE, client_id="chrome-gpt")
    add_job(e2e_store, "j-ff", "c-ff")
    add_job(e2e_store, "j-gpt", "c-gpt")

    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    ok(out)

    by_job = {seen.body["job_id"]: seen for seen in target.requests}
    assert sorted(by_job) == ["j-ff", "j-gpt"]
    assert by_job["j-ff"].path == "/firefox", "the client's own route"
    assert by_job["j-gpt"].path == "/deliver", "everyone else: the default url"
    for job_id, seen in by_job.items():
        assert seen.headers["Idempotency-Key"] == job_id
        assert seen.headers["X-Renewald-Attempt"] == "1"
        body = seen.body
        conversation = "c-ff" if job_id == "j-ff" else "c-gpt"
        assert body["attempt"] == 1
        assert body["conversation"] == {
            "local_id": conversation,
            "platform": "claude",
            "remote_id": f"remote-{conversation}",
            "page_url": f"https://claude.ai/chat/remote-{conversation}",
        }
        assert body["target"]["clientId"] == (
            "firefox-claude" if job_id == "j-ff" else "chrome-gpt"
        )
        assert (body["payload"], body["payload_kind"]) == (f"keepalive {job_id}", "text")
    for job in jobs(e2e_store).values():
        assert (job["status"], job["terminal_reason"], job["attempt_count"]) == (
            "done",
            "delivered",
            1,
        )
    lines = assert_log_matches(renewald, e2e_store)
    assert {line["adapter"] for line in lines.values()} == {BRIDGE}


def test_webhook_is_signed_with_the_secret_from_the_environment(
    renewald: Renewald,
    e2e_store: Store,
    http_target: tuple[Target, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, base = http_target
    monkeypatch.setenv("E2E_WEBHOOK_SECRET", SECRET)
    config(
        renewald,
        f"""
        [adapters."{WEBHOOK}"]
        secret_env = "E2E_WEBHOOK_SECRET"
        """,
    )
    url = f"{base}/hook?token=tok-0123456789abcdef"
    add_conversation(e2e_store, "c-hook", kind=WEBHOOK, target_payload=json.dumps({"url": url}))
    add_job(e2e_store, "j-hook", "c-hook")

    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    ok(out)

    [seen] = target.requests
    assert seen.path.startswith("/hook?")
    assert seen.headers["Idempotency-Key"] == "j-hook"
    # What a receiver does: HMAC-SHA256 of the exact body bytes, compared in constant time.
    expected = "sha256=" + hmac.new(SECRET.encode(), seen.raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(seen.headers["X-Renewald-Signature"], expected)
    assert seen.body["target"]["url"] == url

    [row] = attempts(e2e_store)
    assert row["outcome"] == "delivered" and row["adapter"] == WEBHOOK
    assert "tok-0123456789abcdef" not in (row["target"] or ""), "the URL's token is redacted"
    assert_log_matches(renewald, e2e_store)
    everything = json.dumps(
        [jobs(e2e_store), attempts(e2e_store), renewald.log_lines()], default=str
    )
    for text in (everything, out.stdout, out.stderr):
        assert SECRET not in text


COMMAND_SCRIPT = """
    import json, os, sys

    target = json.loads(os.environ["RENEWALD_TARGET"])
    names = [n for n in os.environ if n.startswith("RENEWALD_")] + ["DELIVER_MODE"]
    record = {"stdin": sys.stdin.read(), "env": {n: os.environ.get(n) for n in names}}
    with open(os.path.join(sys.argv[1], os.environ["RENEWALD_JOB_ID"] + ".json"), "w") as f:
        json.dump(record, f)
    code = int(target.get("exit", 0))
    if code:
        print(f"deliver-renewal: giving up with {code}", file=sys.stderr)
    sys.exit(code)
"""


def test_command_gets_payload_on_stdin_job_in_env_and_maps_exit_codes(
    renewald: Renewald, e2e_store: Store, tmp_path: Path
) -> None:
    script = tmp_path / "deliver.py"
    script.write_text(textwrap.dedent(COMMAND_SCRIPT))
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    argv = json.dumps([sys.executable, str(script), str(seen_dir)])
    config(
        renewald,
        f"""
        [adapters.command]
        argv = {argv}
        timeout = "20s"
        env = {{ DELIVER_MODE = "e2e" }}
        exit_codes = {{ "3" = "retry" }}
        """,
    )
    cases = {"ok": 0, "tempfail": 75, "mapped": 3, "broken": 2}
    for name, code in cases.items():
        add_conversation(
            e2e_store, f"c-{name}", kind="command", target_payload=json.dumps({"exit": code})
        )
        add_job(e2e_store, f"j-{name}", f"c-{name}")

    out = renewald.run("run", "--once")
    assert out.returncode == 1, out.stderr  # "broken" ended failed in this run
    ok(out)

    by_job = {r["job_id"]: r for r in attempts(e2e_store)}
    state = jobs(e2e_store)
    for name in cases:
        record = json.loads((seen_dir / f"j-{name}.json").read_text())
        assert record["stdin"] == f"keepalive j-{name}"
        env = record["env"]
        assert env["RENEWALD_JOB_ID"] == env["RENEWALD_IDEMPOTENCY_KEY"] == f"j-{name}"
        assert env["RENEWALD_ATTEMPT"] == "1"
        assert env["RENEWALD_ATTEMPT_ID"] == by_job[f"j-{name}"]["attempt_id"]
        assert env["RENEWALD_CONVERSATION"] == f"c-{name}"
        assert env["RENEWALD_REMOTE_ID"] == f"remote-c-{name}"
        assert env["DELIVER_MODE"] == "e2e"
    assert (state["j-ok"]["status"], state["j-ok"]["terminal_reason"]) == ("done", "delivered")
    for name in ("tempfail", "mapped"):
        row = by_job[f"j-{name}"]
        assert (row["outcome"], state[f"j-{name}"]["status"]) == ("retry", "pending")
        assert row["next_attempt_at"] - row["finished_at"] == 1000
    broken = state["j-broken"]
    assert (broken["status"], broken["terminal_reason"]) == ("failed", "permanent")
    assert broken["last_error"] == "exit 2: deliver-renewal: giving up with 2"
    assert_log_matches(renewald, e2e_store)


def test_log_adapter_is_the_dry_run(renewald: Renewald, e2e_store: Store) -> None:
    add_conversation(e2e_store, "c-log", kind="log")
    add_job(e2e_store, "j-log", "c-log", payload="would have said this")
    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    ok(out)
    [logged] = [
        line
        for line in renewald.log_lines()
        if line["event"] == "attempt.finished" and line["job_id"] == "j-log"
    ]
    assert logged["summary"] == "logged: would have said this"
    [row] = attempts(e2e_store)
    assert row["attempt_id"] == logged["attempt_id"] and row["outcome"] == "delivered"
    assert row["response_summary"] == "logged: would have said this"
    shown = renewald.run("show", "j-log")
    assert "would have said this" in shown.stdout
    assert_log_matches(renewald, e2e_store)


# --- failures, backoff, Retry-After -----------------------------------------------------


def test_failing_target_backs_off_exactly_then_exhausts(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    target.answer = lambda n, seen: (500, {}, b"internal error")
    config(
        renewald,
        f"""
        [adapters."{BRIDGE}"]
        url = "{base}/deliver"
        [breaker]
        failures = 10
        """,
    )
    add_conversation(e2e_store, "c-down", kind=BRIDGE, client_id="tab-down")
    add_job(e2e_store, "j-down", "c-down", max_attempts=3)

    proc = renewald.start()
    wait_for(lambda: jobs(e2e_store)["j-down"]["status"] == "failed", timeout=30, what="exhausted")
    code, err = renewald.stop(proc)
    assert code == 0, err
    assert "Traceback" not in err

    job = jobs(e2e_store)["j-down"]
    assert (job["terminal_reason"], job["attempt_count"]) == ("exhausted", 3)
    rows = attempts(e2e_store, "j-down")
    assert [r["attempt_no"] for r in rows] == [1, 2, 3]
    assert all(r["outcome"] == "retry" for r in rows)
    assert rows[0]["next_attempt_at"] - rows[0]["finished_at"] == 1000  # base 1s * 2^0
    assert rows[1]["next_attempt_at"] - rows[1]["finished_at"] == 2000  # base 1s * 2^1
    assert [r["decision_reason"] for r in rows[:2]] == ["backoff=2^0*1s", "backoff=2^1*1s"]
    assert rows[2]["next_attempt_at"] is None and rows[2]["decision"] == "failed"
    assert rows[2]["decision_reason"] == "attempts exhausted (3/3)"
    for earlier, later in itertools.pairwise(rows):
        assert later["started_at"] >= earlier["next_attempt_at"], "never before it is due"
    assert job["last_error"] == rows[2]["error_message"] == "HTTP 500: internal error"
    assert [seen.headers["X-Renewald-Attempt"] for seen in target.requests] == ["1", "2", "3"]
    assert {seen.headers["Idempotency-Key"] for seen in target.requests} == {"j-down"}
    lines = assert_log_matches(renewald, e2e_store)
    assert [lines[r["attempt_id"]]["status"] for r in rows] == ["pending", "pending", "failed"]


def test_429_with_retry_after_is_rate_limited_until_then(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    target.answer = lambda n, seen: (429, {"Retry-After": "7"}, b"slow down")
    config(renewald, f'[adapters."{BRIDGE}"]\nurl = "{base}/deliver"\n')
    add_conversation(e2e_store, "c-busy", kind=BRIDGE, client_id="tab-busy")
    add_job(e2e_store, "j-busy", "c-busy")

    out = renewald.run("run", "--once")
    assert out.returncode == 75, out.stderr
    ok(out)
    [row] = attempts(e2e_store)
    assert (row["outcome"], row["error_class"]) == ("rate_limited", "RateLimited")
    assert row["next_attempt_at"] - row["finished_at"] == 7000
    assert row["decision_reason"] == "retry_after=7s"
    job = jobs(e2e_store)["j-busy"]
    assert (job["status"], job["next_attempt_at"]) == ("pending", row["next_attempt_at"])

    again = renewald.run("run", "--once")
    assert again.returncode == 0, again.stderr  # not due yet: nothing to do
    assert len(target.requests) == 1 and jobs(e2e_store)["j-busy"]["attempt_count"] == 1
    assert_log_matches(renewald, e2e_store)


# --- the breaker and the per-target limit -----------------------------------------------


def test_breaker_pauses_a_failing_target_without_spending_attempts(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    failures = 2
    target.answer = lambda n, seen: (503, {}, b"warming up") if n <= failures else (200, {}, b"ok")
    config(
        renewald,
        f"""
        [adapters."{BRIDGE}"]
        url = "{base}/deliver"
        [breaker]
        failures = {failures}
        pause = "1s"
        """,
        workers=4,
    )
    names = [f"j{n}" for n in range(5)]
    for n, job_id in enumerate(names):
        add_conversation(e2e_store, f"c{n}", kind=BRIDGE, client_id="tab-1")
        add_job(e2e_store, job_id, f"c{n}", max_attempts=5)

    err = run_until_all_done(renewald, e2e_store, what="every job delivered after the pause")
    assert "Traceback" not in err

    rows = attempts(e2e_store)
    tried = [r for r in rows if r["outcome"] != "deferred"]
    deferred = [r for r in rows if r["outcome"] == "deferred"]
    assert [r["outcome"] for r in tried] == ["retry"] * failures + ["delivered"] * len(names)
    assert len(target.requests) == len(tried), "no connection for a deferred job"
    assert deferred, "the pause deferred jobs"

    events = [line for line in renewald.log_lines() if line["event"].startswith("breaker.")]
    assert [e["event"] for e in events] == ["breaker.opened", "breaker.probe", "breaker.closed"]
    opened, probe, closed = events
    assert opened["target_key"] == "browser:tab-1" and opened["failures"] == failures
    assert opened["attempt_id"] == tried[failures - 1]["attempt_id"], "the K-th failure opened it"
    paused_until = opened["paused_until"]
    assert paused_until - tried[failures - 1]["finished_at"] == 1000

    # While open: deferred to the end of the pause, attempt handed back, no delivery.
    for r in deferred:
        assert r["decision"] == "deferred" and r["error_class"] == "BreakerOpen"
        assert r["decision_reason"].startswith("breaker open until ")
        if r["started_at"] < paused_until:
            assert r["next_attempt_at"] == paused_until
    assert all(r["started_at"] >= paused_until for r in tried[failures:])
    # Half-open: the first delivery after the pause is the probe; it closed the breaker.
    assert probe["attempt_id"] == tried[failures]["attempt_id"]
    assert closed["attempt_id"] == probe["attempt_id"]
    assert e2e_store.read(lambda c: c.execute(select(renewal_target_pauses)).all()) == []

    # Attempts were spent only on real deliveries.
    state = jobs(e2e_store)
    for job_id in names:
        real = [r for r in tried if r["job_id"] == job_id]
        assert state[job_id]["attempt_count"] == len(real), job_id
        assert [r["attempt_no"] for r in real] == list(range(1, len(real) + 1))
    assert_log_matches(renewald, e2e_store)


def test_bridge_runs_one_delivery_per_client_at_a_time(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    target.hold = 0.15
    config(renewald, f'[adapters."{BRIDGE}"]\nurl = "{base}/deliver"\n', workers=8)
    clients = ["tab-a", "tab-b", "tab-c"]
    for n in range(12):
        add_conversation(e2e_store, f"c{n}", kind=BRIDGE, client_id=clients[n % 3])
        add_job(e2e_store, f"j{n:02d}", f"c{n}")

    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    ok(out)
    assert len(target.requests) == 12
    assert all(j["status"] == "done" for j in jobs(e2e_store).values())
    assert dict(target.peak) == dict.fromkeys(clients, 1), "one message at a time per browser"
    assert target.peak_total > 1, "while the other browsers were served in parallel"
    # Each client's jobs went out in the order they were claimed (due, then created).
    for client in clients:
        sent = [s.body["job_id"] for s in target.requests if s.body["target"]["clientId"] == client]
        assert sent == sorted(sent)
    assert_log_matches(renewald, e2e_store)


def test_jobs_in_line_keep_their_lease_past_its_length(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    """The last job waits longer than a whole lease: the heartbeat keeps it ours, so the
    rescuer (every 500ms) never takes it."""
    target, base = http_target
    target.hold = 1.2
    config(renewald, f'[adapters."{BRIDGE}"]\nurl = "{base}/deliver"\n', lease="3s")
    for n in range(4):
        add_conversation(e2e_store, f"c{n}", kind=BRIDGE, client_id="tab-slow")
        add_job(e2e_store, f"j{n}", f"c{n}")

    run_until_all_done(renewald, e2e_store, what="four deliveries, one at a time")
    rows = attempts(e2e_store)
    assert [r["outcome"] for r in rows] == ["delivered"] * 4, "nothing rescued or repeated"
    assert rows[-1]["started_at"] - rows[0]["started_at"] > 3000, "the last waited > a lease"
    assert len(target.requests) == 4 and target.peak["tab-slow"] == 1
    assert all(j["attempt_count"] == 1 for j in jobs(e2e_store).values())


def test_sigterm_gives_back_jobs_waiting_in_line(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    target.hold = 2.0  # long enough for SIGTERM to land while it is in flight
    config(renewald, f'[adapters."{BRIDGE}"]\nurl = "{base}/deliver"\n')
    for n in range(3):
        add_conversation(e2e_store, f"c{n}", kind=BRIDGE, client_id="tab-1")
        add_job(e2e_store, f"j{n}", f"c{n}")

    proc = renewald.start()
    wait_for(lambda: target.requests, what="the first delivery under way")
    code, err = renewald.stop(proc)
    assert code == 0, err
    assert "Traceback" not in err

    state = jobs(e2e_store)
    [first] = [seen.body["job_id"] for seen in target.requests]
    assert state[first]["status"] == "done", "the delivery in flight was let finish"
    waiting = [job_id for job_id in state if job_id != first]
    for job_id in waiting:
        job = state[job_id]
        assert (job["status"], job["attempt_count"], job["lease_owner"]) == ("pending", 0, None)
        assert attempts(e2e_store, job_id) == []
    released = {line["job_id"] for line in renewald.log_lines() if line["event"] == "job.released"}
    assert released == set(waiting)


def test_webhook_limit_per_origin_is_configurable(
    renewald: Renewald, e2e_store: Store, http_target: tuple[Target, str]
) -> None:
    target, base = http_target
    target.hold = 0.1
    config(renewald, f'[adapters."{WEBHOOK}"]\nmax_in_flight_per_target = 2\n', workers=8)
    for n in range(8):
        url = json.dumps({"url": f"{base}/hook/{n}"})
        add_conversation(e2e_store, f"c{n}", kind=WEBHOOK, target_payload=url)
        add_job(e2e_store, f"j{n}", f"c{n}")

    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    ok(out)
    assert len(target.requests) == 8
    assert sum(target.in_flight.values()) == 0
    # One origin, eight paths: the requests are counted per path, the limit is per origin.
    overlap = _max_overlap(renewald)
    assert overlap <= 2, f"{overlap} deliveries to one origin at once"


def _max_overlap(renewald: Renewald) -> int:
    """The most attempts in flight at once, from the attempts' own recorded times."""
    lines = [line for line in renewald.log_lines() if line["event"] == "attempt.finished"]
    spans = []
    for line in lines:
        end = _ms(line["ts"])
        spans.append((end - line["duration_ms"], end))
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def _ms(ts: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


# --- bad rows and bad configuration -----------------------------------------------------


def test_bad_rows_from_the_tracker_fail_alone(renewald: Renewald, e2e_store: Store) -> None:
    add_conversation(e2e_store, "c-good", kind="log")
    add_conversation(e2e_store, "c-json", kind=WEBHOOK, target_payload="{not json")
    add_conversation(e2e_store, "c-kind", kind="carrier.pigeon")
    add_conversation(e2e_store, "c-empty", kind="log")
    add_job(e2e_store, "good", "c-good")
    add_job(e2e_store, "bad-json", "c-json")
    add_job(e2e_store, "bad-kind", "c-kind")
    add_job(e2e_store, "bad-empty", "c-empty", payload="")

    out = renewald.run("run", "--once")
    assert out.returncode == 1, out.stderr
    ok(out)
    state = jobs(e2e_store)
    assert (state["good"]["status"], state["good"]["terminal_reason"]) == ("done", "delivered")
    expected = {
        # A row that does not fit its declared type is malformed (DESIGN §2).
        "bad-json": ("malformed", "malformed: conversation_links.target_payload is not JSON"),
        "bad-kind": ("permanent", "no adapter for target kind 'carrier.pigeon'"),
        "bad-empty": ("permanent", "payload is empty"),
    }
    for job_id, (terminal, reason) in expected.items():
        job = state[job_id]
        assert (job["status"], job["terminal_reason"]) == ("failed", terminal), job_id
        assert job["last_error"].startswith(reason), job["last_error"]
    assert "delivered 1" in out.stdout and "failed 3" in out.stdout
    assert_log_matches(renewald, e2e_store)


def test_misconfigured_adapter_defers_without_spending_attempts(
    renewald: Renewald, e2e_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("E2E_MISSING_SECRET", raising=False)
    config(
        renewald,
        f"""
        [adapters."{WEBHOOK}"]
        secret_env = "E2E_MISSING_SECRET"
        [breaker]
        pause = "1m"
        """,
    )
    hook = json.dumps({"url": "http://127.0.0.1:9/never"})
    for n in range(2):
        add_conversation(e2e_store, f"c-hook{n}", kind=WEBHOOK, target_payload=hook)
        add_job(e2e_store, f"hook{n}", f"c-hook{n}")
    add_conversation(e2e_store, "c-log", kind="log")
    add_job(e2e_store, "logged", "c-log")

    out = renewald.run("run", "--once")
    assert out.returncode == 75, out.stderr  # rescheduled, nothing failed
    ok(out)
    said = [line for line in out.stderr.splitlines() if "adapter.config_error" in line]
    assert len(said) == 1, "said loudly, once"
    assert "E2E_MISSING_SECRET" in said[0]

    state = jobs(e2e_store)
    assert state["logged"]["status"] == "done"
    for n in range(2):
        job = state[f"hook{n}"]
        assert (job["status"], job["attempt_count"]) == ("pending", 0), "no attempt spent"
        assert "E2E_MISSING_SECRET is not set" in job["last_error"]
        [row] = attempts(e2e_store, f"hook{n}")
        assert (row["outcome"], row["error_class"]) == ("deferred", "AdapterConfigError")
        assert row["next_attempt_at"] == job["next_attempt_at"] == row["finished_at"] + 60_000
    assert_log_matches(renewald, e2e_store)
