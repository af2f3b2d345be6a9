"""Owner ids: host + pid + a random boot id, unique per process start (DESIGN §6)."""

from __future__ import annotations

import os
import secrets
import socket


def make_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def host_of(owner_id: str) -> str:
    return owner_id.rsplit(":", 2)[0]


def pid_of(owner_id: str) -> int | None:
    try:
        return int(owner_id.rsplit(":", 2)[1])
    except (IndexError, ValueError):
        return None


def looks_gone(owner_id: str, *, heartbeat_at: int | None, stale_before: int) -> bool:
    """Whether an owner has stopped: no registry row, a stale heartbeat, or (on this
    host) no process with its pid. A hint for waiting, never a reason to take a live
    lease: a partitioned daemon looks gone too."""
    if heartbeat_at is None or heartbeat_at < stale_before:
        return True
    pid = pid_of(owner_id)
    if host_of(owner_id) != socket.gethostname() or pid is None:
        return False
    return not pid_running(pid)


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True
