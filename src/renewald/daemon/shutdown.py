"""Stopping `renewald run`: stop claiming, give back, let in-flight work finish, leave.

Bounded throughout: a database that stops answering costs at most `SHUTDOWN_TAIL` beyond
`[daemon] shutdown_grace`, never a hang (each step that talks to the database runs on a
daemon thread the process does not wait for).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

if TYPE_CHECKING:
    from renewald.daemon.service import Service

_log = structlog.get_logger("renewald.daemon")

# After `shutdown_grace`, how long the last bookkeeping (give back unstarted jobs, stop the
# recorder, leave the registry) may take against a database that does not answer.
SHUTDOWN_TAIL = 0.75
# The ticks that claim or write new work; heartbeat and watchdog go on until the end.
WORKING_TICKS = ("poll", "rescue", "schedules", "retention")

T = TypeVar("T")


def shut_down(service: Service, scheduler: BackgroundScheduler) -> None:
    """Stop claiming, give back what never started, let in-flight deliveries finish
    within `shutdown_grace`, leave the registry."""
    d = service.config.daemon
    dispatcher = service.dispatcher
    deadline = time.monotonic() + d.shutdown_grace
    dispatcher.stop_claiming()
    if service.changes is not None:
        service.changes.stop()
    service.notifier.stopping(status="stopping")
    for job_id in WORKING_TICKS:
        if scheduler.get_job(job_id):
            scheduler.remove_job(job_id)
    # A poll already inside its claim would hand us jobs after the release below;
    # they would sit unstarted, held, until the grace ran out. Let it land first.
    if service.poll_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        service.poll_lock.release()
    released = bounded(
        "release", lambda: dispatcher.release_unstarted(now=service.clock.now_ms()), deadline
    )
    in_flight = dispatcher.in_flight()
    if in_flight:
        _log.info("daemon.stopping", in_flight=in_flight, grace=f"{d.shutdown_grace:g}s")
    finished = dispatcher.wait_idle(max(0.0, deadline - time.monotonic()))
    scheduler.shutdown(wait=False)
    tail = max(deadline, time.monotonic()) + SHUTDOWN_TAIL
    more = bounded("close", lambda: dispatcher.close(now=service.clock.now_ms()), tail)
    bounded("unregister", lambda: service.store.unregister_daemon(owner=service.owner), tail)
    service.job_log.close()
    service.adapters.close()
    _log.info(
        "daemon.stopped",
        owner=service.owner,
        released=len(released or []) + len(more or []),
        abandoned=0 if finished else dispatcher.in_flight(),
        **service.summary.as_dict(),
    )


def bounded(what: str, step: Callable[[], T], deadline: float) -> T | None:
    """Run one shutdown step, giving up at `deadline` (monotonic): the step goes on in
    a daemon thread that dies with the process. None when it failed or timed out."""
    out: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            out.append(step())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name=f"renewald-shutdown-{what}", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        _log.error(
            f"shutdown.{what}_timed_out",
            reason="the database did not answer in time; leases expire and are rescued",
        )
        return None
    if error:
        exc = error[0]
        lines = str(exc).strip().splitlines()
        _log.error(
            f"shutdown.{what}_failed",
            error=f"{type(exc).__name__}: {lines[0] if lines else ''}",
        )
        return None
    return out[0]
