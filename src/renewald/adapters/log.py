"""The `log` adapter: writes the payload to the log and reports it delivered.

It is the dry-run adapter: point a conversation link's `target_kind` at `log` (or enqueue
with `--target-kind log`) to see what renewald would send without sending anything. The
payload (up to `max_chars`) becomes the attempt's response summary, so it lands in the
JSONL job log line and in `renewald show`; the console gets it at debug level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from renewald.adapters.base import Delivery, Outcome
from renewald.redact import redact_text

_log = structlog.get_logger("renewald.adapters.log")


class LogAdapter:
    kind = "log"
    blocking = False
    # One target per conversation, and a conversation runs one job at a time anyway.
    max_in_flight_per_target = 1

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self._include_payload = bool((settings or {}).get("include_payload", True))
        self._max_chars = 1000

    def target_key(self, delivery: Delivery) -> str:
        return f"log:{delivery.conversation.local_id}"

    def deliver(self, delivery: Delivery) -> Outcome:
        fields: dict[str, Any] = {
            "job_id": delivery.job_id,
            "attempt_id": delivery.attempt_id,
            "attempt": delivery.attempt,
            "conversation": delivery.conversation.local_id,
            "payload_kind": delivery.payload_kind,
        }
        if self._include_payload:
            fields["payload"] = delivery.payload
        _log.debug("delivery_logged", **fields)
        if not self._include_payload:
            return Outcome.delivered(summary=f"logged {len(delivery.payload)} chars")
        text = delivery.payload[: self._max_chars]
        more = len(delivery.payload) - len(text)
        summary = f"logged: {text}" + (f" (+{more} chars)" if more else "")
        return Outcome.delivered(summary=redact_text(summary))

    def close(self) -> None:
        pass


def factory(settings: Mapping[str, Any]) -> LogAdapter:
    return LogAdapter(settings)
