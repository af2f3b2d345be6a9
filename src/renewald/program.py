"""The `renewald` program's entry point (the console script).

Importing the command line builds some 80,000 objects that live as long as the process:
modules, classes, SQLAlchemy's tables and compiled statements. Python's collector, run
while they are being made, walks them again and again for nothing (about a fifth of an
idle `run --once`). So the collector waits until the import is done, and then leaves what
it made out of every later collection (`gc.freeze`).

Off a terminal, structlog is imported as if rich were not installed: structlog imports
rich, when it can, only for the tracebacks of its human console, and that import is about
45 ms of every start. Off a terminal the console is JSON lines, so a service, a container
or a cron run never uses it (a human console asked for off a terminal, `console =
"human"`, prints its tracebacks as plain text). rich itself stays importable.

A standard stream that was closed when the program started (`2>&-` in a crontab) is
opened on /dev/null first: with its descriptor free, the next file opened (the database)
would take it, and whatever is written to stderr would land in that file.

This lives outside `renewald.cli`, whose import is the work being spared; a test or a
program importing `renewald.cli` keeps its own collector and modules as they were.
"""

from __future__ import annotations

import gc
import os
import sys

_STANDARD = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def main() -> None:
    _reopen_closed_streams()
    gc.disable()
    try:
        if not sys.stderr.isatty():
            _import_structlog_without_rich()
        from renewald.cli import main as run_cli
    finally:
        gc.freeze()
        gc.enable()
    run_cli()


def _import_structlog_without_rich() -> None:
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # an import of it fails
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


def _reopen_closed_streams() -> None:
    for fd, name, mode in _STANDARD:
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115
