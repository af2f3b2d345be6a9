"""Every duration derived from `[daemon] lease` and `heartbeat`, computed in one place.

The lease is the unit: a running job's lease is extended every `heartbeat` (a third of the
lease unless set), so two heartbeats can be missed before it runs out; a daemon whose
registry heartbeat is three intervals old is taken for dead; a half-open target's single
probe holds it for one lease. Rescue reads the same two: a gap of more than one heartbeat
between its passes marks an outage, after which it waits the stale threshold (`settle`)
so that every live daemon has heartbeated again before their rows are judged.

The poll: every `poll_interval` while no change watcher is up (PgBouncer, a watcher
reconnecting); while one is up, new work wakes the daemon and the poll is a safety net
every `WATCHED_POLLS` intervals (`watched_poll`). The schedule tick runs every
`poll_interval` but at most every second (`schedule_tick`) unless a watcher that sees
schedule writes is up; then it sleeps until the next fire time, at most `watched_poll`.

`/healthz` and the watchdog call the poll loop alive while a poll succeeded within the
longest gap between polls, three poll intervals and five seconds (`healthy_within`): an
idle daemon with a watcher is not unhealthy, and a stuck poll is noticed in 13 s by
default (8 s before the poll became a safety net).
"""

from __future__ import annotations

from dataclasses import dataclass

from renewald.config.sections import Config, DaemonConfig

STALE_HEARTBEATS = 3
HEALTHY_POLLS = 3
WATCHED_POLLS = 5
HEALTHY_SLACK = 5.0


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(frozen=True)
class Timings:
    """Milliseconds, derived once from the configuration (`Timings.of`)."""

    lease_ms: int
    heartbeat_ms: int
    """How often held leases are extended and the registry row is refreshed."""
    stale_after_ms: int
    """A registry row whose heartbeat is older than this belongs to a dead daemon."""
    probe_ms: int
    """How long the one probe of a half-open target holds it."""
    gap_ms: int
    """A longer gap between rescue passes marks an outage."""
    settle_ms: int
    """How long rescue waits after an outage before judging other daemons' rows."""
    poll_ms: int
    """The longest time between two polls while no change watcher is up."""
    watched_poll_ms: int
    """The longest time between two polls while a change watcher is up (a safety net)."""
    schedule_tick_ms: int
    """How often the schedule tick runs when nothing says when schedules change."""
    healthy_within_ms: int
    """A poll loop whose last success is older than this is unhealthy (`/healthz`)."""

    @classmethod
    def of(cls, config: Config | DaemonConfig) -> Timings:
        daemon = config.daemon if isinstance(config, Config) else config
        heartbeat_ms = _ms(daemon.heartbeat_interval)
        stale_after_ms = _ms(STALE_HEARTBEATS * daemon.heartbeat_interval)
        watched_poll = WATCHED_POLLS * daemon.poll_interval
        return cls(
            lease_ms=_ms(daemon.lease),
            heartbeat_ms=heartbeat_ms,
            stale_after_ms=stale_after_ms,
            probe_ms=_ms(daemon.lease),
            gap_ms=heartbeat_ms,
            settle_ms=stale_after_ms,
            poll_ms=_ms(daemon.poll_interval),
            watched_poll_ms=_ms(watched_poll),
            schedule_tick_ms=_ms(min(daemon.poll_interval, 1.0)),
            healthy_within_ms=_ms(
                watched_poll + HEALTHY_POLLS * daemon.poll_interval + HEALTHY_SLACK
            ),
        )
