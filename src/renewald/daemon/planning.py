"""From a claimed job to a planned send: its delivery, adapter and target, or the result
that says why it gets none (a row that does not fit, a passed deadline, no target, an
unknown or misconfigured adapter)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cached_property

import structlog

from renewald.adapters import Adapter, AdapterRegistry, Delivery, Outcome
from renewald.daemon.backoff import expired_before_attempt
from renewald.daemon.breaker import TargetAttempt
from renewald.daemon.malformed import malformed_result
from renewald.daemon.parts import DaemonParts, Part
from renewald.daemon.results import Attempt, ResultMaker
from renewald.daemon.target import (
    breaker_key,
    build_delivery,
    in_flight_limit,
    is_blocking,
    target_kind_of,
)
from renewald.errors import ConfigError
from renewald.ids import new_attempt_id
from renewald.redact import redact_value
from renewald.store import AttemptResult, ClaimedJob

_log = structlog.get_logger("renewald.daemon")


@dataclass(frozen=True)
class Planned(Attempt):
    """A claimed job ready to be delivered: its delivery, adapter and target."""

    kind: str
    target_text: str
    delivery: Delivery
    adapter: Adapter
    key: str
    limit: int
    blocking: bool

    @cached_property
    def at_target(self) -> TargetAttempt:
        """What the breaker is told at admit and at record: made once per send."""
        return TargetAttempt(self.key, self.kind, self.claimed.job.job_id, self.attempt_id)


class Planner(Part):
    def __init__(
        self, parts: DaemonParts, *, adapters: AdapterRegistry, results: ResultMaker, pause_ms: int
    ) -> None:
        super().__init__(parts)
        self.adapters = adapters
        self.results = results
        self.pause_ms = pause_ms
        self._config_errors: set[str] = set()
        self._lock = threading.Lock()

    def plan(self, claimed: ClaimedJob) -> Planned | AttemptResult:
        """The job's delivery, adapter and target; or its result when it cannot have one."""
        job = claimed.job
        attempt_id = new_attempt_id()
        now = self.clock.now_ms()
        if claimed.problems:  # a row that does not fit is never sent (DESIGN §2)
            return malformed_result(
                claimed,
                owner=self.owner,
                now=now,
                log_path=self.job_log.path_for(now),
                attempt_id=attempt_id,
            )
        kind = target_kind_of(claimed)
        expired = expired_before_attempt(job.deadline_at, now)
        if expired is not None:
            return self.results.expired(Attempt(claimed, attempt_id, kind, None), now, expired)
        delivery = build_delivery(claimed, attempt_id=attempt_id)
        if isinstance(delivery, Outcome):
            return self.results.sent(Attempt(claimed, attempt_id, kind, None), now, now, delivery)
        kind = delivery.target_kind
        target_text = json.dumps(redact_value(dict(delivery.target)), sort_keys=True)
        try:
            adapter = self.adapters.get(kind)
        except ConfigError as exc:
            self._say_config_error(kind, exc)
            return self.results.deferred(
                Attempt(claimed, attempt_id, kind, target_text),
                now=now,
                until=now + self.pause_ms,
                reason=f"adapter {kind} is misconfigured, not tried",
                error_class="AdapterConfigError",
                error=f"adapter {kind} cannot be built: {exc}",
            )
        if adapter is None:
            outcome = Outcome.permanent(
                f"no adapter for target kind {kind!r} (known: {', '.join(self.adapters.kinds())})",
                error_class="UnknownTargetKind",
            )
            attempt = Attempt(claimed, attempt_id, kind, target_text)
            return self.results.sent(attempt, now, now, outcome)
        return Planned(
            claimed,
            attempt_id,
            kind,
            target_text,
            delivery,
            adapter,
            key=breaker_key(adapter, delivery),
            limit=in_flight_limit(adapter),
            blocking=is_blocking(adapter),
        )

    def _say_config_error(self, kind: str, exc: ConfigError) -> None:
        """Once per kind and process: every later job of the kind is deferred quietly."""
        with self._lock:
            if kind in self._config_errors:
                return
            self._config_errors.add(kind)
        _log.error(
            "adapter.config_error",
            adapter=kind,
            error=str(exc),
            hint=f"jobs for {kind} are deferred without spending attempts; "
            "fix the configuration and restart renewald",
        )
