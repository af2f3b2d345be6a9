"""The systemd units under a real systemd: a Debian container booted with systemd-nspawn.

One container per module (tests/deploy/nspawn.py): the units from systemd/ installed as
docs/production.md says, PostgreSQL through a proxy the tests can hang or take down, the
database URL (with a password) as a systemd credential, and the `command` adapter running
a small script that can be slow or ask for a retry. Jobs are enqueued and read from the
host with this checkout's `renewald`.

Skips only where the machine cannot boot a container (not Linux, not root, tools
missing); under CI (env `CI` set) that is a failure instead.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.deploy import nspawn
from tests.waiting import wait_for as _wait_for

# Each check runs systemctl: poll five times a second, not fifty.
wait_for = functools.partial(_wait_for, interval=0.2)

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
RENEWALD = str(Path(sys.executable).parent / "renewald")
PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"

CONFIG = """\
[daemon]
poll_interval = "200ms"

[retry]
# A retried job stays out of the way of the next test.
base = "1h"

[adapters.command]
argv = ["/usr/local/bin/deliver-test"]
timeout = "60s"
"""

# Payload "slow:N" sleeps N seconds, "retry" asks for a retry (75); every run records its
# environment, which must not hold a secret.
DELIVER = """\
#!/bin/sh
payload=$(cat)
env > "/var/lib/renewald/env-$RENEWALD_JOB_ID"
case "$payload" in
  slow:*) sleep "${payload#slow:}" ;;
  retry) exit 75 ;;
esac
exit 0
"""


class Deployment:
    """The booted container, the database proxy, and the host-side CLI on the database."""

    def __init__(
        self, box: nspawn.Container, proxy: nspawn.DbProxy, host_url: str, cwd: Path
    ) -> None:
        self.box = box
        self.proxy = proxy
        self.host_url = host_url
        self._cwd = cwd  # no ./config.toml here: the host CLI reads only --db

    def cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RENEWALD_")}
        result = subprocess.run(
            [RENEWALD, "--db", self.host_url, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self._cwd,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, f"renewald {' '.join(args)}: {result.stderr}"
        return result.stdout

    def enqueue(self, payload: str) -> str:
        out = self.cli(
            "enqueue",
            f"--conversation=c-{uuid.uuid4().hex[:8]}",
            f"--payload={payload}",
            "--target-kind=command",
            "--json",
        )
        return str(json.loads(out)["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("show", job_id, "--json")))

    def unit(self, name: str, *props: str) -> dict[str, str]:
        return self.box.show(name, *props)

    def diagnose(self, name: str) -> str:
        status = self.box.systemctl("status", name, check=False).stdout
        return f"{status}\n--- journal ---\n{self.box.journal(name)[-6000:]}"

    def reset(self, *names: str) -> None:
        """Units stopped and forgotten, the database reachable: each test starts clean."""
        self.proxy.up()
        for name in names:
            self.box.systemctl("stop", name, check=False)
            self.box.systemctl("reset-failed", name, check=False)


@pytest.fixture(scope="module")
def host_database() -> Iterator[str]:
    """A database of this module's own on the host's PostgreSQL; dropped afterwards."""
    admin = make_url(PG_URL)
    name = f"renewald_sd_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def deployment(host_database: str) -> Iterator[Deployment]:
    reason = nspawn.cannot_run_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"cannot boot a container under CI: {reason}")
        pytest.skip(f"cannot boot a container here: {reason}")
    admin = make_url(PG_URL)
    host_url = admin.set(database=host_database).render_as_string(hide_password=False)
    # Inside: the same server through the proxy's socket, with a password trust auth ignores
    # (it is there to be kept secret, not to be checked).
    inside_url = (
        f"postgresql+psycopg://{admin.username or 'postgres'}:{PASSWORD}@/{host_database}"
        f"?host={nspawn.DB_SOCKET_DIR}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="renewald-nspawn-", dir="/var/tmp"))
    sockets = scratch / "db"
    sockets.mkdir(mode=0o755)
    proxy = nspawn.DbProxy(sockets, (admin.host or "127.0.0.1", admin.port or 5432))
    try:
        with nspawn.session_rootfs(scratch / "fs") as root:
            _install(root, inside_url)
            box = nspawn.Container(
                root, binds={sockets: nspawn.DB_SOCKET_DIR}, console=scratch / "console.log"
            )
            try:
                state = box.wait_booted()
                assert state in ("running", "degraded"), (
                    f"container boot: {state}\n{box.systemctl('--failed', check=False).stdout}"
                    f"\n{(scratch / 'console.log').read_text()[-3000:]}"
                )
                yield Deployment(box, proxy, host_url, sockets)
            finally:
                box.stop()
    finally:
        proxy.close()
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def _install(root: Path, db_url: str) -> None:
    """docs/production.md's install steps, with the units from this checkout."""

    def put(path: str, text: str, mode: int = 0o644) -> None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    for unit in ("renewald.service", "renewald-once.service", "renewald-once.timer"):
        put(f"/etc/systemd/system/{unit}", (ROOT / "systemd" / unit).read_text())
    put("/usr/share/doc/renewald/production.md", (ROOT / "docs/production.md").read_text())
    put("/etc/renewald/config.toml", CONFIG)
    (root / "etc/credstore").mkdir(mode=0o700, exist_ok=True)
    put("/etc/credstore/RENEWALD_DB", db_url + "\n", 0o600)
    put("/usr/local/bin/deliver-test", DELIVER, 0o755)


