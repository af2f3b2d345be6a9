"""The bench's bare loop and poll statements run renewald's own statements (bench/statements.py)
on both backends: a tiny drain, so that a change to the store cannot silently break the bench."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench import bare
from bench.db import DataSet, load_pg, load_sqlite
from bench.statements import SCAN_FACTOR, statements
from renewald.store import Store
from renewald.store.schema import renewal_job_attempts, renewal_jobs

ROOT = Path(__file__).resolve().parents[2]
# The bare loop reads the wall clock (it is the bench's loop, not the daemon's).
NOW = time.time_ns() // 1_000_000
DATA = DataSet(jobs=12, conversations=12, finished=3, future=2)


def _load(store: Store, db_url: str) -> str | Path:
    url = make_url(db_url)
    if store.dialect == "sqlite":
        assert url.database is not None
        load_sqlite(Path(url.database), DATA, NOW)
        return Path(url.database)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    load_pg(conninfo, DATA, NOW)
    return conninfo


def test_the_bare_loop_drains_with_renewalds_statements(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    where = _load(store, db_url)
    jsonl = tmp_path / "bare.jsonl"
    if isinstance(where, Path):
        result = bare.run_sqlite(where, batch=5, jsonl=jsonl, max_jobs=100)
    else:
        result = bare.run_pg(where, batch=5, jsonl=jsonl, max_jobs=100)
    assert result["jobs"] == DATA.jobs
    done = store.read(
        lambda c: c.execute(
            select(func.count())
            .select_from(renewal_jobs)
            .where(renewal_jobs.c.job_id.like("job-%"))
            .where(renewal_jobs.c.status == "done", renewal_jobs.c.delivered_at.is_not(None))
        ).scalar_one()
    )
    attempts = store.read(
        lambda c: c.execute(select(func.count()).select_from(renewal_job_attempts)).scalar_one()
    )
    assert (done, attempts) == (DATA.jobs, DATA.jobs)
    assert len(jsonl.read_text().splitlines()) == DATA.jobs


def test_the_poll_statements_answer(store: Store, db_url: str) -> None:
    _load(store, db_url)
    sql = statements(store.dialect)
    params = {"now": NOW, "scan_limit": 4 * SCAN_FACTOR, "limit": 4}

    def run(stmt_text: str, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        return store.read(lambda c: [tuple(r) for r in c.exec_driver_sql(stmt_text, values)])

    due = run(sql.due.text, sql.due.params(**params))
    assert len(due) == 4
    [(next_due,)] = run(sql.next_due.text, sql.next_due.params(**params))
    assert next_due is not None and next_due > NOW


def test_bench_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "--only" in out.stdout, out.stderr


def test_the_peers_child_drains_huey(tmp_path: Path) -> None:
    """The peers section's child runs a peer to the end (Huey: SQLite, no server needed)."""
    pytest.importorskip("huey")
    target = str(tmp_path / "huey.db")
    args = [sys.executable, "-m", "bench.sections.peers", "huey"]
    for phase in ("setup", "drain"):
        out = subprocess.run(
            [*args, phase, target, "5"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"done": 5, "left": 0}
