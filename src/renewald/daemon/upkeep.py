"""The daemon's housekeeping ticks: rescue, lost log lines, malformed rows, retention.

None of them delivers anything; each reads the clock once. Idle, they read: the registry
of dead daemons is pruned at most every `PRUNE_DAEMONS_EVERY_MS` (its rows are kept for
a day anyway), not at every rescue tick.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import SQLAlchemyError

from renewald.config import Config, Timings
from renewald.daemon.malformed import sweep as sweep_malformed
from renewald.daemon.parts import DaemonParts, Part
from renewald.daemon.recovery import recover_lost_lines
from renewald.daemon.rescuer import Rescuer

_log = structlog.get_logger("renewald.daemon")

DEAD_DAEMON_ROW_KEPT_MS = 24 * 3600 * 1000
PRUNE_DAEMONS_EVERY_MS = 10 * 60 * 1000


class Upkeep(Part):
    """The rescue and retention ticks of one daemon (`owner`)."""

    def __init__(self, parts: DaemonParts, *, config: Config, rescuer: Rescuer) -> None:
        super().__init__(parts)
        self.config = config
        self.rescuer = rescuer
        self.stale_after_ms = Timings.of(config).stale_after_ms
        self._pruned_at: int | None = None

    def rescue_tick(self) -> None:
        now = self.clock.now_ms()
        self.rescuer.run_once(now)
        self.recover_lines(now)
        self.sweep(now)
        # A killed daemon's registry row stays for a day (health and stats show it), then goes.
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_DAEMONS_EVERY_MS:
            self.store.prune_daemons(stale_before=now - DEAD_DAEMON_ROW_KEPT_MS)
            self._pruned_at = now

    def sweep(self, now: int) -> None:
        """End pending jobs no claim can select failed/malformed (daemon/malformed.py)."""
        try:
            ended = sweep_malformed(
                store=self.store, job_log=self.job_log, owner=self.owner, now=now
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:  # rows' data never stops the rescue duty
            _log.error("sweep.failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return
        for _ in range(ended):
            self.summary.count("failed", "malformed")

    def recover_lines(self, now: int) -> int:
        """Write the job-log lines that dead daemons on this host committed but lost."""
        return recover_lost_lines(
            store=self.store,
            job_log=self.job_log,
            owner=self.owner,
            stale_before=now - self.stale_after_ms,
        )

    def retention_tick(self) -> None:
        """Prune finished jobs past `[retention] older_than` (off unless configured)."""
        older_than = self.config.retention.older_than
        if older_than is None:
            return
        now = self.clock.now_ms()
        jobs, attempts = self.store.prune_finished(
            before=now - round(older_than * 1000), batch=self.config.retention.batch
        )
        if jobs or attempts:
            _log.info(
                "retention.pruned", jobs=jobs, attempts=attempts, older_than=f"{older_than:g}s"
            )
