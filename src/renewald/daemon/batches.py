"""Gathering a batch from a queue that a writer thread drains."""

from __future__ import annotations

import queue
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
