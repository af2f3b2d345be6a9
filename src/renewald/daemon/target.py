"""From a claimed job to what its adapter is given: the target, checked before any send.

Everything here reads rows another program wrote, so every way they can be wrong ends
in a permanent outcome with a reason a person understands, never an exception.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from renewald.adapters import Adapter, AdapterRegistry, Conversation, Delivery, Outcome
from renewald.store import ClaimedJob

_log = structlog.get_logger("renewald.daemon")

PAYLOAD_KINDS = ("text", "json")


def _json_object(text: str | None, where: str) -> dict[str, Any] | Outcome:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Outcome.permanent(
            f"{where} is not JSON ({exc.msg} at column {exc.colno})", error_class="BadTarget"
        )
    if not isinstance(value, dict):
        return Outcome.permanent(
            f"{where} must be a JSON object, got {type(value).__name__}", error_class="BadTarget"
        )
    return value


def target_kind_of(claimed: ClaimedJob) -> str | None:
    if claimed.job.target_kind:
        return claimed.job.target_kind
    return claimed.link.target_kind if claimed.link else None


def build_delivery(claimed: ClaimedJob, *, attempt_id: str) -> Delivery | Outcome:
    """The Delivery for this attempt, or the permanent outcome that says why there is none."""
    job, link = claimed.job, claimed.link
    kind = target_kind_of(claimed)
    if not kind:
        return Outcome.permanent(
            "no target: the conversation has no active link and the job names no target kind",
            error_class="NoTarget",
        )
    if job.payload_kind not in PAYLOAD_KINDS:
        return Outcome.permanent(
            f"payload_kind {job.payload_kind!r} is not one of text, json", error_class="BadPayload"
        )
    if not job.payload or not job.payload.strip():
        return Outcome.permanent("payload is empty", error_class="BadPayload")
    if job.payload_kind == "json":
        try:
            json.loads(job.payload)
        except json.JSONDecodeError as exc:
            return Outcome.permanent(
                f"payload_kind is json but the payload is not JSON ({exc.msg} at column "
                f"{exc.colno})",
                error_class="BadPayload",
            )
    target: dict[str, Any] = {}
    if link is not None:
        if link.client_id:
            target["clientId"] = link.client_id
        if link.page_url:
            target["pageUrl"] = link.page_url
        if link.target_id:
            target["targetId"] = link.target_id
        from_link = _json_object(link.target_payload, "conversation_links.target_payload")
        if isinstance(from_link, Outcome):
            return from_link
        target.update(from_link)
    from_job = _json_object(job.target_snapshot, "renewal_jobs.target_snapshot")
    if isinstance(from_job, Outcome):
        return from_job
    target.update(from_job)
    return Delivery(
        job_id=job.job_id,
        attempt=job.attempt_count,
        attempt_id=attempt_id,
        target_kind=kind,
        target=target,
        payload=job.payload,
        payload_kind=job.payload_kind,
        conversation=Conversation(
            local_id=job.local_conversation_id,
            platform=(link.platform if link else None) or claimed.platform,
            remote_id=link.remote_conversation_id if link else None,
            page_url=(link.page_url if link else None) or target.get("pageUrl"),
        ),
    )


def breaker_key(adapter: Adapter, delivery: Delivery) -> str:
    """The target a delivery goes to, as its breaker and in-flight limit know it.

    A third-party adapter whose `target_key` raises has all its targets limited as one
    (`kind:?`), which is logged.
    """
    try:
        return str(adapter.target_key(delivery))
    except Exception as exc:
        _log.error(
            "adapter.target_key_failed",
            adapter=delivery.target_kind,
            job_id=delivery.job_id,
            error=f"{type(exc).__name__}: {exc}",
        )
        return f"{delivery.target_kind}:?"


def target_of(claimed: ClaimedJob, registry: AdapterRegistry) -> tuple[str | None, str | None]:
    """The job's adapter kind and breaker key, as the daemon computes them; the key is
    None when the job has no deliverable target or its adapter cannot be built (then its
    readers fall back to the pauses of the whole kind)."""
    kind = target_kind_of(claimed)
    delivery = build_delivery(claimed, attempt_id="explain")
    if isinstance(delivery, Outcome):
        return kind, None
    try:  # building an adapter reads its config section; a third-party one may do anything
        adapter = registry.get(delivery.target_kind)
    except Exception:
        return kind, None
    return kind, breaker_key(adapter, delivery) if adapter is not None else None


def in_flight_limit(adapter: Adapter) -> int:
    """The most deliveries at once to one of the adapter's targets (1 unless it says)."""
    limit = getattr(adapter, "max_in_flight_per_target", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return 1
    return limit


def is_blocking(adapter: Adapter) -> bool:
    """Whether the adapter's sends wait on something (`adapters.base.Adapter`): all but
    those that say `blocking = False`."""
    return getattr(adapter, "blocking", True) is not False
