"""End-to-end fixtures: the real `renewald` executable, a temp config, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest
from sqlalchemy import Table, insert, select, text

from renewald.store import Store, migrate
from renewald.store.schema import conversation_links, local_conversations, renewal_jobs
from tests.httpd import reply

RENEWALD = str(Path(sys.executable).parent / "renewald")


class Renewald:
    """Runs the real renewald against one database, with a config written per test."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.dir = tmp_path
        self.db_url = db_url
        self.log_dir = tmp_path / "logs"
        self.config_path = tmp_path / "renewald.toml"
        self.procs: list[subprocess.Popen[str]] = []
        # Added to every process's environment (RENEWALD_<SECTION>_<KEY>, NOTIFY_SOCKET...).
        self.extra_env: dict[str, str] = {}
        self.write_config()

    def write_config(self, extra: str = "", **daemon: Any) -> None:
        settings = {
            "poll_interval": "200ms",
            "lease": "6s",
            "rescue_interval": "500ms",
            "shutdown_grace": "5s",
            **daemon,
        }
        lines = ["[daemon]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        lines += [
            "[retry]",
            'base = "1s"',
            "jitter = 0.0",
            "[logging]",
            f"dir = {json.dumps(str(self.log_dir))}",
            'console = "json"',
            extra,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RENEWALD_")}
        env.update(RENEWALD_DB=self.db_url, RENEWALD_CONFIG=str(self.config_path))
        env.update(self.extra_env)
        return env

    def run(self, *args: str, timeout: float = 120, input: str | None = None):
        return subprocess.run(
            [RENEWALD, *args],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start `renewald run`; its output goes to files so a full pipe never blocks it."""
        n = len(self.procs)
        out = open(self.dir / f"daemon-{n}.out", "w")  # noqa: SIM115
        err = open(self.dir / f"daemon-{n}.err", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [RENEWALD, "run", *args], env=self.env, cwd=self.dir, stdout=out, stderr=err, text=True
        )
        out.close()
        err.close()
        proc.stderr_path = self.dir / f"daemon-{n}.err"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], *, timeout: float = 15) -> tuple[int, str]:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
        return proc.returncode, self.stderr(proc)

    @staticmethod
    def stderr(proc: subprocess.Popen[str]) -> str:
        return proc.stderr_path.read_text()  # type: ignore[attr-defined]

    def enqueue(self, conversation: str, payload: str = "keepalive", *args: str) -> str:
        out = self.run("enqueue", "--conversation", conversation, "--payload", payload, *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def log_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for path in sorted(self.log_dir.glob("*.jsonl")):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line]
        return lines

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def renewald(tmp_path: Path, db_url: str) -> Iterator[Renewald]:
    r = Renewald(tmp_path, db_url)
    yield r
    r.cleanup()


@pytest.fixture
def e2e_store(renewald: Renewald) -> Iterator[Store]:
    """The same database, opened from the test for checks and direct rows."""
    store = Store.open(renewald.db_url, create=True)
    migrate(store.engine)
    yield store
    store.close()


# -- a delivery target that records what it saw -----------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the target received it (recorded before it answers)."""

    job_id: str
    idempotency_key: str | None
    attempt: int
    status: int


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # a killed client is expected


class _Received(Protocol):
    @property
    def job_id(self) -> str: ...


R = TypeVar("R", bound=_Received)


class RecordingTarget(Generic[R]):
    """A real HTTP endpoint on 127.0.0.1 that records what it receives (`requests`, in
    order of arrival) and counts what it holds (`in_flight`, by a key of the subclass's
    choosing). `release` ends every hold at once; `close` sets it and stops the server."""

    def __init__(self) -> None:
        self.requests: list[R] = []
        self.in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()

    def _serve(self, handler: type[BaseHTTPRequestHandler], path: str) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def busy(self) -> int:
        with self.lock:
            return sum(self.in_flight.values())

    def by_job(self) -> dict[str, list[R]]:
        with self.lock:
            received = list(self.requests)
        out: dict[str, list[R]] = {}
        for r in received:
            out.setdefault(r.job_id, []).append(r)
        return out

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections, as the daemon's client uses them), no access log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


def read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request's body; None (and the connection closed) when the sender died mid-request:
    nothing was delivered."""
    length = int(handler.headers["Content-Length"])
    raw = handler.rfile.read(length)
    if len(raw) < length:
        handler.close_connection = True
        return None
    return raw


class HookTarget(RecordingTarget[Seen]):
    """The endpoint of the `http.webhook` adapter.

    Records every POST the moment its body has arrived — before it answers, so a daemon
    killed mid-delivery leaves a request the target saw and the database never recorded.
    `delay(job_id, attempt)` returns seconds to wait before answering; `status(job_id,
    attempt)` the HTTP status to answer with. Both may be replaced while it runs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.delay: Callable[[str, int], float] = lambda job_id, attempt: 0.0
        self.status: Callable[[str, int], int] = lambda job_id, attempt: 200
        target = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = read_body(self)
                if raw is None:
                    return
                body = json.loads(raw)
                job_id, attempt = body["job_id"], int(self.headers["X-Renewald-Attempt"])
                status = target.status(job_id, attempt)
                with target.lock:
                    target.requests.append(
                        Seen(job_id, self.headers.get("Idempotency-Key"), attempt, status)
                    )
                    target.in_flight[job_id] += 1
                try:
                    target.release.wait(target.delay(job_id, attempt))
                    reply(self, status, b'{"ok": true}', {"Content-Type": "application/json"})
                except ConnectionError:
                    pass  # the daemon was killed while we held its request
                finally:
                    with target.lock:
                        target.in_flight[job_id] -= 1

        self._serve(Handler, "/hook")


@pytest.fixture
def hook_target() -> Iterator[HookTarget]:
    target = HookTarget()
    yield target
    target.close()


def add_webhook_jobs(
    store: Store, url: str, job_ids: list[str], *, max_attempts: int = 3, due: int | None = None
) -> None:
    """Tracker-style rows: one `auto` conversation per job, linked to `url` by http.webhook."""
    t = time.time_ns() // 1_000_000
    payload = json.dumps({"url": url})
    convs = [
        {"local_conversation_id": f"conv-{j}", "platform": "claude", "automation_status": "auto",
         "created_at": t, "updated_at": t}
        for j in job_ids
    ]  # fmt: skip
    links = [
        {"link_id": f"link-{j}", "local_conversation_id": f"conv-{j}", "platform": "claude",
         "remote_conversation_id": f"remote-{j}", "target_kind": "http.webhook",
         "target_payload": payload, "is_active": 1, "observed_at": t, "created_at": t,
         "updated_at": t}
        for j in job_ids
    ]  # fmt: skip
    jobs = [
        {"job_id": j, "local_conversation_id": f"conv-{j}", "message_id": f"msg-{j}",
         "status": "pending", "payload": f"keepalive {j}", "payload_kind": "text",
         "attempt_count": 0, "max_attempts": max_attempts,
         "next_attempt_at": t if due is None else due, "created_at": t, "updated_at": t}
        for j in job_ids
    ]  # fmt: skip

    def tx(conn: Any) -> None:
        conn.execute(insert(local_conversations), convs)
        conn.execute(insert(conversation_links), links)
        conn.execute(insert(renewal_jobs), jobs)

    store.write(tx)


def table(store: Store, which: Table) -> list[dict[str, Any]]:
    """Every row of `which`, as dicts."""
    return [dict(r) for r in store.read(lambda c: c.execute(select(which)).mappings().all())]


def pg_application_url(db_url: str) -> tuple[str, str]:
    """`db_url` with a unique application_name, and that name: its sessions can then be
    found in pg_stat_activity (and terminated) without touching anyone else's."""
    name = f"renewald-test-{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in db_url else "?"
    return f"{db_url}{sep}application_name={name}", name


def terminate_sessions(store: Store, application_name: str) -> tuple[int, int]:
    """pg_terminate_backend every session named `application_name`: how many there were,
    and how many of them were running a statement at that moment."""
    query = text(
        "SELECT count(pg_terminate_backend(pid)), count(*) FILTER (WHERE state = 'active') "
        "FROM pg_stat_activity WHERE application_name = :app AND pid <> pg_backend_pid()"
    )
    row = store.write(lambda c: c.execute(query, {"app": application_name}).one())
    return int(row[0]), int(row[1])
