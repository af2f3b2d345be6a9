"""The conversation gate of the due rule, as one value (DESIGN §2).

A job is due when it is pending, its `next_attempt_at` has come, and its conversation
(if it has a row) allows dispatch: its `automation_status` is one of `[daemon]
dispatch_statuses` and it is not cooling down. The store carries its gate (`Store(due=...)`,
`Store.with_due`), so the claim, the counts, the schedule fires and `explain` read the
same statuses and no caller passes them along.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DueGate:
    statuses: tuple[str, ...] = ("auto",)
    """The `automation_status` values whose conversations' jobs may be dispatched."""

    def admits(self, automation_status: str | None) -> bool:
        return automation_status in self.statuses


AUTO_ONLY = DueGate()
"""The default gate: only conversations in `auto` (or without a row) dispatch."""
