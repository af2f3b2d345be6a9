"""Database outages, with the real process (issue 13): PostgreSQL behind a TCP proxy that
stops listening and drops its connections (refusing connections), SQLite held by another
connection in exclusive locking mode (everything it tries is "database is locked").

A database that is down is waited out, never reported as bad input: `migrate` and `run`
wait `[database] startup_wait` and exit 69 if it stays down; operator commands give up
with one line and exit 69; a running daemon rides it out, keeps feeding the watchdog,
answers /metrics with `renewald_store_up 0` and /healthz with 503, and delivers again
once the database is back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from renewald.store import Store
from tests.e2e.conftest import RENEWALD, Renewald
from tests.e2e.test_ops import get
from tests.e2e.test_service import FakeSystemd
from tests.store.factories import job_of
from tests.waiting import wait_for

EX_UNAVAILABLE = 69


class TcpProxy:
    """127.0.0.1:<port> forwarding to `upstream`. `down()` closes the listener and every
    connection through it (a server that went away and refuses connections); `up()`
    listens on the same port again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._conns += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class Outage:
    """The database of one test, made unreachable and back: `down()` / `up()`.

    SQLite: with no other connection open, `locking_mode = EXCLUSIVE` and `BEGIN
    EXCLUSIVE` lock readers out too. A WAL file that others hold open can only be locked
    for writes (`writes_only`): readers go on, every write is "database is locked"."""

    def __init__(self, db_url: str, proxy: TcpProxy | None, store: Store) -> None:
        self.db_url = db_url
        self.proxy = proxy
        self.store = store
        self._locker: sqlite3.Connection | None = None

    def down(self, *, writes_only: bool = False) -> None:
        if self.proxy is not None:
            self.proxy.down()
            return
        if not writes_only:
            self.store.engine.dispose()  # the test's own idle connection holds a lock too
        self._locker = sqlite3.connect(self.db_url.removeprefix("sqlite:///"), timeout=10)
        self._locker.isolation_level = None
        if not writes_only:
            self._locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        self._locker.execute("BEGIN EXCLUSIVE")

    def make_due(self, job_id: str) -> None:
        """Make a job due while the database is down for the daemon (PostgreSQL: the
        test's store does not go through the proxy; SQLite: inside the lock's own
        transaction, committed when the lock goes)."""
        sql = "UPDATE renewal_jobs SET next_attempt_at = 0 WHERE job_id = :job_id"
        if self._locker is not None:
            self._locker.execute(sql, {"job_id": job_id})
        else:
            self.store.write(lambda conn: conn.execute(text(sql), {"job_id": job_id}))

    def up(self) -> None:
        if self.proxy is not None:
            self.proxy.up()
        elif self._locker is not None:
            self._locker.execute("COMMIT")
            self._locker.close()
            self._locker = None


@pytest.fixture
def outage(renewald: Renewald, e2e_store: Store) -> Iterator[Outage]:
    """The daemon reaches PostgreSQL through a proxy (the test's own store does not);
    SQLite is the same file for both. Short timeouts keep every wait here short."""
    proxy = None
    if renewald.db_url.startswith("postgresql"):
        url = make_url(renewald.db_url)
        proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
        proxy.up()
        renewald.db_url = url.set(port=proxy.port).render_as_string(hide_password=False)
    renewald.extra_env.update(
        RENEWALD_DATABASE_BUSY_TIMEOUT="1s", RENEWALD_DATABASE_STARTUP_WAIT="60s"
    )
    o = Outage(renewald.db_url, proxy, e2e_store)
    yield o
    o.up() if proxy is None else proxy.down()


