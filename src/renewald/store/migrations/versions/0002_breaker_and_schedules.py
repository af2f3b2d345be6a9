"""Breaker state per target and recurring schedules: two tables of renewald's own.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _millis() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "renewal_target_pauses",
        sa.Column("target_key", sa.Text, primary_key=True),
        sa.Column("adapter", sa.Text),
        sa.Column("failures", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("paused_until", _millis()),
        sa.Column("opened_at", _millis()),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", _millis(), nullable=False),
        if_not_exists=True,
    )
    op.create_table(
        "renewal_schedules",
        sa.Column("schedule_id", sa.Text, primary_key=True),
        sa.Column("local_conversation_id", sa.Text, nullable=False),
        sa.Column("trigger_kind", sa.Text, nullable=False),
        sa.Column("every_ms", _millis()),
        sa.Column("cron", sa.Text),
        sa.Column("timezone", sa.Text, nullable=False, server_default=sa.text("'UTC'")),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("payload_kind", sa.Text, nullable=False, server_default=sa.text("'text'")),
        sa.Column("target_kind", sa.Text),
        sa.Column("target_snapshot", sa.Text),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default=sa.text("3")),
        sa.Column("jitter_ms", _millis(), nullable=False, server_default=sa.text("0")),
        sa.Column("misfire", sa.Text, nullable=False, server_default=sa.text("'coalesce'")),
        sa.Column("misfire_grace_ms", _millis()),
        sa.Column("allow_overlap", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("enabled", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("next_fire_at", _millis()),
        sa.Column("last_fire_at", _millis()),
        sa.Column("last_job_id", sa.Text),
        sa.Column("created_at", _millis(), nullable=False),
        sa.Column("updated_at", _millis(), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "idx_renewal_schedules_due",
        "renewal_schedules",
        ["enabled", "next_fire_at"],
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("renewald migrations are additive and are not reversed")
