"""Three daemons through a real PgBouncer in transaction pooling deliver every job once.

Each test gets a database of its own (PgBouncer does not pass the `options` startup
parameter the other PostgreSQL tests select their schema with) and its own pgbouncer on a
free port, `auth_type = trust`, `pool_mode = transaction`, and `?pooler=pgbouncer` in the
URL renewald is given: no prepared statements, no LISTEN, polling only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from renewald.store import Store, migrate
from tests.conftest import PG_URL, require_pg
from tests.e2e.conftest import Renewald
from tests.e2e.test_daemon import (
    add_conversations,
    add_jobs,
    assert_delivered_exactly_once,
    jobs_by_id,
)
from tests.waiting import wait_for

JOBS = 10_000
CONVERSATIONS = 2_000


def _pgbouncer() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        reason = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the PgBouncer test must run)")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_database() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards: its name."""
    require_pg()
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def bouncer_url(own_database: str) -> Iterator[str]:
    """A running pgbouncer (transaction pooling) in front of `own_database`: the URL
    renewald is given, `?pooler=pgbouncer` included."""
    binary = _pgbouncer()
    server = make_url(PG_URL)
    user = server.username or "postgres"
    port = _free_port()
    # pgbouncer refuses to run as root; as root it is started with `-u` as another user,
    # who must be able to read its files (pytest's tmp_path is private to root).
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres" if _user_exists("postgres") else "nobody"
    work = Path(tempfile.mkdtemp(prefix="renewald-pgbouncer-"))
    work.chmod(0o755)
    (work / "users.txt").write_text(f'"{user}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{own_database} = host={server.host or '127.0.0.1'} port={server.port or 5432}"
        f" dbname={own_database} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 8\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in work.iterdir():
        path.chmod(0o644)
    log = open(work / "pgbouncer.log", "w")  # noqa: SIM115
    cmd = [binary, *(["-u", run_as] if run_as else []), str(work / "pgbouncer.ini")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"postgresql+psycopg://{user}@127.0.0.1:{port}/{own_database}?pooler=pgbouncer"
    try:
        wait_for(lambda: _answers(url, proc), timeout=20, what="pgbouncer accepting connections")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        print((work / "pgbouncer.log").read_text()[-3000:])
        shutil.rmtree(work, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _answers(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"pgbouncer exited {proc.returncode}")
    try:
        Store.open(url, retry_for=0).close()
    except Exception:
        return False
    return True


def test_three_daemons_through_pgbouncer_deliver_exactly_once(
    bouncer_url: str, tmp_path: Path
) -> None:
    store = Store.open(bouncer_url, create=True)
    try:
        migrate(store.engine)
        add_conversations(store, {f"c{i}": "auto" for i in range(CONVERSATIONS)})
        specs = [(f"j{i:05d}", f"c{i % CONVERSATIONS}") for i in range(JOBS)]
        for start in range(0, JOBS, 2_000):
            add_jobs(store, specs[start : start + 2_000])
        renewald = Renewald(tmp_path, bouncer_url)
        renewald.write_config(workers=4, batch=32)
        procs = [renewald.start() for _ in range(3)]
        try:
            _wait_delivered(store, renewald, procs)
            for proc in procs:
                code, err = renewald.stop(proc)
                assert code == 0, err
                assert "prepared statement" not in err
        finally:
            renewald.cleanup()
        assert_delivered_exactly_once(store, {j for j, _ in specs}, daemons=3)
    finally:
        store.close()


def _wait_delivered(store: Store, renewald: Renewald, procs: list[subprocess.Popen[str]]) -> None:
    def done() -> bool:
        for proc in procs:
            assert proc.poll() is None, renewald.stderr(proc)[-3000:]
        return sum(j["status"] == "done" for j in jobs_by_id(store).values()) == JOBS

    try:
        wait_for(done, timeout=300, interval=0.5, what=f"{JOBS} jobs delivered through pgbouncer")
    except BaseException:
        for proc in procs:
            print(renewald.stderr(proc)[-3000:])
        raise
