"""`renewald migrate` and the schema check every other command runs first.

Alembic keeps its bookkeeping in renewald's own version table, so a tracker that uses
Alembic itself is never confused. The known revisions are listed here so that the
check at start-up is one SELECT, not an import of every migration script.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from renewald.errors import SchemaMissing, SchemaOutdated, SchemaTooNew
from renewald.store.engine import backend_of

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

VERSION_TABLE = "renewald_schema_version"
REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")
HEAD = REVISIONS[-1]
SCRIPT_LOCATION = str(Path(__file__).with_name("migrations"))
MIGRATE_LOCK = 0x72656E65  # "rene": serializes concurrent `renewald migrate` runs


def alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig  # only `migrate` pays for Alembic

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade the schema in one transaction; returns (before, after) revisions."""
    with engine.begin() as conn:
        backend_of(engine).lock_transaction(conn, MIGRATE_LOCK)
        before = current_revision(conn)
        if before is not None and before not in REVISIONS:
            raise SchemaTooNew(
                f"the database schema is at revision {before}, newer than this renewald "
                f"knows (up to {HEAD}): upgrade renewald"
            )
        if before != HEAD:
            from alembic import command

            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return before, HEAD


def check_schema(conn: Connection | Engine) -> None:
    """Raise the error that tells the operator what to do when the schema is not current."""
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return check_schema(c)
    revision = current_revision(conn)
    if revision is None:
        raise SchemaMissing("the database has no renewald schema: run `renewald migrate`")
    if revision not in REVISIONS:
        raise SchemaTooNew(
            f"the database schema is at revision {revision}, newer than this renewald "
            f"knows (up to {HEAD}): upgrade renewald"
        )
    if revision != HEAD:
        raise SchemaOutdated(
            f"the database schema is at revision {revision}, this renewald needs {HEAD}: "
            "run `renewald migrate`"
        )
