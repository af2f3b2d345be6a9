"""The store's schedule methods (store/schedules.py)."""

from __future__ import annotations

from sqlalchemy import Connection

import renewald.store.schedules as schedule_sql
from renewald.store.passthrough import gated_writes, reads, writes
from renewald.store.transactions import Transactions


class ScheduleMethods(Transactions):
    """Add, list, fire, pause, resume and remove schedules."""

    def add_schedule(
        self,
        *,
        schedule: schedule_sql.Schedule,
        platform: str = "renewald",
        conversation_status: str = "auto",
    ) -> schedule_sql.Schedule:
        """Insert a schedule, creating its conversation row (`auto`) when missing."""

        def tx(conn: Connection) -> schedule_sql.Schedule:
            schedule_sql.insert_schedule(
                conn,
                schedule=schedule,
                platform=platform,
                conversation_status=conversation_status,
            )
            found = schedule_sql.get_schedule(conn, schedule.schedule_id)
            assert found is not None
            return found

        return self.write(tx)

    get_schedule = reads(schedule_sql.get_schedule)
    list_schedules = reads(schedule_sql.list_schedules)

    def due_schedules(self, *, now: int, limit: int = 100) -> list[schedule_sql.Schedule]:
        return self.read(lambda conn: schedule_sql.due_schedules(conn, now=now, limit=limit))

    fire_schedule = gated_writes(schedule_sql.fire_schedule)
    advance_schedule = writes(schedule_sql.advance_schedule)

    def pause_schedule(self, schedule_id: str, *, now: int) -> bool:
        return self.write(
            lambda conn: schedule_sql.set_enabled(
                conn, schedule_id=schedule_id, enabled=False, now=now
            )
        )

    def resume_schedule(self, schedule_id: str, *, next_fire_at: int | None, now: int) -> bool:
        return self.write(
            lambda conn: schedule_sql.set_enabled(
                conn, schedule_id=schedule_id, enabled=True, now=now, next_fire_at=next_fire_at
            )
        )

    def remove_schedule(self, schedule_id: str) -> bool:
        return self.write(lambda conn: schedule_sql.delete_schedule(conn, schedule_id=schedule_id))
