"""`Timings`: the durations derived from `[daemon] lease` and `heartbeat`, in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from renewald.config import Config, DaemonConfig, Timings, load_config


def test_defaults_follow_the_lease() -> None:
    t = Timings.of(Config())
    assert t == Timings(
        lease_ms=60_000,
        heartbeat_ms=20_000,  # a third of the lease
        stale_after_ms=60_000,  # three heartbeats
        probe_ms=60_000,  # one lease
        gap_ms=20_000,
        settle_ms=60_000,
        poll_ms=1_000,
        watched_poll_ms=5_000,  # five polls: a safety net while a change watcher is up
        schedule_tick_ms=1_000,
        healthy_within_ms=13_000,  # the longest gap, three polls and five seconds
    )


def test_an_explicit_heartbeat_wins_over_a_third_of_the_lease() -> None:
    t = Timings.of(DaemonConfig(lease=30.0, heartbeat=4.0))
    assert (t.lease_ms, t.heartbeat_ms, t.stale_after_ms) == (30_000, 4_000, 12_000)
    assert (t.probe_ms, t.gap_ms, t.settle_ms) == (30_000, 4_000, 12_000)


@pytest.mark.parametrize(
    ("lease", "heartbeat_ms", "stale_ms"),
    [("1s", 333, 1_000), ("100ms", 33, 100), ("10s", 3_333, 10_000)],
)
def test_odd_leases_round_to_milliseconds(
    lease: str, heartbeat_ms: int, stale_ms: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    config = load_config(env={"RENEWALD_DAEMON_LEASE": lease})
    t = Timings.of(config)
    assert (t.heartbeat_ms, t.stale_after_ms) == (heartbeat_ms, stale_ms)


def test_a_config_and_its_daemon_section_agree() -> None:
    config = Config(daemon=DaemonConfig(lease=90.0))
    assert Timings.of(config) == Timings.of(config.daemon)


def test_the_schedule_tick_runs_at_most_every_second_without_a_watcher() -> None:
    t = Timings.of(DaemonConfig(poll_interval=0.1))
    assert (t.poll_ms, t.watched_poll_ms, t.schedule_tick_ms) == (100, 500, 100)
    assert t.healthy_within_ms == 5_800
    assert Timings.of(DaemonConfig(poll_interval=5.0)).schedule_tick_ms == 1_000