def test_start_returns_at_ready_with_limits_credentials_and_docs(deployment: Deployment) -> None:
    d = deployment
    d.reset("renewald.service")
    began = time.monotonic()
    d.box.systemctl("start", "renewald.service")
    took = time.monotonic() - began

    # Type=notify: `start` returned only after READY=1, so the daemon is up, not starting.
    props = d.unit(
        "renewald.service",
        "ActiveState",
        "SubState",
        "StatusText",
        "MainPID",
        "MemoryMax",
        "TasksMax",
        "LimitCORE",
        "Documentation",
        "WatchdogUSec",
    )
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), d.diagnose(
        "renewald.service"
    )
    assert props["StatusText"], "STATUS= was never sent"
    assert int(props["MainPID"]) > 0
    assert props["WatchdogUSec"] == "30s"
    assert (props["MemoryMax"], props["TasksMax"], props["LimitCORE"]) == (
        str(512 * 1024 * 1024),
        "256",
        "0",
    )
    # The credential won over the unit's Environment=RENEWALD_DB=sqlite:… default: the
    # daemon registered in PostgreSQL (the host reads it there).
    stats = d.cli("stats")
    assert f":{props['MainPID']}:" in stats, stats
    # Documentation= names a file the install steps created.
    doc = props["Documentation"].removeprefix("file://").split()[0]
    assert (d.box.rootfs / doc.lstrip("/")).is_file(), props["Documentation"]
    print(f"systemctl start renewald: {took:.1f}s")


def test_stop_drains_an_in_flight_delivery_and_no_secret_reaches_the_command(
    deployment: Deployment,
) -> None:
    d = deployment
    d.reset("renewald.service")
    d.box.systemctl("start", "renewald.service")
    job_id = d.enqueue("slow:8")
    # The command writes its environment first thing: from then on the delivery is in flight.
    started = f"test -e /var/lib/renewald/env-{job_id}"
    wait_for(
        lambda: d.box.sh(started, check=False).returncode == 0,
        timeout=20,
        what="the delivery to start",
    )

    began = time.monotonic()
    d.box.systemctl("stop", "renewald.service")
    took = time.monotonic() - began

    job = d.job(job_id)
    assert job["status"] == "done", job
    assert [a["outcome"] for a in job["attempts"]] == ["delivered"], job["attempts"]
    props = d.unit("renewald.service", "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, (
        d.diagnose("renewald.service")
    )
    # It waited for the delivery (8s) and no longer: well inside TimeoutStopSec=40s.
    assert 5 <= took < 30, f"stop took {took:.1f}s"
    print(f"systemctl stop with one delivery in flight: {took:.1f}s")

    env = d.box.sh(f"cat /var/lib/renewald/env-{job_id}").stdout
    assert f"RENEWALD_JOB_ID={job_id}" in env
    for secret in (PASSWORD, "CREDENTIALS_DIRECTORY=", "RENEWALD_DB="):
        assert secret not in env, f"{secret!r} reached the command's environment"


