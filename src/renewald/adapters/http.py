"""What the HTTP adapters share: the request body, one client, the total deadline, and
the mapping from an HTTP response to an `Outcome` (DESIGN §3).

The adapters themselves are `renewald.adapters.bridge` (browser.proxy_delivery) and
`renewald.adapters.webhook` (http.webhook).

Every request runs under a total deadline (`deadline.DeadlineTransport`): httpx's own
timeouts are per phase, and a server that trickles a byte a second never trips them.
Requests are httpx's (`httpx.Request`, its exceptions), sent on that transport directly.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from renewald import __version__
from renewald.adapters.allowlist import HostAllowList
from renewald.adapters.base import Delivery, Outcome
from renewald.adapters.deadline import DeadlineTransport, total_deadline
from renewald.durations import format_duration, parse_duration
from renewald.errors import ConfigError
from renewald.redact import redact_text

DEFAULT_TIMEOUT = "10s"
DEFAULT_CONNECT_TIMEOUT = "3s"
USER_AGENT = f"renewald/{__version__}"
# What every request carries before its own headers (as httpx's client sent them).
DEFAULT_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "identity",
    "Connection": "keep-alive",
    "User-Agent": USER_AGENT,
}
# Only an excerpt of the body is ever used; reading stops here.
BODY_LIMIT = 64 * 1024
EXCERPT_CHARS = 200
# 408 Request Timeout, 409 Conflict (e.g. the conversation is busy), 423 Locked,
# 425 Too Early: the same request may succeed later.
RETRY_STATUSES = frozenset({408, 409, 423, 425})

Clock = Callable[[], float]


# --- settings -------------------------------------------------------------------------


def setting_duration(settings: Mapping[str, Any], key: str, default: str, *, section: str) -> float:
    """Seconds in `settings[key]` ("10s", or a bare number of seconds); ConfigError if bad."""
    raw = settings.get(key, default)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str):
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise ConfigError(f"{section} {key}: {exc}") from None
    else:
        raise ConfigError(f'{section} {key}: expected a duration such as "10s", got {raw!r}')
    if seconds <= 0:
        raise ConfigError(f"{section} {key}: must be more than zero")
    return seconds


def setting_int(settings: Mapping[str, Any], key: str, default: int, *, section: str) -> int:
    """A positive integer in `settings[key]`; ConfigError if bad."""
    raw = settings.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ConfigError(f"{section} {key}: expected a whole number of at least 1, got {raw!r}")
    return raw


# --- request and response -------------------------------------------------------------


class BadPayload(ValueError):
    """The job's payload cannot be sent as its payload_kind says."""


def request_body(delivery: Delivery) -> bytes:
    """The bridge request body (DESIGN §3) as the exact bytes sent (and signed)."""
    if delivery.payload_kind == "json":
        try:
            payload: Any = json.loads(delivery.payload)
        except ValueError as exc:
            raise BadPayload(f"payload is not valid JSON: {exc}") from None
    elif delivery.payload_kind == "text":
        payload = delivery.payload
    else:
        raise BadPayload(f"unsupported payload_kind {delivery.payload_kind!r}")
    conversation = delivery.conversation
    body = {
        "job_id": delivery.job_id,
        "attempt": delivery.attempt,
        "conversation": {
            "local_id": conversation.local_id,
            "platform": conversation.platform,
            "remote_id": conversation.remote_id,
            "page_url": conversation.page_url,
        },
        "target": dict(delivery.target),
        "payload": payload,
        "payload_kind": delivery.payload_kind,
    }
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN/Infinity in a json payload: not JSON on the wire
        raise BadPayload(f"payload cannot be sent as JSON: {exc}") from None
    return text.encode("utf-8")


def request_headers(delivery: Delivery) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": delivery.job_id,
        "X-Renewald-Attempt": str(delivery.attempt),
    }


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no claim about local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _excerpt(body: bytes) -> str:
    text = " ".join(body[: EXCERPT_CHARS * 20].decode("utf-8", "replace").split())
    # Redact before cutting, so a cut cannot leave half a secret unrecognised.
    text = redact_text(text) or ""
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def outcome_for_response(
    status: int, headers: Mapping[str, str], body: bytes, *, size: str, now: float
) -> Outcome:
    """Map one HTTP response to an outcome (DESIGN §3).

    `headers` must be case-insensitive (`httpx.Headers`); `body` is what was read of the
    body, `size` says how much that was.
    """
    summary = f"HTTP {status}, {size}"
    error_class = f"HTTP{status}"
    if 200 <= status < 300:
        return Outcome.delivered(summary)
    if 300 <= status < 400:
        location = headers.get("location")
        where = f"to {redact_text(location)}" if location else "without a Location"
        return Outcome.permanent(
            f"redirect not followed: {status} {where}", summary=summary, error_class=error_class
        )
    excerpt = _excerpt(body)
    reason = f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}"
    after = parse_retry_after(headers.get("retry-after"), now)
    if status == 429 or (status == 503 and after is not None):
        return Outcome.rate_limited(reason, after=after, summary=summary)
    if status in RETRY_STATUSES or 500 <= status < 600:
        return Outcome.retry(reason, after=after, summary=summary, error_class=error_class)
    if 400 <= status < 500:
        return Outcome.permanent(reason, summary=summary, error_class=error_class)
    return Outcome.retry(
        f"unexpected HTTP status {status}", summary=summary, error_class=error_class
    )


