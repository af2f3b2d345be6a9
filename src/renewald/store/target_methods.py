"""The store's delivery-target methods: the breaker's shared state (store/targets.py)."""

from __future__ import annotations

from renewald.store import (
    targets,
)
from renewald.store.models import TargetPause
from renewald.store.transactions import Transactions


class TargetMethods(Transactions):
    """Read and change a target's breaker row, take a probe, clear it."""

    def list_target_pauses(self) -> list[TargetPause]:
        """Every target whose breaker counts failures or is open."""
        return self.read(targets.list_target_pauses)

    def get_target_pause(self, *, target_key: str) -> TargetPause | None:
        return self.read(lambda conn: targets.get_target_pause(conn, target_key))

    def change_target_pause(
        self, *, target_key: str, adapter: str | None, now: int, change: targets.Change
    ) -> tuple[TargetPause | None, TargetPause | None]:
        """Apply a pure `change` to the target's row, locked; returns (before, after)."""
        return self.write(
            lambda conn: targets.change_target_pause(
                conn,
                backend=self.backend,
                target_key=target_key,
                adapter=adapter,
                now=now,
                change=change,
            )
        )

    def claim_target_probe(
        self, *, target_key: str, paused_until: int, now: int, probe_until: int
    ) -> bool:
        """Take the single probe of a half-open target; False when another daemon took it."""
        return self.write(
            lambda conn: targets.claim_target_probe(
                conn,
                target_key=target_key,
                paused_until=paused_until,
                now=now,
                probe_until=probe_until,
            )
        )

    def clear_target_pause(self, *, target_key: str) -> TargetPause | None:
        """Delete the target's row (it accepted a delivery); returns what it was."""
        return self.write(lambda conn: targets.clear_target_pause(conn, target_key=target_key))
