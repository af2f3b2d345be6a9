"""Gathering a batch from a queue that a writer thread drains."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")


def gather(source: queue.Queue[T | None], batch: list[T], most: int) -> bool:
    """Add to `batch`, without waiting, what is queued, up to `most` items in all; True
    when the end mark (None) was taken: nothing more is to come."""
    while len(batch) < most:
        try:
            more = source.get_nowait()
        except queue.Empty:
            return False
        if more is None:
            return True
        batch.append(more)
    return False


def gather_for(source: queue.Queue[T | None], batch: list[T], most: int, *, seconds: float) -> bool:
    """`gather`, but waiting up to `seconds` in all for more while fewer than `most` items
    are in hand; True when the end mark (None) was taken: nothing more is to come."""
    deadline = time.monotonic() + seconds
    while len(batch) < most:
        try:
            more = source.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if more is None:
            return True
        batch.append(more)
    return False
