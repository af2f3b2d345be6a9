"""Fixtures shared by the daemon tests (the `store` fixture, over both backends, is in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from renewald.logging import JobLog


@pytest.fixture
def job_log(tmp_path: Path) -> Iterator[JobLog]:
    log = JobLog(tmp_path / "logs")
    yield log
    log.close()
