"""The clock the tests inject: the wall clock is whatever the test sets."""

from __future__ import annotations

import time


class ManualClock:
    """`now_ms()` returns `now`, which the test moves. `monotonic()` is real time unless the
    test pins it (`mono`), for code that measures durations or ages on it."""

    def __init__(self, now_ms: int, *, monotonic: float | None = None) -> None:
        self.now = now_ms
        self.mono = monotonic

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic() if self.mono is None else self.mono
