"""Control characters out of text that came from outside (errors, URLs, payload previews).

A CR or LF taken from a stored URL must not start a new line in `renewald show` or in a
console log: each control character becomes a visible escape (`\\r`, `\\n`, `\\x1b`).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m[0]
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line, every control character shown as an escape."""
    return _CONTROL.sub(_escape, text)


def escape_optional(text: str | None) -> str | None:
    return None if text is None else escape_controls(text)
