"""The `http.webhook` adapter: POSTs the bridge request to the target's own `url`.

With a secret configured, every request carries `X-Renewald-Signature: sha256=<hex>`,
the HMAC-SHA256 of the exact body bytes under the secret. Receivers verify it with a
constant-time comparison and drop duplicates by `Idempotency-Key`.

```toml
[adapters."http.webhook"]
timeout = "10s"
connect_timeout = "3s"
secret_env = "RENEWALD_WEBHOOK_SECRET"   # or: secret = "..." (not both)
signature_header = "X-Renewald-Signature"
max_in_flight_per_target = 4
```
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from renewald import credentials
from renewald.adapters.allowlist import HostAllowList
from renewald.adapters.base import Delivery, Outcome
from renewald.adapters.http import (
    BadPayload,
    Clock,
    HttpSender,
    Timeouts,
    parse_url,
    request_body,
    request_headers,
    setting_int,
)
from renewald.errors import ConfigError
from renewald.redact import add_secret

KIND = "http.webhook"
SECTION = f'[adapters."{KIND}"]'
DEFAULT_SECRET_ENV = "RENEWALD_WEBHOOK_SECRET"
DEFAULT_SIGNATURE_HEADER = "X-Renewald-Signature"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _secret(settings: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The HMAC key: `secret`, else the credential or variable `secret_env` names.

    None means unsigned. The default variable may be unset (webhooks are then sent
    unsigned); a variable the configuration names explicitly must be set.
    """
    if "secret" in settings:
        if "secret_env" in settings:
            raise ConfigError(f"{SECTION}: set secret or secret_env, not both")
        secret = settings["secret"]
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"{SECTION} secret: expected a non-empty string")
        return secret
    name = settings.get("secret_env", DEFAULT_SECRET_ENV)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{SECTION} secret_env: expected an environment variable name")
    secret = credentials.secret(name, environ)
    if secret is None and "secret_env" in settings:
        raise ConfigError(
            f"{SECTION} secret_env: {name} is not set (as a variable or a credential)"
        )
    return secret


class WebhookAdapter:
    """Delivers to the target's `url`; one target = one origin (scheme://host:port)."""

    kind = KIND

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        clock: Clock = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        allow = HostAllowList.from_settings(settings)
        self.max_in_flight_per_target = setting_int(
            settings, "max_in_flight_per_target", 4, section=SECTION
        )
        self._timeouts = Timeouts.from_settings(settings, section=SECTION)
        header = settings.get("signature_header", DEFAULT_SIGNATURE_HEADER)
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{SECTION} signature_header: {header!r} is not a header name")
        self._signature_header = header
        self._secret = _secret(settings, os.environ if environ is None else environ)
        add_secret(self._secret)
        self._key = self._secret.encode("utf-8") if self._secret else None
        self._sender = HttpSender(allow, clock=clock)

    def target_key(self, delivery: Delivery) -> str:
        url = delivery.target.get("url")
        parsed = parse_url(url) if isinstance(url, str) else None
        if parsed is None or not parsed.host:
            return "webhook:invalid"
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
        return f"webhook:{parsed.scheme}://{host}:{port}"

    def sign(self, body: bytes) -> str | None:
        """The signature header value for `body`, or None when no secret is configured."""
        if self._key is None:
            return None
        return "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def deliver(self, delivery: Delivery) -> Outcome:
        url = delivery.target.get("url")
        if url is None or url == "":
            return Outcome.permanent("target has no url", error_class="BadTarget")
        try:
            body = request_body(delivery)
        except BadPayload as exc:
            return Outcome.permanent(str(exc), error_class="BadPayload")
        headers = request_headers(delivery)
        signature = self.sign(body)
        if signature is not None:
            headers[self._signature_header] = signature
        return self._sender.post(url, body, headers, self._timeouts)

    def close(self) -> None:
        self._sender.close()


def factory(settings: Mapping[str, Any]) -> WebhookAdapter:
    return WebhookAdapter(settings)