def one_line_69(out: subprocess.CompletedProcess[str] | tuple[int, str]) -> str:
    code, err = (out.returncode, out.stderr) if not isinstance(out, tuple) else out
    assert code == EX_UNAVAILABLE, (code, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("renewald: database unavailable: "), err
    return last


def spawn(renewald: Renewald, name: str, *args: str) -> subprocess.Popen[str]:
    err = open(renewald.dir / f"{name}.err", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [RENEWALD, *args],
        env=renewald.env,
        cwd=renewald.dir,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    err.close()
    proc.stderr_path = renewald.dir / f"{name}.err"  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode, Path(proc.stderr_path).read_text()  # type: ignore[attr-defined]


def waiting(proc: subprocess.Popen[str]) -> bool:
    return '"database.waiting"' in Path(proc.stderr_path).read_text()  # type: ignore[attr-defined]


def test_down_at_start_migrate_and_run_wait_then_work(
    renewald: Renewald, e2e_store: Store, outage: Outage
) -> None:
    job_id = renewald.enqueue("c1", "hello", "--target-kind", "log")
    outage.down()
    migrate = spawn(renewald, "migrate", "migrate")
    wait_for(lambda: waiting(migrate), what="migrate waiting for the database")
    outage.up()
    code, err = finish(migrate)
    assert code == 0, err
    assert "Traceback" not in err

    outage.down()
    daemon = renewald.start()
    wait_for(lambda: '"database.waiting"' in renewald.stderr(daemon), what="run waiting")
    outage.up()
    wait_for(lambda: job_of(e2e_store, job_id).status == "done", what="delivered once it is back")
    code, err = renewald.stop(daemon)
    assert code == 0, err[-3000:]
    assert '"database.available"' in err


def test_down_for_longer_than_startup_wait_is_exit_69(
    renewald: Renewald, e2e_store: Store, outage: Outage
) -> None:
    renewald.extra_env["RENEWALD_DATABASE_STARTUP_WAIT"] = "1s"
    outage.down()
    commands = {
        "migrate": ["migrate"],
        "run": ["run"],
        "once": ["run", "--once"],
        "jobs": ["jobs"],
        "show": ["show", "some-job"],
        "stats": ["stats"],
    }
    procs = {name: spawn(renewald, name, *args) for name, args in commands.items()}
    for name, proc in procs.items():
        code, err = finish(proc)
        last = one_line_69((code, err))
        if name in ("migrate", "run", "once"):
            assert "startup_wait = 1s" in last, last
        else:
            assert err.count("\n") == 1, (name, err)  # one line, nothing else


def store_up(base: str) -> float | None:
    code, text = get(f"{base}/metrics")
    assert code == 200
    for line in text.splitlines():
        if line.startswith("renewald_store_up "):
            return float(line.split()[1])
    return None


def test_a_running_daemon_rides_out_an_outage(
    renewald: Renewald, e2e_store: Store, outage: Outage
) -> None:
    systemd = FakeSystemd()
    try:
        renewald.extra_env.update(systemd.env(2_000_000))  # a ping a second
        renewald.write_config(extra='[http]\nlisten = "127.0.0.1:0"')
        proc = renewald.start()
        address = wait_for(
            lambda: next(
                (
                    json.loads(line)["address"]
                    for line in renewald.stderr(proc).splitlines()
                    if '"http.listening"' in line
                ),
                None,
            ),
            what="http.listening",
        )
        base = f"http://{address}"
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, what="healthz 200")
        assert store_up(base) == 1.0
        job_id = renewald.enqueue("c1", "during the outage", "--at", "+1h", "--target-kind", "log")

        sqlite = renewald.db_url.startswith("sqlite")
        outage.down(writes_only=True)
        if not sqlite:  # SQLite in WAL: reads, the gauges among them, still answer
            wait_for(lambda: store_up(base) == 0.0, what="renewald_store_up 0")
        wait_for(lambda: get(f"{base}/healthz")[0] == 503, what="healthz 503")
        outage.make_due(job_id)
        pings = systemd.count("WATCHDOG")
        # Duties fail and end, one retry budget at a time: the watchdog is still fed, for
        # longer than a poll may go without ending (3 * poll_interval + 5s + budget).
        wait_for(
            lambda: systemd.count("WATCHDOG") >= pings + 10,
            timeout=30,
            what="pings all through the outage",
        )
        code, text = get(f"{base}/healthz")
        assert code == 503 and ("database unavailable" in text or "no successful poll" in text)
        assert store_up(base) == (1.0 if sqlite else 0.0)
        assert proc.poll() is None

        outage.up()
        wait_for(lambda: job_of(e2e_store, job_id).status == "done", what="delivered after")
        wait_for(lambda: store_up(base) == 1.0, what="renewald_store_up 1 again")
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, what="healthz 200 again")
        code, err = renewald.stop(proc)
        assert code == 0, err[-3000:]
        assert "Traceback" not in err
        assert "watchdog_withheld" not in err
    finally:
        systemd.close()
