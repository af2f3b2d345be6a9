"""The `renewald` program's entry point (the console script).

Importing the command line builds some 80,000 objects that live as long as the process:
modules, classes, SQLAlchemy's tables and compiled statements. Python's collector, run
while they are being made, walks them again and again for nothing (about a fifth of an
idle `run --once`). So the collector waits until the import is done, and then leaves what
it made out of every later collection (`gc.freeze`).

This lives outside `renewald.cli`, whose import is the work being spared; a test or a
program importing `renewald.cli` keeps its own collector as it was.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    try:
        from renewald.cli import main as run_cli
    finally:
        gc.freeze()
        gc.enable()
    run_cli()
