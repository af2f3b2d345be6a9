"""The store's delivery-target methods: the breaker's shared state (store/targets.py)."""

from __future__ import annotations

from renewald.store import (
    targets,
)
from renewald.store.models import TargetPause
from renewald.store.passthrough import reads, writes
from renewald.store.transactions import Transactions


class TargetMethods(Transactions):
    """Read and change a target's breaker row, take a probe, clear it."""

    list_target_pauses = reads(targets.list_target_pauses)
    get_target_pause = reads(targets.get_target_pause)
    claim_target_probe = writes(targets.claim_target_probe)
    clear_target_pause = writes(targets.clear_target_pause)

    def change_target_pause(
        self, *, target_key: str, adapter: str | None, now: int, change: targets.Change
    ) -> tuple[TargetPause | None, TargetPause | None]:
        """Apply a pure `change` to the target's row, locked; returns (before, after)."""
        return self.write(
            lambda conn: targets.change_target_pause(
                conn, self.backend, target_key=target_key, adapter=adapter, now=now, change=change
            )
        )
