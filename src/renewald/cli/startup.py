"""Waiting for the database at start (DESIGN §6): a database that is down is not bad input.

`migrate` and `run` (ExecStartPre and ExecStart of the unit) try to open the database
with a short budget per attempt, and keep trying with backoff for `[database]
startup_wait`. While they wait they tell systemd `EXTEND_TIMEOUT_USEC`, so a boot where
PostgreSQL comes up late does not run into `TimeoutStartSec`; when the wait is over they
raise `DatabaseUnavailable` (exit 69), which the unit restarts after `RestartSec`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from renewald.daemon.sdnotify import Notifier
from renewald.errors import DatabaseUnavailable

_log = structlog.get_logger("renewald.startup")

T = TypeVar("T")

# Each attempt gives up this soon, so a wait of a few seconds is still honoured.
ATTEMPT_BUDGET = 3.0
MIN_ATTEMPT = 0.1
FIRST_PAUSE = 0.25
MAX_PAUSE = 5.0
# What systemd is asked for beyond the rest of the wait: the migration or the schema check
# that follows a successful attempt.
EXTEND_MARGIN = 30.0


def wait_for_database(
    attempt: Callable[[float], T],
    *,
    wait: float,
    notifier: Notifier,
    what: str,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`attempt(budget)` until it stops raising `DatabaseUnavailable`, for up to `wait`
    seconds; then the last `DatabaseUnavailable`, saying how long was waited. Any other
    error (a bad URL, a schema too new) is raised at once: waiting cannot fix it."""
    started = monotonic()
    pause = FIRST_PAUSE
    tries = 0
    while True:
        tries += 1
        remaining = wait - (monotonic() - started)
        try:
            result = attempt(max(MIN_ATTEMPT, min(ATTEMPT_BUDGET, remaining)))
        except DatabaseUnavailable as exc:
            waited = monotonic() - started
            remaining = wait - waited
            if remaining < MIN_ATTEMPT:
                if tries == 1 and wait <= 0:
                    raise
                raise DatabaseUnavailable(
                    f"{exc} (still, after waiting {waited:.0f}s: [database] startup_wait "
                    f"= {wait:g}s)"
                ) from None
            pause = min(pause, remaining)
            _log.warning(
                "database.waiting",
                command=what,
                error=str(exc),
                waited=f"{waited:.1f}s",
                retry_in=f"{pause:.2f}s",
                gives_up_in=f"{remaining:.0f}s",
            )
            notifier.notify(
                EXTEND_TIMEOUT_USEC=round((remaining + EXTEND_MARGIN) * 1_000_000),
                STATUS=f"{what}: waiting for the database ({remaining:.0f}s left): {exc}",
            )
            sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
            continue
        if tries > 1:
            _log.info("database.available", command=what, waited=f"{monotonic() - started:.1f}s")
        return result
