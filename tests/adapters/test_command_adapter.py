"""The command adapter with real subprocesses (small `python -c` scripts)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from renewald.adapters.base import OutcomeKind
from renewald.adapters.command import CommandAdapter
from renewald.errors import ConfigError
from renewald.redact import MASK
from tests.adapters.conftest import make_delivery

# How long to wait for a killed process to disappear; a condition polled, not a timing.
GONE_WITHIN = 10.0


def script(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def adapter(argv: list[str], **settings: Any) -> CommandAdapter:
    return CommandAdapter({"argv": argv, **settings})


def gone(pid: int) -> bool:
    """True once `pid` has exited. A zombie counts as gone: its parent is dead, and
    whoever inherits it (not always a reaping init in a container) may never reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_until_gone(pid: int) -> bool:
    stop = threading.Event()
    for _ in range(int(GONE_WITHIN / 0.02)):
        if gone(pid):
            return True
        stop.wait(0.02)
    return gone(pid)


@pytest.fixture
def leftover_pids() -> Iterator[list[int]]:
    """Pids a test started indirectly; killed at teardown should the adapter have failed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_exit_zero_is_delivered_with_payload_on_stdin_and_job_in_env(tmp_path):
    record = tmp_path / "record.json"
    code = """
        import json, os, sys
        names = [n for n in os.environ if n.startswith("RENEWALD_")] + ["EXTRA", "PATH"]
        with open(sys.argv[1], "w") as f:
            json.dump({"stdin": sys.stdin.read(), "env": {n: os.environ.get(n) for n in names}}, f)
    """
    command = adapter(script(code, str(record)), env={"EXTRA": "yes", "RENEWALD_JOB_ID": "nope"})
    delivery = make_delivery(
        job_id="job-7",
        attempt=3,
        attempt_id="att-9",
        payload="Bonjour, on continue ? ✓",
        target={"clientId": "ff", "n": 1},
    )

    outcome = command.deliver(delivery)

    assert outcome.kind is OutcomeKind.delivered
    assert outcome.summary == "exit 0"
    seen = json.loads(record.read_text())
    assert seen["stdin"] == "Bonjour, on continue ? ✓"
    env = seen["env"]
    assert env["RENEWALD_JOB_ID"] == "job-7"  # the job's own variables win over `env`
    assert env["RENEWALD_IDEMPOTENCY_KEY"] == "job-7"
    assert env["RENEWALD_ATTEMPT"] == "3"
    assert env["RENEWALD_ATTEMPT_ID"] == "att-9"
    assert env["RENEWALD_CONVERSATION"] == "conv-1"
    assert env["RENEWALD_PAYLOAD_KIND"] == "text"
    assert json.loads(env["RENEWALD_TARGET"]) == {"clientId": "ff", "n": 1}
    assert env["EXTRA"] == "yes"
    assert env["PATH"] == os.environ["PATH"]


def test_exit_75_is_retried_with_stderr_tail():
    code = "import sys; sys.stderr.write('bridge busy, try later\\n'); sys.exit(75)"

    outcome = adapter(script(code)).deliver(make_delivery())

    assert outcome.kind is OutcomeKind.retry
    assert outcome.reason == "exit 75: bridge busy, try later"
    assert outcome.error_class == "Exit75"


def test_other_exit_codes_are_permanent_and_stderr_is_redacted():
    code = """
        import sys
        sys.stderr.write("POST failed: Authorization: Bearer abcdef0123456789\\n")
        sys.stderr.write("url https://u:hunter2@x.example/?token=t0k3n\\n")
        sys.exit(1)
    """

    outcome = adapter(script(code)).deliver(make_delivery())

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason.startswith("exit 1: POST failed: Authorization: ")
    for secret in ("abcdef0123456789", "hunter2", "t0k3n"):
        assert secret not in outcome.reason
        assert secret not in outcome.summary
    assert MASK in outcome.reason


def test_exit_codes_table_overrides_the_defaults():
    command = adapter(
        script("import sys; sys.exit(int(sys.stdin.read()))"),
        exit_codes={"3": "retry", "75": "permanent", "0": "delivered"},
    )

    assert command.deliver(make_delivery(payload="3")).kind is OutcomeKind.retry
    assert command.deliver(make_delivery(payload="75")).kind is OutcomeKind.permanent
    assert command.deliver(make_delivery(payload="0")).kind is OutcomeKind.delivered


def test_stderr_tail_is_the_last_500_characters():
    code = "import sys; sys.stderr.write('x' * 5000 + 'THE END'); sys.exit(1)"

    outcome = adapter(script(code)).deliver(make_delivery())

    assert outcome.reason.endswith("xxxTHE END")
    assert len(outcome.reason) <= len("exit 1: …") + 500


def test_command_that_ignores_a_large_payload_is_fine():
    outcome = adapter(script("pass")).deliver(make_delivery(payload="y" * 2_000_000))

    assert outcome.kind is OutcomeKind.delivered


def test_timeout_kills_the_whole_process_group(tmp_path, leftover_pids):
    pid_file = tmp_path / "grandchild.pid"
    code = """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(sys.argv[1], "w") as f:
            f.write(str(grandchild.pid))
        sys.stderr.write("waiting for the browser\\n")
        sys.stderr.flush()
        time.sleep(60)
    """

    outcome = adapter(script(code, str(pid_file)), timeout="1s").deliver(make_delivery())

    assert pid_file.exists(), "the child did not start its grandchild before the timeout"
    grandchild = int(pid_file.read_text())
    leftover_pids.append(grandchild)
    assert outcome.kind is OutcomeKind.retry
    assert outcome.reason == "timed out after 1s: waiting for the browser"
    assert outcome.error_class == "CommandTimeout"
    assert wait_until_gone(grandchild), f"grandchild {grandchild} survived the timeout"


def test_command_killed_by_a_signal_is_retried():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"

    outcome = adapter(script(code)).deliver(make_delivery())

    assert outcome.kind is OutcomeKind.retry
    assert outcome.reason == "killed by SIGTERM"


def test_missing_executable_is_permanent():
    outcome = adapter(["/nonexistent/deliver-renewal", "--x"]).deliver(make_delivery())

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason.startswith("cannot run /nonexistent/deliver-renewal: ")
    assert outcome.error_class == "FileNotFoundError"


def test_file_that_is_not_executable_is_permanent(tmp_path):
    plain = tmp_path / "deliver.sh"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)

    outcome = adapter([str(plain)]).deliver(make_delivery())

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.error_class == "PermissionError"


def test_target_key_and_limits():
    command = adapter(["true"])

    assert command.target_key(make_delivery()) == "command:conv-1"
    assert command.max_in_flight_per_target == 1
    assert command.timeout == 30.0
    assert adapter(["true"], max_in_flight_per_target=3).max_in_flight_per_target == 3


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({}, "argv"),
        ({"argv": "deliver --now"}, "argv"),
        ({"argv": []}, "argv"),
        ({"argv": ["deliver", 3]}, "argv"),
        ({"argv": ["deliver"], "timeout": "forever"}, "timeout"),
        ({"argv": ["deliver"], "timeout": "0s"}, "timeout"),
        ({"argv": ["deliver"], "exit_codes": {"two": "retry"}}, "exit_codes"),
        ({"argv": ["deliver"], "exit_codes": {"2": "later"}}, "exit_codes"),
        ({"argv": ["deliver"], "env": {"A": ["x"]}}, "env"),
        ({"argv": ["deliver"], "max_in_flight_per_target": 0}, "max_in_flight"),
    ],
)
def test_bad_settings_are_config_errors(settings, match):
    with pytest.raises(ConfigError, match=match):
        CommandAdapter(settings)
