"""The store: schema, migrations, engines and every query renewald runs."""

from __future__ import annotations

from renewald.store.due import DueGate
from renewald.store.jobs import JobFilter
from renewald.store.migrate import HEAD, check_schema, migrate
from renewald.store.models import (
    Attempt,
    AttemptResult,
    ClaimedJob,
    Decision,
    Job,
    Link,
    NewJob,
    Recorded,
)
from renewald.store.store import Store

__all__ = [
    "HEAD",
    "Attempt",
    "AttemptResult",
    "ClaimedJob",
    "Decision",
    "DueGate",
    "Job",
    "JobFilter",
    "Link",
    "NewJob",
    "Recorded",
    "Store",
    "check_schema",
    "migrate",
]
