"""Per-target in-flight limits: how many deliveries run at once for one target key.

A browser tab types one message at a time, so the bridge allows one delivery per
`clientId`; a webhook origin a few. A job whose target is at its limit waits in that
target's line, holding its lease (the heartbeat extends it) but no worker thread. When
a delivery ends, its slot passes straight to the first job in line, so the target never
runs more than its limit and jobs of one target go out in the order they were claimed.
Other targets' jobs never queue behind a busy one.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class TargetLimits(Generic[T]):
    """Slots in use and the line of waiting items, per target key.

    Not thread-safe on its own: the dispatcher calls it under the lock that also guards
    which jobs it holds, so a job is never both waiting here and marked as started.
    """

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._waiting: dict[str, deque[T]] = {}
        self._in_line = 0

    def acquire(self, key: str, limit: int, item: T) -> bool:
        """Take a slot of `key` for `item` (True), or put `item` in line for one (False)."""
        line = self._waiting.get(key)
        if self._in_flight.get(key, 0) < max(1, limit) and not line:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            return True
        self._waiting.setdefault(key, deque()).append(item)
        self._in_line += 1
        return False

    def release(self, key: str) -> T | None:
        """Give back a slot of `key`. If an item is in line, the slot passes to it and it
        is returned (the caller runs it); otherwise the slot is freed and None returned."""
        line = self._waiting.get(key)
        if line:
            item = line.popleft()
            self._in_line -= 1
            if not line:
                del self._waiting[key]
            return item
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
        return None

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def waiting(self, key: str | None = None) -> int:
        """Items in line for `key`, or for every key."""
        if key is not None:
            return len(self._waiting.get(key, ()))
        return self._in_line
