"""PostgreSQL: NOTIFY renewald_jobs when a job becomes pending (insert or reschedule).

Daemons LISTEN on the channel and poll at once, so a job another process inserts already
due is picked up in milliseconds instead of at the next poll interval. The trigger only
sends a notification: it can never reject a write the tracker makes. The payload is
empty so PostgreSQL folds a transaction's notifications into one. SQLite needs nothing
here: daemons watch `PRAGMA data_version` instead.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION renewald_notify_pending() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('renewald_jobs', '');
          RETURN NULL;
        END $$
        """
    )
    op.execute("DROP TRIGGER IF EXISTS renewald_notify_pending ON renewal_jobs")
    op.execute(
        """
        CREATE TRIGGER renewald_notify_pending
        AFTER INSERT OR UPDATE OF status, next_attempt_at ON renewal_jobs
        FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.next_attempt_at IS NOT NULL)
        EXECUTE FUNCTION renewald_notify_pending()
        """
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
