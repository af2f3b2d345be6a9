"""The bench's bare loop and poll statements run renewald's own statements (bench/statements.py)
on both backends: a tiny drain, so that a change to the store cannot silently break the bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.db import DataSet, load
from bench.statements import statements
from renewald.store import Store
from renewald.store.claim import SCAN_FACTOR
from renewald.store.schema import renewal_job_attempts, renewal_jobs

ROOT = Path(__file__).resolve().parents[2]
# The bare loop reads the wall clock (it is the bench's loop, not the daemon's).
NOW = time.time_ns() // 1_000_000
DATA = DataSet(jobs=12, conversations=12, finished=3, future=2)


def _load(store: Store, db_url: str) -> str:
    """The data set loaded; the target the plain drivers take (a path or a conninfo)."""
    url = make_url(db_url)
    if store.dialect == "sqlite":
        assert url.database is not None
        target = url.database
    else:
        target = url.set(drivername="postgresql").render_as_string(hide_password=False)
    load(store.dialect, target, DATA, NOW)
    return target


def _count(store: Store, stmt: Any) -> int:
    return int(store.read(lambda c: c.execute(stmt).scalar_one()))


def test_the_bare_loop_drains_with_renewalds_statements_as_a_child_process(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    target = _load(store, db_url)
    sql = tmp_path / "statements.json"
    sql.write_text(statements(store.dialect).dumps())
    jsonl = tmp_path / "bare.jsonl"
    cmd = ["-m", "bench.bare", store.dialect, target, sql, 5, 100, jsonl]
    out = subprocess.run(
        [sys.executable, *map(str, cmd)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["jobs"] == DATA.jobs
    done = (
        select(func.count())
        .select_from(renewal_jobs)
        .where(renewal_jobs.c.job_id.like("job-%"))
        .where(renewal_jobs.c.status == "done", renewal_jobs.c.delivered_at.is_not(None))
    )
    assert _count(store, done) == DATA.jobs
    assert _count(store, select(func.count()).select_from(renewal_job_attempts)) == DATA.jobs
    assert len(jsonl.read_text().splitlines()) == DATA.jobs


def test_the_bare_loop_imports_no_sqlalchemy() -> None:
    probe = "import sys, bench.bare; print('sqlalchemy' in sys.modules, 'renewald' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_the_poll_statements_answer(store: Store, db_url: str) -> None:
    _load(store, db_url)
    sql = statements(store.dialect)
    assert sql.scan_factor == SCAN_FACTOR
    params = {"now": NOW, "scan_limit": 4 * SCAN_FACTOR, "limit": 4}

    def run(stmt_text: str, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        return store.read(lambda c: [tuple(r) for r in c.exec_driver_sql(stmt_text, values)])

    assert len(run(sql.due.text, sql.due.params(**params))) == 4
    [(next_due,)] = run(sql.next_due.text, sql.next_due.params(**params))
    assert next_due is not None and next_due > NOW


def test_bench_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "--only" in out.stdout, out.stderr


def test_the_peer_child_drains_huey(tmp_path: Path) -> None:
    """The peers section's child runs a peer to the end (Huey: SQLite, no server needed)."""
    pytest.importorskip("huey")
    target = str(tmp_path / "huey.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for phase in ("setup", "drain"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.peer", "huey", phase, target, "5"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"done": 5, "left": 0}
    probe = "import sys, bench.peer; print('renewald' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
