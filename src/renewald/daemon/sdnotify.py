"""The systemd notification protocol (sd_notify), in the standard library only.

systemd passes `NOTIFY_SOCKET` (a filesystem path, or `@name` for an abstract socket) to a
`Type=notify` service; the service sends datagrams of newline-separated `KEY=VALUE`
assignments to it: `READY=1`, `STOPPING=1`, `STATUS=...`, `WATCHDOG=1`.

Two rules shape this module:

- systemd going away (daemon-reexec, a container without systemd, a socket that was never
  there) must never take renewald down, so every send returns a bool and never raises.
- `WATCHDOG=1` means "this process is doing its work", not "this process is running": the
  daemon marks a `WatchdogGate` after each successful poll and heartbeat tick, and
  `Notifier.watchdog_if` pings only while every required tick is recent. A daemon whose
  scheduler is wedged then stops pinging, and systemd restarts it.

Time is always passed in (monotonic seconds), so the gate is tested without sleeping.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping

__all__ = ["Notifier", "WatchdogGate"]

_log = logging.getLogger("renewald.sdnotify")

_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")

# A notification is a few hundred bytes; a send that cannot finish in this long means the
# manager is wedged, and the scheduler thread that called us must not wait on it.
SEND_TIMEOUT = 1.0


def _socket_address(value: str | None) -> str | None:
    """The `sendto` address for a NOTIFY_SOCKET value, or None when it is not usable here."""
    if not value:
        return None
    if value.startswith("@"):
        # Linux abstract namespace: the name is the rest, behind a leading NUL byte.
        return "\0" + value[1:] if len(value) > 1 else None
    if value.startswith("/"):
        return value
    # `vsock:CID:PORT` and anything newer: not something a Python daemon on a host or in a
    # container is handed; treat it as "no systemd" rather than guess.
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != pid:
                # Inherited from a parent that systemd watches, not meant for us.
                return None
        except ValueError:
            return None
    # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
    return usec / 2 / 1_000_000


def _format_value(value: object) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    # A newline would start a new assignment: one field must stay one field.
    return str(value).replace("\r", " ").replace("\n", " ")


class Notifier:
    """Sends sd_notify messages to the service manager; a no-op when there is none.

    Thread-safe: sends are serialised, so datagrams from several scheduler threads never
    interleave and arrive in the order the calls were made. Every send returns True when
    the datagram was handed to the socket and False otherwise; none of them raises.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_interval: float | None = None,
        timeout: float = SEND_TIMEOUT,
    ) -> None:
        """`address` is a NOTIFY_SOCKET value (`/path` or `@abstract`); None disables."""
        self._address = _socket_address(address)
        self._display = address or ""
        self._watchdog_interval = watchdog_interval
        self._timeout = timeout
        self._lock = threading.Lock()
        self._failing = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """Build from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.

        `env` defaults to `os.environ`, `pid` to this process's id. The environment is
        read, never modified.
        """
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        return cls(
            env.get("NOTIFY_SOCKET"),
            watchdog_interval=_watchdog_interval(env, pid),
        )

    @classmethod
    def disabled(cls) -> Notifier:
        """A notifier that sends nothing (no systemd, or notifications switched off)."""
        return cls(None)

    @property
    def enabled(self) -> bool:
        """Whether there is a notification socket to send to."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None: no watchdog.

        None also when WATCHDOG_PID names another process, or when there is no socket.
        """
        return self._watchdog_interval if self.enabled else None

    def notify(self, **fields: object) -> bool:
        """Send one datagram of `KEY=VALUE` lines, keys upper-cased, in the order given.

        `notify(ready=1, status="3 running")` sends `READY=1\\nSTATUS=3 running`.
        True is sent as `1`. Raises ValueError only for a key that is not a valid
        assignment name (a programming error); socket trouble returns False.
        """
        lines = []
        for key, value in fields.items():
            name = key.upper()
            if not _KEY.fullmatch(name):
                raise ValueError(f"not an sd_notify field name: {key!r}")
            lines.append(f"{name}={_format_value(value)}")
        if not lines:
            return False
        return self._send("\n".join(lines).encode("utf-8"))

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (and STATUS= in the same datagram when given): startup is complete."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1 (and STATUS= when given): a graceful shutdown has begun."""
        if status is None:
            return self.notify(STOPPING=1)
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        """STATUS=text: the one line `systemctl status` shows."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """WATCHDOG=1, only when a watchdog is armed for this process.

        Without one (no WATCHDOG_USEC, or WATCHDOG_PID names another process) nothing is
        sent and the result is False: a ping on someone else's behalf would keep a dead
        process looking alive.
        """
        if self.watchdog_interval is None:
            return False
        return self.notify(WATCHDOG=1)

    def watchdog_if(
        self, gate: WatchdogGate, now: float, max_age: float | Mapping[str, float]
    ) -> bool:
        """WATCHDOG=1 only if `gate.healthy(now, max_age)`; False when withheld or failed."""
        if self.watchdog_interval is None:
            return False
        stale = gate.stale(now, max_age)
        if stale:
            _log.warning("watchdog_withheld", extra={"stale": stale})
            return False
        return self.watchdog()

    def _send(self, data: bytes) -> bool:
        address = self._address
        if address is None:
            return False
        with self._lock:
            try:
                # A fresh socket per message, as libsystemd does: nothing to reconnect
                # after the manager re-executes, nothing left open for a child to inherit.
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(self._timeout)
                    sock.sendto(data, address)
            except OSError as exc:
                # Warn once per run of failures; systemd may be gone for good (a container)
                # and the daemon sends every few seconds.
                if not self._failing:
                    _log.warning(
                        "sd_notify_failed",
                        extra={
                            "socket": self._display,
                            "error": f"{type(exc).__name__}: {exc}",
                        },
                    )
                self._failing = True
                return False
            if self._failing:
                _log.info(
                    "sd_notify_recovered",
                    extra={"socket": self._display},
                )
            self._failing = False
            return True

    def __repr__(self) -> str:
        return f"Notifier(socket={self._display!r}, watchdog_interval={self.watchdog_interval!r})"


class WatchdogGate:
    """Whether the daemon's periodic ticks are succeeding, so WATCHDOG=1 can be earned.

    The daemon calls `mark(name, now)` after each *successful* tick (by default the
    "poll" and "heartbeat" ticks) with a monotonic `now`; `healthy(now, max_age)` is true
    only when every required tick was marked no more than `max_age` seconds ago.

    `started` (a monotonic time, usually when the scheduler started) counts as a mark of
    every tick that has not run yet, so a tick whose first run is one interval away does
    not withhold the first pings. Without it, nothing is healthy before the first marks.

    Thread-safe; reads no clock.
    """

    def __init__(
        self,
        required: Iterable[str] = ("poll", "heartbeat"),
        *,
        started: float | None = None,
    ) -> None:
        self.required: tuple[str, ...] = tuple(dict.fromkeys(required))
        if not self.required:
            raise ValueError("a watchdog gate needs at least one required tick")
        self._started = started
        self._marks: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, name: str, now: float) -> None:
        """Record that tick `name` succeeded at monotonic time `now`."""
        if name not in self.required:
            # A misspelt tick would otherwise withhold the watchdog forever, silently.
            raise ValueError(f"unknown watchdog tick {name!r}; required: {self.required}")
        with self._lock:
            previous = self._marks.get(name)
            if previous is None or now > previous:
                self._marks[name] = now

    def last(self, name: str) -> float | None:
        """When tick `name` last succeeded, or None if it never has."""
        with self._lock:
            return self._marks.get(name)

    def stale(self, now: float, max_age: float | Mapping[str, float]) -> list[str]:
        """The required ticks not marked within `max_age` of `now` (empty = healthy).

        `max_age` is seconds for every tick, or a mapping of tick name to seconds (each
        required tick must be in it), for ticks that run at different intervals.
        """
        with self._lock:
            marks = dict(self._marks)
        stale = []
        for name in self.required:
            limit = max_age[name] if isinstance(max_age, Mapping) else max_age
            last = marks.get(name, self._started)
            if last is None or now - last > limit:
                stale.append(name)
        return stale

    def healthy(self, now: float, max_age: float | Mapping[str, float]) -> bool:
        """True when every required tick was marked no more than `max_age` before `now`."""
        return not self.stale(now, max_age)
