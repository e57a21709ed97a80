"""Scheduled messages."""
from __future__ import annotations

import orjson

from store.models import Scheduled, UserId
from store.sql_base import SCHED_COLS, SqlTxBase, scheduled_from


class ScheduledSql(SqlTxBase):
    """`SqlTx`, one area: scheduled messages."""

    # -- scheduled -------------------------------------------------------------------------
    async def insert_scheduled(self, s: Scheduled) -> None:
        """Store a pending scheduled message."""
        await self.db.execute(
            f"INSERT INTO scheduled ({SCHED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            s.scheduled_id, s.user_id, s.chat_id, s.to_user, s.text, s.attachments,
            s.comment_to, s.send_at, s.created_at, s.state, s.message_id)
        # Its files stay while it is pending; the purge finds them here by index.
        for file_id in set(orjson.loads(s.attachments)):
            await self.db.execute(
                "INSERT INTO scheduled_files (scheduled_id, file_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING", s.scheduled_id, file_id)

    async def count_pending_scheduled(self, user_id: UserId) -> int:
        """How many scheduled messages of a user are pending."""
        r = await self.db.fetchone(
            "SELECT COUNT(*) FROM scheduled WHERE user_id = ? AND state = 'pending'", user_id)
        return int(r[0]) if r else 0

    async def get_scheduled(self, scheduled_id: str) -> Scheduled | None:
        """A scheduled message by id, whatever its state."""
        r = await self.db.fetchone(f"SELECT {SCHED_COLS} FROM scheduled WHERE scheduled_id = ?",
                                   scheduled_id)
        return None if r is None else scheduled_from(r)

    async def pending_scheduled(self, user_id: UserId) -> list[Scheduled]:
        """A user's pending scheduled messages, soonest first."""
        rows = await self.db.fetchall(
            f"SELECT {SCHED_COLS} FROM scheduled WHERE user_id = ? AND state = 'pending'"
            " ORDER BY send_at, created_at", user_id)
        return [scheduled_from(r) for r in rows]

    async def due_scheduled(self, now: float, limit: int) -> list[Scheduled]:
        """Pending scheduled messages whose time has come, oldest first."""
        rows = await self.db.fetchall(
            f"SELECT {SCHED_COLS} FROM scheduled WHERE state = 'pending' AND send_at <= ?"
            " ORDER BY send_at LIMIT ?", now, limit)
        return [scheduled_from(r) for r in rows]

    async def next_scheduled_time(self) -> float | None:
        """When the soonest pending scheduled message is due."""
        r = await self.db.fetchone("SELECT MIN(send_at) FROM scheduled WHERE state = 'pending'")
        return None if r is None or r[0] is None else float(r[0])

    async def finish_scheduled(self, scheduled_id: str, state: str,
                               message_id: str | None) -> bool:
        """Move a pending schedule to sent/cancelled; False if it was no longer pending."""
        changed = bool(await self.db.execute(
            "UPDATE scheduled SET state = ?, message_id = ? WHERE scheduled_id = ?"
            " AND state = 'pending'", state, message_id, scheduled_id))
        if changed:  # its files are now kept by the message sent, or by nothing
            await self.db.execute("DELETE FROM scheduled_files WHERE scheduled_id = ?",
                                  scheduled_id)
        return changed
