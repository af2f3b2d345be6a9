"""renewald's own statements, compiled to SQL text for plain sqlite3 and psycopg (bare.py,
sections/pollcost.py, db.py): nothing written out by hand, so the bench measures the landed
claim (store/claim.py), wake-up query (store/jobs.py), fenced write (store/attempts.py) and
the schema's tables (store/schema.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from bench.bare import Sql, Statements
from renewald.store import attempts, claim, jobs
from renewald.store.engine import BACKENDS
from renewald.store.schema import renewal_job_attempts

STATUSES = ("auto",)


def _compile(stmt: ClauseElement, backend: str, columns: Sequence[str] | None = None) -> Sql:
    dialect: Dialect
    if backend == "sqlite":
        dialect, mark = sqlite.dialect(paramstyle="named"), ":{}"
    else:
        dialect, mark = postgresql.psycopg.dialect(paramstyle="pyformat"), "%({})s"
    compiled = stmt.compile(dialect=dialect, column_keys=columns)
    text, fixed = str(compiled), dict(compiled.params)
    for name, value in list(fixed.items()):
        token = f"__[POSTCOMPILE_{name}]"
        if token in text:  # an IN list: one parameter per value
            names = [f"{name}_{i}" for i in range(len(value))]
            text = text.replace(token, ", ".join(mark.format(n) for n in names))
            del fixed[name]
            fixed.update(zip(names, value, strict=True))
    return Sql(text, fixed)


def statements(backend: str) -> Statements:
    skip_locked = BACKENDS[backend].skip_locked
    return Statements(
        claim=_compile(claim._claim_statement(STATUSES, skip_locked=skip_locked), backend),
        due=_compile(claim._candidates(STATUSES, skip_locked=skip_locked), backend),
        next_due=_compile(jobs.next_due_query(), backend),
        finish=_compile(attempts._finish_statement(BACKENDS[backend]), backend),
        attempt=_compile(insert(renewal_job_attempts), backend),
        scan_factor=claim.SCAN_FACTOR,
    )


def insert_sql(table: Table, columns: Sequence[str], backend: str) -> str:
    """renewald's table, inserted into the way the tracker does: the columns given."""
    return _compile(insert(table), backend, columns).text
