"""Redaction: secrets never reach the log, the database or `show` output.

One place decides what a secret looks like: passwords in URLs, token-like query
parameters, Authorization/Cookie header values, bearer tokens, values under
secret-looking keys (in mappings and in `key=value` / `"key": "value"` text), and any
value the configuration names as secret (`add_secret`).

Key names are judged by their *segments* (`api_key`, `X-Api-Key`, `apiKey` are all
`api` + `key`), never by substring: `design` and `assignee` contain "sig" but are not
secrets, `max_tokens` is a count, `secret_env` names a variable rather than holding one.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"

# A key is secret when one of its segments, or two adjacent segments glued together,
# is one of these words ("api" + "key" -> "apikey").
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "auth",
        "authorization",
        "cookie",
        "cookies",
        "session",
        "sessionid",
        "signature",
        "sig",
        "credential",
        "credentials",
        "apikey",
        "accesskey",
        "privatekey",
        "secretkey",
        "signingkey",
        "bearer",
        "jwt",
    }
)
# Glued compounds: a single segment ending in one of these is secret too
# ("csrftoken", "clientsecret", "dbpassword", "xapikey").
_SECRET_ENDINGS = ("token", "secret", "password", "passwd", "apikey")
# In a URL query or fragment a few more names carry credentials: Google's `key=`,
# OAuth's `code=`.
_URL_WORDS = frozenset({"key", "code"})
# A last segment that makes the key describe a secret rather than hold it:
# `token_count`, `secret_env`, `signature_header`, `password_file`, `auth_url`.
_QUALIFIERS = frozenset(
    {
        "count",
        "type",
        "types",
        "limit",
        "limits",
        "usage",
        "ttl",
        "expiry",
        "expires",
        "expiration",
        "length",
        "len",
        "url",
        "uri",
        "endpoint",
        "header",
        "name",
        "mode",
        "method",
        "env",
        "file",
        "path",
        "enabled",
        "required",
    }
)
# Segments of a key: snake_case, kebab-case, dotted and camelCase/APIKey all split.
_SEGMENT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s?#]*)(?::(?P<pw>[^@/\s?#]*))?@"
)
_URL_PARAM = re.compile(r"(?P<lead>[?&;#])(?P<key>[^=&;#?\s\"'<>]+)=(?P<val>[^&;#\s\"'<>]*)")
_HEADER_SECRET = re.compile(
    r"(?P<key>\b(?:proxy-authorization|authorization|set-cookie|cookie|x-api-key|"
    r"x-auth-token|x-renewald-signature)[\"']?\s*[:=]\s*[\"']?)(?P<val>[^\r\n\"']+)",
    re.IGNORECASE,
)
_SCHEME_CREDENTIAL = re.compile(
    r"\b(?P<scheme>bearer|basic|token)\s+(?P<cred>[A-Za-z0-9._~+/-]+=*)", re.IGNORECASE
)
_KEY_VALUE = re.compile(
    r"(?P<q>[\"']?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P=q)(?P<sep>\s*[:=]\s*)"
    r"(?P<val>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,;&{}\[\]\"']+)"
)

# Replaced whole (never mutated) so readers need no lock; longest first so that a
# secret containing another is masked entirely.
_secrets: tuple[str, ...] = ()
_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Remember a configured secret value so that it is masked wherever it appears.

    Values shorter than 4 characters are ignored: masking them would mangle ordinary text.
    The percent-encoded forms are remembered too, for when the secret travels in a URL.
    """
    global _secrets
    if not value or len(value) < 4:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


@functools.lru_cache(maxsize=1024)
def is_secret_key(name: str, *, in_url: bool = False) -> bool:
    """Whether a value stored under `name` is a secret.

    `in_url` widens the rule for URL query parameters, where bare `key` and `code`
    carry credentials.
    """
    segments = [s.lower() for s in _SEGMENT.findall(name)]
    if not segments:
        return False
    if len(segments) > 1 and segments[-1] in _QUALIFIERS:
        return False
    glued = {a + b for a, b in itertools.pairwise(segments)}
    if not _SECRET_WORDS.isdisjoint(segments) or not _SECRET_WORDS.isdisjoint(glued):
        return True
    if any(s.endswith(_SECRET_ENDINGS) for s in segments):
        return True
    return in_url and not _URL_WORDS.isdisjoint(segments)


