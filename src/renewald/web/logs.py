"""One job's lines from the JSONL job log (DESIGN §5), for the job page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from renewald.redact import redact_value

_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.jsonl$")
MAX_FILES = 7
MAX_LINES = 200


def _day(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d}.jsonl"


def job_log_lines(
    directory: Path, job_id: str, *, log_path: str | None, times: Iterable[int | None]
) -> list[Mapping[str, Any]]:
    """The job's lines from the day files its `log_path` and its attempt times name, in
    file order, redacted. Only day files inside `directory` are read: `log_path` is a
    stored value, so just its file name is used, and only when it looks like a day file."""
    names = set()
    if log_path:
        name = Path(str(log_path)).name
        if _DAY_FILE.match(name):
            names.add(name)
    for ms in times:
        if isinstance(ms, int) and 0 <= ms <= 253_402_300_799_999:
            names.add(_day(ms))
    found: list[Mapping[str, Any]] = []
    for name in sorted(names)[-MAX_FILES:]:
        found += _lines_for(directory / name, job_id)
    return found[-MAX_LINES:]


def _lines_for(path: Path, job_id: str) -> list[Mapping[str, Any]]:
    needle = json.dumps(job_id)
    out: list[Mapping[str, Any]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for raw in fh:
                if needle not in raw:
                    continue
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("job_id") == job_id:
                    out.append(redact_value(data))
    except OSError:
        return []
    return out
