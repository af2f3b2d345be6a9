"""`renewald logs [JOB] [--follow]`: the JSONL job log (DESIGN §5), filtered to one job.

The log is `<[logging] dir>/<UTC date>.jsonl`, one JSON object per line, appended by
daemons and by operator commands. This command prints its lines unchanged, oldest file
first, so its output is itself JSONL (`| jq` works). `--follow` keeps polling the
directory: new lines, and a new day's file, appear within one `--interval`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

from renewald.cli.app import Context, cli, pass_ctx
from renewald.durations import parse_duration
from renewald.errors import UsageError


@dataclass
class _Cursor:
    inode: int
    offset: int = 0
    partial: bytes = b""


@dataclass
class LogTail:
    """Reads whole lines that were appended to the directory's `*.jsonl` files since the
    last call. A line still being written (no newline yet) waits for the next call; a file
    replaced or truncated underneath (logrotate, a cleanup) is read again from its start."""

    directory: Path
    _cursors: dict[str, _Cursor] = field(default_factory=dict)

    def files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.glob("*.jsonl") if p.is_file())
        except OSError:
            return []

    def read_new(self) -> Iterator[str]:
        for path in self.files():
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    cursor = self._cursors.get(path.name)
                    if cursor is None or cursor.inode != st.st_ino or st.st_size < cursor.offset:
                        cursor = self._cursors[path.name] = _Cursor(st.st_ino)
                    if st.st_size == cursor.offset:
                        continue
                    fh.seek(cursor.offset)
                    data = fh.read()
            except OSError:
                continue  # gone between the listing and the open: the next call sees
            cursor.offset += len(data)
            *lines, cursor.partial = (cursor.partial + data).split(b"\n")
            for raw in lines:
                if raw.strip():
                    yield raw.decode("utf-8", "replace").rstrip("\r")


def line_is_for(line: str, job_id: str) -> bool:
    """Whether a log line names `job_id` (lines that are not JSON objects name no job)."""
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("job_id") == job_id


@cli.command("logs")
@click.argument("job_id", required=False)
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until Ctrl-C")
@click.option(
    "--interval",
    default="500ms",
    show_default=True,
    help="with --follow: how often to look for new lines",
)
@pass_ctx
def logs_cmd(ctx: Context, job_id: str | None, follow: bool, interval: str) -> None:
    """Print the JSONL job log, oldest first; with JOB, only that job's lines."""
    try:
        every = parse_duration(interval)
    except ValueError as exc:
        raise UsageError(f"--interval: {exc}") from None
    if not 0 < every <= 60:
        raise UsageError(f"--interval: must be between 0 and 60s, got {interval!r}")
    tail = LogTail(Path(ctx.config.logging.dir))
    if not follow and not tail.files():
        click.echo(f"renewald: no job log files in {tail.directory}", err=True)
        return
    try:
        while True:
            for line in tail.read_new():
                if job_id is None or line_is_for(line, job_id):
                    click.echo(line)
            if not follow:
                return
            time.sleep(every)
    except KeyboardInterrupt:
        return  # Ctrl-C is how --follow ends: not an error
    except BrokenPipeError:
        # `renewald logs | head`: the reader left. Point stdout at nothing, so the
        # interpreter's final flush does not complain on stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return