def _mask_userinfo(m: re.Match[str]) -> str:
    # user:password@ keeps the user; a lone user@ is masked whole, because tokens are
    # often passed as the user name (https://<token>@host/).
    if m["pw"] is not None:
        return f"{m['scheme']}{m['user']}:{MASK}@"
    return f"{m['scheme']}{MASK}@"


def _mask_url_param(m: re.Match[str]) -> str:
    val = m["val"]
    if val and is_secret_key(unquote_plus(m["key"]), in_url=True):
        return f"{m['lead']}{m['key']}={MASK}"
    if val and ("%" in val or "=" in val):
        nested = _redact_nested(val)
        if nested != val:
            return f"{m['lead']}{m['key']}={nested}"
    return m[0]


def _redact_nested(val: str) -> str:
    """A query value that carries another URL (`?next=/a?token=…`, or percent-encoded:
    `?url=http%3A%2F%2Fhost%2F%3Ftoken%3D…`): its own secrets masked, encoding kept.

    Each level works on a strictly shorter text than the one around it (a match's value,
    or a decoding that changed something), so nesting of any depth ends."""
    plain = redact_text(val) or ""
    if plain != val:
        return plain
    if "%" not in val:
        return val
    decoded = unquote(val)
    if decoded == val:
        return val
    masked = redact_text(decoded) or ""
    if masked == decoded:
        masked = _redact_nested(decoded)  # encoded twice (or more)
    return val if masked == decoded else quote(masked, safe="*")


def _mask_scheme_credential(m: re.Match[str]) -> str:
    cred = m["cred"]
    if m["scheme"].lower() == "bearer":
        looks_secret = len(cred) >= 8
    else:
        # "basic authentication", "token expired": words, not credentials.
        looks_secret = len(cred) >= 8 and any(c.isdigit() or c in "._~+/-=" for c in cred)
    return f"{m['scheme']} {MASK}" if looks_secret else m[0]


def _mask_key_value(m: re.Match[str]) -> str:
    if not is_secret_key(m["key"]):
        return m[0]
    val = m["val"]
    masked = f"{val[0]}{MASK}{val[0]}" if val[0] in "\"'" else MASK
    return f"{m['q']}{m['key']}{m['q']}{m['sep']}{masked}"


# Texts up to this long are remembered: the same reasons, errors and summaries recur on
# every job (and one attempt's texts are redacted for its row and again for its lines).
_MEMO_CHARS = 512


def redact_text(text: str | None) -> str | None:
    """Mask every secret-looking part of a free text (an error, a response body, a URL)."""
    if text is None:
        return None
    if len(text) <= _MEMO_CHARS:
        return _redact_short(text, _secrets)
    return _redact(text, _secrets)


@functools.lru_cache(maxsize=4096)
def _redact_short(text: str, secrets: tuple[str, ...]) -> str:
    """`_redact`, remembered per text and per set of configured secrets."""
    return _redact(text, secrets)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    out = text
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    out = _URL_USERINFO.sub(_mask_userinfo, out)
    out = _URL_PARAM.sub(_mask_url_param, out)
    out = _HEADER_SECRET.sub(lambda m: f"{m['key']}{MASK}", out)
    out = _SCHEME_CREDENTIAL.sub(_mask_scheme_credential, out)
    return _KEY_VALUE.sub(_mask_key_value, out)


def redact_value(value: Any, key: str | None = None) -> Any:
    """Redact a JSON-like value; values under secret-looking keys are masked whole.

    Booleans, None and empty strings under a secret key are kept: they reveal nothing
    and say whether a secret is set.
    """
    if (
        key is not None
        and value is not None
        and value != ""
        and not isinstance(value, bool)
        and is_secret_key(key)
    ):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
