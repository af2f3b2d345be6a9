"""`run --once` on a real terminal: tmux runs the real renewald in a 120x40 pane and the
screen is read back with `capture-pane`. The progress bar keeps a line of its own and
every console line (human format) starts a line of its own, never glued to the bar."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from renewald.store import Store
from tests.e2e.conftest import RENEWALD, Renewald
from tests.waiting import wait_for

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[(\w+)\s*\] (\S+)")
BAR_LINE = re.compile(r"^delivering ━+ (\d+)/(\d+) \d+:\d\d:\d\d$")


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing (CI is set: the terminal test must run)")
        pytest.skip("tmux is not installed")
    # A server of our own: the session gets this environment, not another server's.
    command = ["tmux", "-L", f"renewald-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, timeout=10)


def screen(tmux: list[str]) -> list[str]:
    out = subprocess.run(
        [*tmux, "capture-pane", "-p", "-S", "-", "-t", "run"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return [line.rstrip() for line in out.stdout.splitlines()]


def test_run_once_bar_and_log_lines_on_lines_of_their_own(
    renewald: Renewald, e2e_store: Store, tmux: list[str]
) -> None:
    for n in range(12):
        renewald.enqueue(f"c{n}", "hello", "--target-kind", "log")
    renewald.enqueue("no-target", "hello")  # fails permanently: a warning line
    env = {**renewald.env, "RENEWALD_LOGGING_CONSOLE": "human", "TERM": "xterm-256color"}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.isidentifier())
    script = renewald.dir / "run.sh"
    script.write_text(
        f"cd {shlex.quote(str(renewald.dir))}\n"
        f"env -i {exports} {shlex.quote(RENEWALD)} run --once\n"
        'echo "EXIT=$?"\n'
        "sleep 600\n"
    )
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "run", "-x", "120", "-y", "40", f"sh {script}"],
        check=True,
        timeout=10,
        env=env,
    )
    lines = wait_for(
        lambda: (s := screen(tmux)) and any(x.startswith("EXIT=") for x in s) and s,
        timeout=60,
        what="run --once finished in the tmux pane",
    )
    text = "\n".join(lines)
    assert "EXIT=1" in lines, text  # a job failed
    bars = [x for x in lines if "━" in x]
    assert len(bars) == 1, text
    match = BAR_LINE.match(bars[0])
    assert match and match.group(1) == match.group(2) == "13", text
    events = [(m.group(1), m.group(2)) for x in lines if (m := LOG_LINE.match(x))]
    finished = [level for level, event in events if event == "attempt.finished"]
    assert sorted(finished) == ["info"] * 12 + ["warning"], text
    assert [e for _, e in events].count("attempt.started") == 12, text
    assert events[-1][1] == "daemon.stopped", text
    # No log event is glued to anything: each one's name appears only where a line begins.
    for name in ("attempt.finished", "attempt.started", "daemon.stopped", "daemon.started"):
        assert text.count(f"] {name} ") == sum(1 for _, e in events if e == name), text
    bar_at = lines.index(bars[0])
    assert lines[bar_at + 1].startswith("renewald: delivered 12, rescheduled 0, failed 1"), text


def test_no_bar_without_a_terminal(renewald: Renewald, e2e_store: Store) -> None:
    renewald.enqueue("c", "hello", "--target-kind", "log")
    out = renewald.run("run", "--once")
    assert out.returncode == 0, out.stderr
    assert "━" not in out.stderr and "delivering" not in out.stderr
    assert out.stdout == "renewald: delivered 1, rescheduled 0, failed 0, skipped 0\n"
