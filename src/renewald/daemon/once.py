"""`renewald run --once`: deliver everything due now, then what gone owners gave back.

Retries due later are not waited for. Jobs a gone owner (a killed run, a daemon stopped
past its grace) still holds come back when their leases expire, if that is soon enough.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from renewald.clock import iso_utc
from renewald.daemon.owner import looks_gone
from renewald.store.engine import describe, is_transient

if TYPE_CHECKING:
    from renewald.daemon.service import Service

_log = structlog.get_logger("renewald.daemon")


def run_once(service: Service) -> None:
    """Rescue as the daemon's rescue tick would (a killed one-shot's jobs come back), fire
    due schedules, drain; then wait for what gone owners hold, up to two leases."""
    service.guarded(service.upkeep.rescue_tick)()
    service.guarded(service.schedule_tick)()
    drain(service)
    deadline = service.clock.now_ms() + 2 * service.dispatcher.settings.lease_ms
    while await_departed(service, deadline):
        drain(service)


def drain(service: Service) -> None:
    """Deliver everything due now; retries due later are not waited for."""
    dispatcher = service.dispatcher
    stop = service.stopped
    waited_until = time.monotonic() + service.config.database.startup_wait
    service.upkeep.sweep(service.clock.now_ms())
    while not stop.is_set() and dispatcher.fatal is None:
        held_before = dispatcher.holding()
        try:
            result = dispatcher.poll_once(service.clock.now_ms())
        except SQLAlchemyError as exc:
            # A busy or briefly unreachable database is waited out, as at start-up.
            if not is_transient(exc) or time.monotonic() > waited_until:
                raise
            service.throttle.warn(
                "poll.failed", _log, "poll.failed", error=describe(exc), retry_in="0.2s"
            )
            stop.wait(0.2)
            continue
        service.mark_polled()
        if result.claimed == 0 and held_before == 0:
            break  # nothing due is left that our own running jobs could be holding back
        if result.more_waiting or result.claimed == 0:
            dispatcher.wait_for_capacity(0.2)
            if result.claimed == 0:
                dispatcher.wait_idle(0.2)
        if dispatcher.exhausted():
            dispatcher.wait_idle(None)
            break


def await_departed(service: Service, deadline: int) -> bool:
    """Jobs that a gone owner still holds come back when their leases expire. Wait for
    the first of those before `deadline`, rescue, wait for what the rescue made due
    again; True: drain."""
    stop = service.stopped
    now = service.clock.now_ms()
    stale_before = now - service.timings.stale_after_ms
    expiries = [
        now if h.first_expiry is None else h.first_expiry
        for h in service.store.held_leases(exclude_owner=service.owner)
        if looks_gone(h.owner, heartbeat_at=h.heartbeat_at, stale_before=stale_before)
    ]
    soon = [at for at in expiries if at <= deadline]
    if not soon or stop.is_set():
        return False
    _log.info("once.awaiting_leases", owners=len(expiries), until=iso_utc(min(soon)))
    if stop.wait(max(0, min(soon) - now) / 1000):
        return False
    service.guarded(service.upkeep.rescue_tick)()
    due = [at for at in service.rescuer.retries_at if at <= deadline]
    if due:
        stop.wait(max(0, max(due) - service.clock.now_ms()) / 1000)
    return not stop.is_set()
