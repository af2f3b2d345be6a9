"""PostgreSQL: concurrent claims kept apart per conversation, new work pushed by NOTIFY.

Claims run concurrently (SKIP LOCKED), and READ COMMITTED gives each statement a snapshot
taken when it starts, so a claim takes a transaction-scoped advisory lock on each
conversation it picks, without waiting (`try_lock_transaction`: the two-int form, a
renewald class and the conversation's `hashtext`), and claims them in a later statement
(store/claim.py says why that is exact). `lock_transaction` (the one-bigint form, which
never meets a two-int key) serializes `renewald migrate` runs.

New work: LISTEN on `renewald_jobs` (a trigger, migration 0003, NOTIFYs when a job
becomes pending).

Behind PgBouncer in transaction pooling (`?pooler=pgbouncer` in the URL; `pooler_of`),
a connection is the server's only for one transaction: no prepared statements (psycopg's
`prepare_threshold=None`; PgBouncer before 1.21 cannot route them) and no LISTEN (a
notification would reach whichever client holds that server connection next). The
watcher then only asks for the first poll, and new work waits for the daemon's regular
poll (`[daemon] poll_interval`). Nothing else renewald does keeps session state: its
advisory locks are transaction-scoped and it never SETs anything.
"""

from __future__ import annotations

import select
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnClause,
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    Integer,
    Table,
    any_,
    bindparam,
    cast,
    column,
    create_engine,
    event,
    func,
    literal,
    text,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.sql.dml import Insert

from renewald.errors import DatabaseError
from renewald.store.backend import Capabilities, OnChange, Stop

CHANNEL = "renewald_jobs"
POOLER = "pooler"
"""The URL's query key naming a connection pooler in front of the server."""
POOLERS = ("pgbouncer",)


def pooler_of(url: URL) -> str | None:
    """The pooler the URL says the server sits behind (transaction pooling), or None."""
    value = url.query.get(POOLER)
    if value is None:
        return None
    if value not in POOLERS:
        raise DatabaseError(
            f"database url: {POOLER}={value!r} is not known; the only pooler is"
            f" {POOLER}=pgbouncer (transaction pooling)"
        )
    return str(value)


PING_AFTER_IDLE_S = 1.0
_CHECKED_IN = "renewald_checked_in"


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's `pool_pre_ping`, but only for a connection that sat in the pool for
    `PING_AFTER_IDLE_S`: a busy daemon checks out connections hundreds of times a second,
    and a ping each time is a round trip each. A connection that died within the second
    fails its transaction, which `Transactions` runs again on a fresh one."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"the pooled connection is gone: {exc}") from exc


class PostgresqlBackend(Capabilities):
    name = "postgresql"
    skip_locked = True
    bulk_rows_as_json = True
    bare_statements = True
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
        connect_args: dict[str, Any] = {"connect_timeout": max(1, round(busy_timeout))}
        if pooler_of(url) is not None and url.get_driver_name() == "psycopg":
            connect_args["prepare_threshold"] = None
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
        )
        _ping_when_idle(engine)

        @event.listens_for(engine, "do_connect")
        def _no_pooler_key(_dialect, _record, _cargs, cparams):  # type: ignore[no-untyped-def]
            # The key stays in `engine.url` (the watcher reads it); libpq would refuse it.
            cparams.pop(POOLER, None)

        return engine

    def lock_transaction(self, conn: Connection, key: int) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def try_lock_transaction(self, space: int, name: ColumnElement[Any]) -> ColumnElement[bool]:
        return func.pg_try_advisory_xact_lock(
            literal(space, Integer), func.hashtext(name), type_=Boolean
        )

    def insert_ignoring_conflicts(
        self, table: Table, rows: dict[str, Any] | Sequence[dict[str, Any]], *, key: Sequence[str]
    ) -> Insert:
        return (
            postgresql.insert(table).values(rows).on_conflict_do_nothing(index_elements=key or None)
        )

    def rows_from_json(
        self, rows: BindParameter[Any], columns: Sequence[ColumnClause[Any]]
    ) -> FromClause:
        # json_to_recordset is planned as 100 rows whatever it holds: a batch of one or
        # two marks was joined by a hash over a scan of the whole table (1 ms at 3,000
        # rows, growing with it). The LIMIT, the array's own length, is no limit at all
        # but tells the planner the batch's size: a few rows are looked up by key.
        json_rows = cast(rows, postgresql.JSON)
        recordset = (
            func.json_to_recordset(json_rows)
            .table_valued(*(column(c.name, c.type) for c in columns))
            .render_derived(name="each", with_types=True)
        )
        return sql_select(recordset).limit(func.json_array_length(json_rows)).subquery("r")

    def one_of(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))

    def watches_changes(self, url: URL) -> bool:
        return pooler_of(url) is None

    def changes_watch(self, url: str, on_change: OnChange, *, stop: Stop, interval: float) -> None:
        parsed = make_url(url)
        if not self.watches_changes(parsed):
            on_change()
            stop.wait()
            return
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            on_change()  # whatever was written before we listened
            while True:
                select.select([conn.fileno(), stop.fileno()], [], [])
                if stop.is_set():
                    return
                # Readable: notifications, or the server going away (raises, and the
                # watcher reconnects). Whatever arrived is one wake-up.
                if list(conn.notifies(timeout=0)):
                    on_change()


POSTGRESQL = PostgresqlBackend()
