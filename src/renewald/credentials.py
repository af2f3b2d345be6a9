"""Secrets from systemd credentials as well as environment variables.

Every secret renewald reads from a variable (`RENEWALD_DB`, which may carry a database
password, `RENEWALD_WEBHOOK_SECRET`, any variable an adapter's `secret_env` names) may
instead come as a systemd credential of the same name, a file in `$CREDENTIALS_DIRECTORY`
(`LoadCredential=RENEWALD_DB` in the unit; systemd reads it as root from
`/etc/credstore/RENEWALD_DB` before the sandbox starts). A credential, when present, wins
over the variable: the unit's own `Environment=RENEWALD_DB=sqlite:…` default must not
hide it.

Secret variables, and `CREDENTIALS_DIRECTORY`, are kept out of the environment of the
programs renewald starts (the `command` adapter): `child_environment`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from renewald.errors import ConfigError

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
# Variables that hold secrets whatever the configuration says.
SECRET_VARIABLES = frozenset({"RENEWALD_DB", "RENEWALD_WEBHOOK_SECRET"})

_named: frozenset[str] = frozenset()
_lock = threading.Lock()


def credential(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The credential `name` from `$CREDENTIALS_DIRECTORY`, or None when there is none.

    One trailing newline is dropped (`echo secret > file` writes one); an empty file counts
    as no credential. A file that exists but cannot be read is a `ConfigError`.
    """
    environ = os.environ if environ is None else environ
    directory = environ.get(CREDENTIALS_DIRECTORY)
    if not directory or "/" in name or name in ("", ".", ".."):
        return None
    path = Path(directory) / name
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"credential {name}: cannot read {path}: {reason}") from None
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    return text or None


def secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret `name`: its credential, else its environment variable, else None."""
    environ = os.environ if environ is None else environ
    return credential(name, environ) or environ.get(name) or None


def name_secret_variables(names: Iterable[str]) -> None:
    """Remember more variables that hold secrets (an adapter's `secret_env`)."""
    global _named
    with _lock:
        _named = _named | frozenset(names)


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` without secret variables and `CREDENTIALS_DIRECTORY`, for a child process."""
    environ = os.environ if environ is None else environ
    hidden = SECRET_VARIABLES | _named | {CREDENTIALS_DIRECTORY}
    return {k: v for k, v in environ.items() if k not in hidden}
