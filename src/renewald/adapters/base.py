"""The adapter interface: what a delivery adapter is given and the one outcome it returns.

Adapters know nothing about the database. The daemon turns a claimed job into a
`Delivery`, calls `Adapter.deliver`, and maps the returned `Outcome` to the job's next state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class OutcomeKind(StrEnum):
    delivered = "delivered"
    retry = "retry"
    rate_limited = "rate_limited"
    permanent = "permanent"


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to (DESIGN §3).

    `after` is seconds the target asked us to wait (Retry-After); `reason` is a short
    sentence for people; `summary` describes the response for the attempt row.
    Every text here must already be redacted by the adapter that made it.
    """

    kind: OutcomeKind
    after: float | None = None
    reason: str | None = None
    summary: str | None = None
    error_class: str | None = None

    @classmethod
    def delivered(cls, summary: str | None = None) -> Outcome:
        return cls(OutcomeKind.delivered, summary=summary)

    @classmethod
    def retry(
        cls,
        reason: str,
        *,
        after: float | None = None,
        summary: str | None = None,
        error_class: str | None = None,
    ) -> Outcome:
        return cls(
            OutcomeKind.retry, after=after, reason=reason, summary=summary, error_class=error_class
        )

    @classmethod
    def rate_limited(
        cls, reason: str, *, after: float | None, summary: str | None = None
    ) -> Outcome:
        return cls(
            OutcomeKind.rate_limited,
            after=after,
            reason=reason,
            summary=summary,
            error_class="RateLimited",
        )

    @classmethod
    def permanent(
        cls, reason: str, *, summary: str | None = None, error_class: str | None = None
    ) -> Outcome:
        return cls(
            OutcomeKind.permanent,
            reason=reason,
            summary=summary,
            error_class=error_class or "Permanent",
        )

    @property
    def is_transient(self) -> bool:
        return self.kind in (OutcomeKind.retry, OutcomeKind.rate_limited)


@dataclass(frozen=True)
class Conversation:
    local_id: str
    platform: str | None = None
    remote_id: str | None = None
    page_url: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one job, as an adapter sees it.

    `target` is the conversation link's `target_payload` merged with the job's
    `target_snapshot` (the job wins). `job_id` is the idempotency key for the whole life
    of the job; `attempt` is the attempt number (1 for the first).
    """

    job_id: str
    attempt: int
    attempt_id: str
    target_kind: str
    target: Mapping[str, Any]
    payload: str
    payload_kind: str
    conversation: Conversation


class Adapter(Protocol):
    """A delivery adapter. `deliver` must not raise for anything the target does.

    An adapter whose `deliver` returns at once, waiting on no network or child process,
    may say so with a class attribute `blocking = False` (`log` does): the daemon then
    sends its jobs from one sender thread, a whole claim at a time, instead of handing
    each to a worker thread. Without it an adapter is taken to block.
    """

    kind: str
    # The most deliveries the daemon runs at once for one `target_key` (a browser tab
    # types one message at a time: the bridge allows 1).
    max_in_flight_per_target: int

    def target_key(self, delivery: Delivery) -> str:
        """The unit of per-target limits and the breaker (e.g. a browser's clientId)."""
        ...

    def deliver(self, delivery: Delivery) -> Outcome: ...

    def close(self) -> None: ...


class AdapterFactory(Protocol):
    """Builds an adapter from its config section (`[adapters."<kind>"]`, plus `[adapters.http]`).

    Third-party adapters expose one of these in the `renewald.adapters` entry-point group,
    named by the target kind they serve.
    """

    def __call__(self, settings: Mapping[str, Any]) -> Adapter: ...
