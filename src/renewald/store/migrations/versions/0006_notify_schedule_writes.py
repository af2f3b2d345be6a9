"""PostgreSQL: NOTIFY renewald_jobs when a schedule is written, as for jobs (0003).

Daemons LISTENing on the channel then see a schedule that another process adds, changes
or removes the moment it commits, as SQLite's watcher of every commit does: the schedule
tick no longer has to look every second to catch one (an idle daemon read the schedules
once a second), and sleeps to the next fire time, up to the long safety interval.
A row trigger: a statement that changes no row (a daemon that lost the race to advance a
fire) wakes nobody; the notifications of one transaction fold into one with the jobs'
(same channel, empty payload). It only notifies and never rejects a write.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # renewald_notify_pending() (migration 0003) notifies and returns NULL, which an
    # AFTER trigger ignores.
    op.execute("DROP TRIGGER IF EXISTS renewald_notify_schedules ON renewal_schedules")
    op.execute(
        """
        CREATE TRIGGER renewald_notify_schedules
        AFTER INSERT OR UPDATE OR DELETE ON renewal_schedules
        FOR EACH ROW EXECUTE FUNCTION renewald_notify_pending()
        """
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
