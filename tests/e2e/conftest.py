"""End-to-end fixtures: the real `renewald` executable, a temp config, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from renewald.store import Store, migrate

RENEWALD = str(Path(sys.executable).parent / "renewald")


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Renewald:
    """Runs the real renewald against one database, with a config written per test."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.dir = tmp_path
        self.db_url = db_url
        self.log_dir = tmp_path / "logs"
        self.config_path = tmp_path / "renewald.toml"
        self.procs: list[subprocess.Popen[str]] = []
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
