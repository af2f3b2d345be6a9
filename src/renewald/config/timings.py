"""Every duration derived from `[daemon] lease` and `heartbeat`, computed in one place.

The lease is the unit: a running job's lease is extended every `heartbeat` (a third of the
lease unless set), so two heartbeats can be missed before it runs out; a daemon whose
registry heartbeat is three intervals old is taken for dead; a half-open target's single
probe holds it for one lease. Rescue reads the same two: a gap of more than one heartbeat
between its passes marks an outage, after which it waits the stale threshold (`settle`)
so that every live daemon has heartbeated again before their rows are judged.

`/healthz` and the watchdog call the poll loop alive while a poll succeeded within three
poll intervals plus five seconds (`healthy_within`).
"""

from __future__ import annotations

from dataclasses import dataclass

from renewald.config.sections import Config, DaemonConfig

STALE_HEARTBEATS = 3
HEALTHY_POLLS = 3
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
    """The longest time between two polls."""
    healthy_within_ms: int
    """A poll loop whose last success is older than this is unhealthy (`/healthz`)."""

    @classmethod
    def of(cls, config: Config | DaemonConfig) -> Timings:
        daemon = config.daemon if isinstance(config, Config) else config
        heartbeat_ms = _ms(daemon.heartbeat_interval)
        stale_after_ms = _ms(STALE_HEARTBEATS * daemon.heartbeat_interval)
        return cls(
            lease_ms=_ms(daemon.lease),
            heartbeat_ms=heartbeat_ms,
            stale_after_ms=stale_after_ms,
            probe_ms=_ms(daemon.lease),
            gap_ms=heartbeat_ms,
            settle_ms=stale_after_ms,
            poll_ms=_ms(daemon.poll_interval),
            healthy_within_ms=_ms(HEALTHY_POLLS * daemon.poll_interval + HEALTHY_SLACK),
        )
