"""PostgreSQL: index the conversations that hold their jobs back (the due rule's gate).

Every claim asks, of its candidates, whether their conversation is out of `auto` or
cooling down. PostgreSQL planned that as one scan of the whole `local_conversations`
table per claim (the gate matches few rows, so it looked cheap): 1.3 ms of every claim
with 10,000 conversations, growing with every conversation the tracker ever saw. This
partial index holds only the conversations that could hold a job back, so the gate reads
a handful of rows. SQLite looks each candidate's conversation up by its key and needs
nothing. A plain, non-unique index: it never rejects a tracker's write.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The claim's gate (`store.jobs.dispatch_allowed`) implies this predicate whenever the
    # configured dispatch statuses include 'auto' (the default): a status outside them is
    # not 'auto', and a cooldown in force is not NULL.
    op.execute(
        """
        CREATE INDEX IF NOT EXISTS idx_local_conversations_gated
        ON local_conversations (local_conversation_id)
        WHERE automation_status <> 'auto' OR cooldown_until IS NOT NULL
        """
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
