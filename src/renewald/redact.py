"""Redaction: secrets never reach the log, the database or `show` output.

One place decides what a secret looks like: passwords in URLs, token-like query
parameters, Authorization/Cookie header values, bearer tokens, and any value the
configuration names as secret (`add_secret`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|auth(orization)?|cookie|session|"
    r"signature|sig|credential|private[_-]?key|access[_-]?key)",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|key|secret|password|passwd|pwd|sig|signature|"
    r"auth|session|code)[A-Za-z0-9_.-]*)=)[^&#\s\"']*",
    re.IGNORECASE,
)
_HEADER_SECRET = re.compile(
    r"(?P<key>\b(?:authorization|proxy-authorization|cookie|set-cookie|x-api-key|"
    r"x-renewald-signature)\s*[:=]\s*)(?P<val>[^\r\n,;\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<key>bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)

_secrets: set[str] = set()
_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Remember a configured secret value so that it is masked wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact_text(text: str | None) -> str | None:
    """Mask every secret-looking part of a free text (an error, a response body, a URL)."""
    if text is None:
        return None
    out = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    out = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _HEADER_SECRET.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m['key']} {MASK}", out)
    for secret in _secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def redact_url(url: str) -> str:
    """A URL without its password and with token-like query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url) or ""
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_KEY.search(k) else v) for k, v in pairs], safe="*")
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))) or ""


def redact_value(value: Any, key: str | None = None) -> Any:
    """Redact a JSON-like value; values under secret-looking keys are masked whole."""
    if key is not None and SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        if "://" in value:
            return redact_url(value)
        return redact_text(value)
    return value
