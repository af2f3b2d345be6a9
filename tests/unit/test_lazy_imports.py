"""What a command does not use, it does not import: `run` on SQLite pays for no psycopg,
Jinja2 or prometheus_client (issue 15, start-up), and every command is still reachable."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from renewald.cli.app import COMMANDS, cli

_PROBE = """
import sys
import click
from renewald.cli.app import cli
from renewald.store.engine import is_unavailable, make_engine
command = cli.get_command(click.Context(cli), "run")
assert command is not None
engine = make_engine(sys.argv[1])
engine.connect().close()
is_unavailable(RuntimeError("x"))
print(" ".join(m for m in ("psycopg", "jinja2", "prometheus_client") if m in sys.modules))
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
