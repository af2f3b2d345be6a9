"""`renewald stats` as text: the summary lines, the daemons table, the paused targets."""

from __future__ import annotations

from renewald.cli.ops import _stats_text
from renewald.store.daemons import DaemonRow
from renewald.store.models import TargetPause
from renewald.store.stats import Stats

NOW = 1_800_000_000_000
STALE_MS = 30_000


def stats(daemons: list[DaemonRow], paused: list[TargetPause]) -> Stats:
    return Stats(
        now=NOW,
        by_status={"pending": 2, "running": 1},
        due=2,
        oldest_due_at=NOW - 60_000,
        overdue=1,
        held=0,
        unscheduled=0,
        running=1,
        oldest_running_started_at=None,
        expired_leases=0,
        failures_since=NOW - 3_600_000,
        failures={},
        daemons=daemons,
        paused_targets=paused,
    )


def daemon(owner: str, heartbeat_at: int) -> DaemonRow:
    return DaemonRow(owner, "host-a", 42, "1.0", NOW - 100_000, heartbeat_at, "running")


def text(s: Stats) -> list[str]:
    return _stats_text(s, NOW, stale_ms=STALE_MS, since="1h", overdue="5m").splitlines()


def test_no_daemons_and_no_paused_targets() -> None:
    lines = text(stats([], []))
    assert lines[1] == "due now    2 (oldest due for 1m); overdue (due for over 5m) 1"
    assert lines[-3:] == ["", "no daemons registered", "no paused targets"]


def test_daemons_alive_and_stale_and_a_paused_target() -> None:
    pause = TargetPause("http:example", "http.webhook", 5, NOW + 60_000, NOW, "HTTP 503", NOW)
    lines = text(stats([daemon("d-1", NOW - 1_000), daemon("d-2", NOW - STALE_MS - 1)], [pause]))
    assert "no daemons registered" not in lines
    head = next(i for i, line in enumerate(lines) if line.startswith("DAEMON"))
    assert lines[head].split() == [
        "DAEMON",
        "HOST",
        "PID",
        "VERSION",
        "HEARTBEAT",
        "STATE",
        "STATUS",
    ]
    assert lines[head + 1].split()[0] == "d-1" and "alive" in lines[head + 1].split()
    assert lines[head + 2].split()[0] == "d-2" and "stale" in lines[head + 2].split()
    assert lines[head + 3] == ""
    assert lines[head + 4].startswith("PAUSED TARGET")
    assert lines[head + 5].split()[:2] == ["http:example", "http.webhook"]
    assert "HTTP 503" in lines[head + 5]
