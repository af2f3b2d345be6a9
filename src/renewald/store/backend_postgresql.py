"""PostgreSQL: concurrent claims queued on an advisory lock, new work pushed by NOTIFY.

Claims run concurrently, and READ COMMITTED gives each statement a snapshot taken when it
starts: two daemons claiming at once would each miss the other's fresh claim and could
both start a job of the same conversation. SKIP LOCKED only keeps them off the same row,
so each claim first takes a transaction-scoped advisory lock (`lock_transaction`).

New work: LISTEN on `renewald_jobs` (a trigger, migration 0003, NOTIFYs when a job
becomes pending).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, create_engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql.dml import Insert

from renewald.store.backend import OnChange

CHANNEL = "renewald_jobs"


class PostgresqlBackend:
    name = "postgresql"
    skip_locked = True
    listen_notify = True
    driver_errors: tuple[type[BaseException], ...] = (psycopg.Error,)
    unavailable_states: frozenset[str] = frozenset(
        {"57P01", "57P02", "57P03", "53300", "08000", "08001", "08003", "08004", "08006"}
    )
    race_states: frozenset[str] = frozenset({"40001", "40P01"})
    unavailable_text: tuple[str, ...] = (
        "connection refused",
        "could not connect",
        "server closed the connection",
        "terminating connection",
        "connection is closed",
        "connection is lost",
        "connection reset",
        "connection timed out",
        "timeout expired",
        "no route to host",
        "network is unreachable",
        "consuming input failed",
        "ssl connection has been closed",
        "the database system is",  # starting up, shutting down, in recovery mode
        "too many clients",
        "temporary failure in name resolution",  # DNS not up yet at boot; a typo is EAI_NONAME
    )

    def engine_create(
        self, url: URL, *, busy_timeout: float, synchronous: str, pool_size: int
    ) -> Engine:
        if url.get_driver_name() not in ("psycopg", "psycopg2") or url.drivername == ("postgresql"):
            url = url.set(drivername="postgresql+psycopg")
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"connect_timeout": max(1, round(busy_timeout))},
        )

    def lock_transaction(self, conn: Connection, key: int) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def insert_ignoring_conflicts(
        self, table: Table, rows: dict[str, Any] | Sequence[dict[str, Any]], *, key: Sequence[str]
    ) -> Insert:
        return (
            postgresql.insert(table).values(rows).on_conflict_do_nothing(index_elements=key or None)
        )

    def changes_watch(
        self, url: str, on_change: OnChange, *, stop: threading.Event, interval: float
    ) -> None:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            on_change()  # whatever was written before we listened
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.5, stop_after=1):
                    on_change()


POSTGRESQL = PostgresqlBackend()
