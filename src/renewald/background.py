"""A loop on a daemon thread of its own, told to stop by an event it watches."""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundLoop:
    """Runs `loop()` on a named daemon thread from `start()`; `loop` returns once `stopping`
    is set. A daemon thread, so a loop stuck in a driver call never holds the process up."""

    def __init__(self, loop: Callable[[], None], *, name: str, stopping: threading.Event) -> None:
        self._loop = loop
        self.name = name
        self.stopping = stopping
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, *, wait: float = 0) -> bool:
        """Set `stopping` and give the loop up to `wait` seconds to return; whether it has
        (a loop never started has nothing to end)."""
        self.stopping.set()
        if self._thread is None:
            return True
        if wait > 0:
            self._thread.join(timeout=wait)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
