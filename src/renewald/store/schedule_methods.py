"""The store's schedule methods (store/schedules.py)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

import renewald.store.schedules as schedule_sql
from renewald.store.models import NewJob
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

    def get_schedule(self, schedule_id: str) -> schedule_sql.Schedule | None:
        return self.read(lambda conn: schedule_sql.get_schedule(conn, schedule_id))

    def list_schedules(
        self, *, conversation: str | None = None, limit: int = 100
    ) -> list[schedule_sql.Schedule]:
        return self.read(
            lambda conn: schedule_sql.list_schedules(conn, conversation=conversation, limit=limit)
        )

    def due_schedules(self, *, now: int, limit: int = 100) -> list[schedule_sql.Schedule]:
        return self.read(lambda conn: schedule_sql.due_schedules(conn, now=now, limit=limit))

    def fire_schedule(
        self,
        *,
        schedule: schedule_sql.Schedule,
        new_jobs: Sequence[NewJob],
        next_fire_at: int | None,
        last_fire_at: int,
        now: int,
    ) -> schedule_sql.FireOutcome:
        return self.write(
            lambda conn: schedule_sql.fire_schedule(
                conn,
                backend=self.backend,
                schedule=schedule,
                new_jobs=new_jobs,
                next_fire_at=next_fire_at,
                last_fire_at=last_fire_at,
                now=now,
                dispatch_statuses=self.due.statuses,
            )
        )

    def advance_schedule(
        self,
        *,
        schedule_id: str,
        seen: int,
        next_fire_at: int | None,
        last_fire_at: int | None,
        now: int,
    ) -> bool:
        return self.write(
            lambda conn: schedule_sql.advance_schedule(
                conn,
                schedule_id=schedule_id,
                seen=seen,
                next_fire_at=next_fire_at,
                last_fire_at=last_fire_at,
                now=now,
            )
        )

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
