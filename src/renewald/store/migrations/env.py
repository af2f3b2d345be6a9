"""Alembic environment: always handed an open connection by `renewald.store.migrate`."""

from __future__ import annotations

from alembic import context

from renewald.store.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
