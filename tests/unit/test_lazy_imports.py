"""What a command does not use, it does not import: `run` on SQLite pays for no psycopg,
Jinja2 or prometheus_client, nor for a scan of the installed packages' metadata (issue 15,
start-up), and every command is still reachable."""

from __future__ import annotations

import importlib
import os
import pty
import subprocess
import sys
from pathlib import Path

from renewald.cli.app import COMMANDS, cli

_PROBE = """
import sys
import importlib.metadata
scanned = []
def _scan(*args, **kwargs):
    scanned.append("metadata")
    raise AssertionError("installed packages scanned")
importlib.metadata.Distribution.discover = _scan
importlib.metadata.Distribution.from_name = _scan
import click
from renewald.cli.app import cli
from renewald.adapters import AdapterRegistry
from renewald.store.engine import is_unavailable, make_engine
command = cli.get_command(click.Context(cli), "run")
assert command is not None
engine = make_engine(sys.argv[1])
engine.connect().close()
is_unavailable(RuntimeError("x"))
assert AdapterRegistry({}).get("log") is not None
heavy = [m for m in ("psycopg", "jinja2", "prometheus_client") if m in sys.modules]
print(" ".join(heavy + scanned))
"""


def test_run_on_sqlite_imports_no_postgresql_driver_nor_web(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []


def test_every_command_module_registers_what_the_lazy_table_names() -> None:
    for module in set(COMMANDS.values()):
        importlib.import_module(f"renewald.cli.{module}")
    assert set(cli.commands) == set(COMMANDS)


_PROGRAM = """
import atexit, gc, sys
def report():
    import structlog.dev
    structlog_rich = structlog.dev.rich is not None
    import rich  # whatever structlog saw, rich itself imports
    print(gc.isenabled(), gc.get_freeze_count(), "renewald.cli.app" in sys.modules,
          structlog_rich, file=sys.__stdout__)
atexit.register(report)
sys.argv = ["renewald", "--version"]
from renewald.program import main
main()
"""


def test_the_program_freezes_what_its_import_made_and_collects_again() -> None:
    """The console script (`renewald.program:main`) imports the command line with the
    collector off, then freezes what the import made and turns the collector back on."""
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    enabled, frozen, imported, rich = out.stdout.split()[-4:]
    assert (enabled, imported) == ("True", "True")
    assert int(frozen) > 10_000  # SQLAlchemy alone makes more
    assert rich == "False", "off a terminal, structlog's console needs no rich"


def test_on_a_terminal_structlog_keeps_rich_and_rich_stays_importable() -> None:
    """On a terminal the human console's tracebacks are rich's (and off one, the probe's
    own `import rich` shows rich still imports for whoever asks: the progress bar)."""
    leader, follower = pty.openpty()
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROGRAM], stdout=subprocess.PIPE, stderr=follower,
            text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert out.returncode == 0
    assert out.stdout.split()[-1] == "True"


def test_the_console_script_is_the_program() -> None:
    from importlib.metadata import entry_points

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "renewald"]
    assert script.value == "renewald.program:main"
