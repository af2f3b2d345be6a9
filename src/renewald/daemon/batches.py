"""Gathering a batch from a queue that a writer thread drains."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")


def gather(
    source: queue.Queue[list[T] | None], batch: list[T], most: int, *, wait: float = 0.0
) -> bool:
    """Add to `batch` the items of the lists queued, until it holds `most` or more (a list
    is never split), waiting up to `wait` seconds in all for more (by default not at all);
    True when the end mark (None) was taken: nothing more is to come."""
    deadline = time.monotonic() + wait
    while len(batch) < most:
        try:
            # Once the deadline has passed, a timeout of zero takes only what is queued.
            more = source.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if more is None:
            return True
        batch.extend(more)
    return False
