"""The code stays lint-clean, formatted and type-checked: the suite fails otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check_and_format() -> None:
    paths = [p for p in ("src", "tests", "bench") if (ROOT / p).is_dir()]
    lint = run("ruff", "check", *paths)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", *paths)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_on_src_tests_and_bench() -> None:
    """`[tool.mypy] files` in pyproject.toml names them."""
    result = run("mypy", "--no-error-summary", "--cache-dir", "/tmp/renewald-mypy-cache")
    assert result.returncode == 0, result.stdout + result.stderr