@functools.lru_cache(maxsize=1024)
def parse_url(url: str) -> httpx.URL | None:
    """`httpx.URL(url)`, None when `url` is not one. Cached: every delivery to a target
    parses the same URL, and httpx's parser was a twentieth of a webhook delivery's CPU
    (an `httpx.URL` cannot be changed, so one can be shared)."""
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return None


def check_url(url: object, allow: HostAllowList, *, what: str = "target url") -> httpx.URL | str:
    """The parsed URL when it may be contacted, else why not (a redacted sentence)."""
    if not isinstance(url, str) or not url.strip():
        return f"{what} is missing"
    parsed = parse_url(url)
    if parsed is None:
        return f"{what} is not a valid URL: {redact_text(url)}"
    if parsed.scheme not in ("http", "https"):
        return f"{what} must be http or https: {redact_text(url)}"
    if not parsed.host:
        return f"{what} has no host: {redact_text(url)}"
    if not allow.allows(parsed.host):
        return f"host {parsed.host} is not in [adapters.http] allow_hosts"
    return parsed


@dataclass(frozen=True)
class Timeouts:
    total: float
    connect: float

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, section: str) -> Timeouts:
        return cls(
            total=setting_duration(settings, "timeout", DEFAULT_TIMEOUT, section=section),
            connect=setting_duration(
                settings, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, section=section
            ),
        )


class HttpSender:
    """The HTTP transport (keep-alive connections per thread, safe to share between worker
    threads), the
    allow-list and the total deadline: `post` turns one request into one `Outcome`.

    Requests go to the transport itself, not through an `httpx.Client`: the client's
    work (merging defaults, cookies, auth, redirects, event hooks) was a sixth of a
    request's CPU, and renewald wants none of it. Its one-shot requests carry no state
    from one delivery to the next (no cookie jar), follow no redirect, and read nothing
    from the environment (no proxy).
    """

    def __init__(self, allow: HostAllowList, *, clock: Clock = time.time) -> None:
        self.allow = allow
        self._clock = clock
        self._transport = DeadlineTransport()

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> Outcome:
        """POST `body` to `url`. Never raises for anything the target does."""
        checked = check_url(url, self.allow)
        if isinstance(checked, str):
            return Outcome.permanent(checked, error_class="BadTarget")
        timeout = httpx.Timeout(timeouts.total, connect=timeouts.connect)
        request = httpx.Request(
            "POST",
            checked,
            content=body,
            headers=_with_defaults(headers),
            extensions={"timeout": timeout.as_dict()},
        )
        try:
            with total_deadline(timeouts.total):
                response = self._transport.handle_request(request)
                try:
                    data, size = _read_some(response)
                finally:
                    response.close()
            return outcome_for_response(
                response.status_code, response.headers, data, size=size, now=self._clock()
            )
        except httpx.TimeoutException as exc:
            return Outcome.retry(_timeout_reason(exc, timeouts), error_class=type(exc).__name__)
        except httpx.HTTPError as exc:
            detail = redact_text(str(exc)) or ""
            name = type(exc).__name__
            return Outcome.retry(f"{name}: {detail}" if detail else name, error_class=name)

    def close(self) -> None:
        self._transport.close()


def _with_defaults(headers: Mapping[str, str]) -> httpx.Headers:
    """`DEFAULT_HEADERS`, each replaced by a header of the same name in `headers` whatever
    its case, as httpx's client merged them."""
    merged = httpx.Headers(DEFAULT_HEADERS)
    merged.update(headers)
    return merged


def _timeout_reason(exc: httpx.TimeoutException, timeouts: Timeouts) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {format_duration(min(timeouts.connect, timeouts.total))}"
    return f"no complete response within {format_duration(timeouts.total)}"


def _read_some(response: httpx.Response) -> tuple[bytes, str]:
    """Up to BODY_LIMIT bytes of the body, and a description of its size.

    The status alone decides the outcome: a body that breaks off (the deadline, a reset)
    only shortens the excerpt, so a 2xx whose body never finishes is still delivered.
    """
    chunks: list[bytes] = []
    count = 0
    try:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            count += len(chunk)
            if count > BODY_LIMIT:
                return b"".join(chunks)[:BODY_LIMIT], f"more than {BODY_LIMIT} bytes"
    except httpx.HTTPError as exc:
        return b"".join(chunks), f"{count} bytes, then {type(exc).__name__}"
    return b"".join(chunks), f"{count} bytes"