def test_watchdog_restarts_a_daemon_whose_database_hangs(deployment: Deployment) -> None:
    d = deployment
    d.reset("renewald.service")
    d.box.systemctl("start", "renewald.service")
    before = d.unit("renewald.service", "MainPID", "NRestarts")
    since = d.box.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()

    d.proxy.hang()
    began = time.monotonic()
    try:
        wait_for(
            lambda: (
                int(d.unit("renewald.service", "NRestarts")["NRestarts"]) > int(before["NRestarts"])
            ),
            timeout=90,
            what="systemd to restart the hung daemon",
        )
        fired = time.monotonic() - began
    finally:
        d.proxy.up()

    wait_for(
        lambda: d.unit("renewald.service", "SubState")["SubState"] == "running",
        timeout=120,
        what="the restarted daemon to be ready",
    )
    after = d.unit("renewald.service", "MainPID", "ActiveState")
    assert after["ActiveState"] == "active"
    assert after["MainPID"] != before["MainPID"]
    journal = d.box.journal("renewald.service", since=since)
    assert "Watchdog timeout" in journal, journal[-4000:]
    # PYTHONFAULTHANDLER=1: the SIGABRT printed where every thread was stuck.
    assert "Thread 0x" in journal or "Current thread" in journal, journal[-4000:]
    assert 25 <= fired <= 80, f"watchdog restart after {fired:.1f}s (WatchdogSec=30s)"
    print(f"watchdog restart {fired:.1f}s after the database hung")


def test_timer_runs_the_one_shot_and_exit_75_counts_as_success(deployment: Deployment) -> None:
    d = deployment
    d.reset("renewald.service", "renewald-once.timer", "renewald-once.service")
    job_id = d.enqueue("retry")
    # The shipped timer fires every 5 minutes; a drop-in (as an operator would write it)
    # makes it fire a second after it starts, everything else as shipped.
    d.box.write(
        "/etc/systemd/system/renewald-once.timer.d/soon.conf",
        "[Timer]\nOnCalendar=\nOnActiveSec=1s\nAccuracySec=1s\n",
    )
    d.box.systemctl("daemon-reload")
    try:
        d.box.systemctl("start", "renewald-once.timer")

        def finished() -> dict[str, str] | None:
            props = d.unit(
                "renewald-once.service",
                "ActiveState",
                "Result",
                "ExecMainStatus",
                "ExecMainExitTimestampMonotonic",
            )
            done = props["ExecMainExitTimestampMonotonic"] not in ("", "0")
            return props if done and props["ActiveState"] != "activating" else None

        props = wait_for(finished, timeout=90, what="the timer's one-shot run to finish")
        assert props["ExecMainStatus"] == "75", d.diagnose("renewald-once.service")
        assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), d.diagnose(
            "renewald-once.service"
        )
        failed = d.box.systemctl("--failed", "--plain", "--no-legend", check=False).stdout
        assert "renewald" not in failed, failed
        job = d.job(job_id)
        assert (job["status"], job["attempt_count"]) == ("pending", 1), job
        assert [a["outcome"] for a in job["attempts"]] == ["retry"], job["attempts"]
        trigger = d.unit("renewald-once.timer", "LastTriggerUSec")["LastTriggerUSec"]
        assert trigger not in ("", "n/a", "0"), trigger
    finally:
        d.box.systemctl("stop", "renewald-once.timer", check=False)
        (d.box.rootfs / "etc/systemd/system/renewald-once.timer.d/soon.conf").unlink()
        d.box.systemctl("daemon-reload")


def test_a_database_outage_at_boot_recovers_without_a_person(deployment: Deployment) -> None:
    d = deployment
    d.reset("renewald.service")
    d.proxy.down()
    try:
        d.box.systemctl("start", "--no-block", "renewald.service")
        time.sleep(45)
    finally:
        d.proxy.up()
    # Nobody types `systemctl reset-failed` or `start`: the unit gets there on its own.
    up = {"ActiveState": "active", "SubState": "running"}
    deadline = time.monotonic() + 120
    while (props := d.unit("renewald.service", "ActiveState", "SubState", "Result")) != {
        **up,
        "Result": "success",
    }:
        # "failed" means no restart is pending (one would show "activating"): the unit
        # gave up (a start limit, an exit it will not restart on) until a person steps in.
        gave_up = props["ActiveState"] == "failed"
        if gave_up or time.monotonic() > deadline:
            pytest.fail(
                f"renewald is not up 150s after the outage\n{d.diagnose('renewald.service')}"
            )
        time.sleep(0.5)
    job_id = d.enqueue("ok")
    wait_for(lambda: d.job(job_id)["status"] == "done", timeout=30, what="a delivery")
