"""Owner ids: host + pid + a random boot id, unique per process start (DESIGN §6)."""

from __future__ import annotations

import os
import secrets
import socket


def make_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def host_of(owner_id: str) -> str:
    return owner_id.rsplit(":", 2)[0]
