"""What a run did, counted as the recorder applies results (the `--once` summary)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RESCHEDULED = 75


@dataclass
class Summary:
    delivered: int = 0
    rescheduled: int = 0
    failed: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: str, reason: str) -> None:
        with self._lock:
            if status == "done":
                self.delivered += 1
            elif status == "pending":
                self.rescheduled += 1
                self.reasons[f"retry:{reason.split('=')[0]}"] += 1
            elif status == "failed":
                self.failed += 1
                self.reasons[f"failed:{reason}"] += 1
            else:
                self.skipped += 1
                self.reasons[f"skipped:{reason}"] += 1

    @property
    def finished(self) -> int:
        return self.delivered + self.rescheduled + self.failed + self.skipped

    def exit_code(self) -> int:
        """DESIGN §6: 1 when a job ended failed, 75 when some were rescheduled, else 0."""
        if self.failed:
            return EXIT_FAILED
        if self.rescheduled:
            return EXIT_RESCHEDULED
        return EXIT_OK

    def line(self) -> str:
        text = (
            f"delivered {self.delivered}, rescheduled {self.rescheduled}, "
            f"failed {self.failed}, skipped {self.skipped}"
        )
        if self.reasons:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) + ")"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "delivered": self.delivered,
            "rescheduled": self.rescheduled,
            "failed": self.failed,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
        }
