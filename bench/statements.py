"""renewald's own statements, compiled to SQL text for plain sqlite3 and psycopg.

The bare loop (bare.py) and the poll section (sections/pollcost.py) run these without
SQLAlchemy; nothing is written out by hand, so they always measure the landed statements:
the claim and its due candidates (store/claim.py), the wake-up query (store/jobs.py), the
fenced write of a result (store/attempts.py) and the attempt row (store/schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from renewald.store import attempts, claim, jobs
from renewald.store.engine import BACKENDS
from renewald.store.schema import renewal_job_attempts, renewal_jobs

STATUSES = ("auto",)
SCAN_FACTOR = claim.SCAN_FACTOR
JOB_COLUMNS = tuple(renewal_jobs.c.keys())


@dataclass(frozen=True)
class Sql:
    """A statement's text and the values of the parameters it fixes (literals, IN lists)."""

    text: str
    fixed: dict[str, Any]

    def params(self, **values: Any) -> dict[str, Any]:
        return {**self.fixed, **values}


def _compile(stmt: ClauseElement, backend: str) -> Sql:
    dialect: Dialect
    if backend == "sqlite":
        dialect, mark = sqlite.dialect(paramstyle="named"), ":{}"
    else:
        dialect, mark = postgresql.psycopg.dialect(paramstyle="pyformat"), "%({})s"
    compiled = stmt.compile(dialect=dialect)
    text, fixed = str(compiled), dict(compiled.params)
    for name, value in list(fixed.items()):
        token = f"__[POSTCOMPILE_{name}]"
        if token in text:  # an IN list: one parameter per value
            names = [f"{name}_{i}" for i in range(len(value))]
            text = text.replace(token, ", ".join(mark.format(n) for n in names))
            del fixed[name]
            fixed.update(zip(names, value, strict=True))
    return Sql(text, fixed)


@dataclass(frozen=True)
class Statements:
    claim: Sql
    due: Sql
    next_due: Sql
    finish: Sql
    attempt: Sql


def statements(backend: str) -> Statements:
    skip_locked = BACKENDS[backend].skip_locked
    return Statements(
        claim=_compile(claim._claim_statement(STATUSES, skip_locked=skip_locked), backend),
        due=_compile(claim._candidates(STATUSES, skip_locked=skip_locked), backend),
        next_due=_compile(jobs.next_due_query(), backend),
        finish=_compile(attempts._finish_statement(BACKENDS[backend]), backend),
        attempt=_compile(insert(renewal_job_attempts), backend),
    )
