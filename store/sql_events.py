"""The event stream: seqs, appending events, reading a user's stream, read positions."""
from __future__ import annotations

from typing import Sequence

from store.models import GENERAL_CHAT, MAX_SEQ, ChatId, EventRecord, UserId
from store.sql_base import SqlTxBase


# A user's stream on PostgreSQL: per chat, a walk of the (chat_id, seq) index from the
# cursor (row comparisons, so that no plan can walk the seq index instead and skip past
# other chats' events), at most `lim` each, merged. Parameters: `?` for the expiry time
# (twice: events of the user's own, then the chats').
_PG_STREAM = (
    "SELECT seq, body FROM ("
    "(SELECT e.seq, e.body FROM events e WHERE e.user_id = {user} AND e.seq > {after}"
    " AND (e.expires_at IS NULL OR e.expires_at > ?)"
    " ORDER BY e.user_id, e.seq LIMIT {lim})"
    " UNION ALL"
    " SELECT x.seq, x.body FROM members m CROSS JOIN LATERAL ("
    "SELECT e.seq, e.body FROM events e"
    " WHERE (e.chat_id, e.seq) > (m.chat_id, GREATEST({after}, m.joined_seq))"
    f" AND (e.chat_id, e.seq) <= (m.chat_id, COALESCE(m.left_seq, {MAX_SEQ}))"
    " AND (e.expires_at IS NULL OR e.expires_at > ?)"
    " ORDER BY e.chat_id, e.seq LIMIT {lim}) AS x WHERE m.user_id = {user}"
    " UNION ALL"
    " SELECT x.seq, x.body FROM past_members p CROSS JOIN LATERAL ("
    "SELECT e.seq, e.body FROM events e"
    " WHERE (e.chat_id, e.seq) > (p.chat_id, GREATEST({after}, p.joined_seq))"
    " AND (e.chat_id, e.seq) <= (p.chat_id, p.left_seq)"
    " AND (e.expires_at IS NULL OR e.expires_at > ?)"
    " ORDER BY e.chat_id, e.seq LIMIT {lim}) AS x"
    " WHERE p.user_id = {user} AND p.left_seq > {after}"
    ") AS u ORDER BY seq LIMIT {lim}")


class EventsSql(SqlTxBase):
    """`SqlTx`, one area: the event stream (seqs, appending, reading) and read positions."""

    # -- events ----------------------------------------------------------------------------
    async def last_seq(self) -> int:
        """The newest event's seq (0 when there is none)."""
        r = await self.db.fetchone("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(r[0]) if r else 0

    async def issued_seq(self) -> int:
        """The highest seq ever handed out (0 for none), expired and purged events included:
        a cursor beyond it names an event that does not exist yet."""
        if self.db.dialect == "postgres":
            r = await self.db.fetchone(
                "SELECT COALESCE(pg_sequence_last_value('events_seq_seq'), 0)")
        else:
            r = await self.db.fetchone(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)")
        return max(int(r[0]) if r else 0, await self.last_seq())

    async def add_chat_event(self, chat_id: ChatId, type_: str, body: bytes,
                             message_id: str | None = None,
                             expires_at: float | None = None) -> int:
        """Append an event for every member of a chat; its seq."""
        seq = await self.db.insert(
            "INSERT INTO events (chat_id, type, body, message_id, expires_at)"
            " VALUES (?, ?, ?, ?, ?)", "seq", chat_id, type_, body.decode(), message_id,
            expires_at)
        self._chat_event_added(chat_id)
        return seq

    def _chat_event_added(self, chat_id: ChatId) -> None:
        if chat_id == GENERAL_CHAT:
            self.wakeups.everyone = True
        else:
            self.wakeups.chats.add(chat_id)

    async def add_user_event(self, user_id: UserId, type_: str, body: bytes) -> int:
        """Append an event addressed to one user (all of their clients); its seq."""
        seq = await self.db.insert("INSERT INTO events (user_id, type, body) VALUES (?, ?, ?)",
                                   "seq", user_id, type_, body.decode())
        self.wakeups.users.add(user_id)
        return seq

    async def read_events(self, user_id: UserId, after: int, limit: int,
                          now: float) -> list[EventRecord]:
        """The user's events with seq > after, oldest first, expired ones left out."""
        if self.db.dialect == "postgres":
            rows = await self.db.fetchall(
                "SELECT seq, body FROM (" + _PG_STREAM.format(user="?", after="?", lim="?")
                + ") AS s", user_id, after, now, limit, after, now, limit, user_id,
                after, now, limit, user_id, after, limit)
            return [EventRecord(int(r[0]), r[1].encode()) for r in rows]
        rows = await self.db.fetchall(
            "SELECT seq, body FROM ("
            " SELECT e.seq, e.body FROM events e WHERE e.user_id = ? AND e.seq > ?"
            " AND (e.expires_at IS NULL OR e.expires_at > ?)"
            " UNION ALL"
            " SELECT e.seq, e.body FROM members m JOIN events e ON e.chat_id = m.chat_id"
            " WHERE m.user_id = ? AND e.seq > ? AND e.seq > m.joined_seq"
            " AND (m.left_seq IS NULL OR e.seq <= m.left_seq)"
            " AND (e.expires_at IS NULL OR e.expires_at > ?)"
            " UNION ALL"
            " SELECT e.seq, e.body FROM past_members p JOIN events e ON e.chat_id = p.chat_id"
            " WHERE p.user_id = ? AND p.left_seq > ? AND e.seq > ? AND e.seq > p.joined_seq"
            " AND e.seq <= p.left_seq AND (e.expires_at IS NULL OR e.expires_at > ?)"
            ") AS s ORDER BY seq LIMIT ?",
            user_id, after, now, user_id, after, now, user_id, after, after, now, limit)
        return [EventRecord(int(r[0]), r[1].encode()) for r in rows]

    async def read_events_many(self, queries: Sequence[tuple[UserId, int, int]],
                               now: float) -> list[list[EventRecord]]:
        """`read_events` for several (user, after, limit) at once, in one snapshot and (on
        PostgreSQL) one round trip: what many polls woken by one commit need."""
        if self.db.dialect != "postgres":
            return [await self.read_events(u, after, limit, now) for u, after, limit in queries]
        rows = await self.db.fetchall(
            "SELECT q.i, s.seq, s.body FROM unnest(?::bigint[], ?::bigint[], ?::bigint[])"
            " WITH ORDINALITY AS q(user_id, after, lim, i) CROSS JOIN LATERAL ("
            + _PG_STREAM.format(user="q.user_id", after="q.after", lim="q.lim")
            + ") AS s ORDER BY q.i, s.seq",
            [q[0] for q in queries], [q[1] for q in queries], [q[2] for q in queries], now,
            now, now)
        out: list[list[EventRecord]] = [[] for _ in queries]
        for i, seq, body in rows:
            out[int(i) - 1].append(EventRecord(int(seq), body.encode()))
        return out

    # -- read positions --------------------------------------------------------------------
    async def read_position(self, user_id: UserId, chat_id: str) -> tuple[int, str] | None:
        """(seq, message_id) a user has read a chat up to with chats.read, if ever."""
        r = await self.db.fetchone(
            "SELECT seq, message_id FROM read_positions WHERE user_id = ? AND chat_id = ?",
            user_id, chat_id)
        return None if r is None else (int(r[0]), str(r[1]))

    async def read_positions(self, user_id: UserId) -> dict[str, str]:
        """Per chat, the message id a user has read up to."""
        rows = await self.db.fetchall(
            "SELECT chat_id, message_id FROM read_positions WHERE user_id = ?", user_id)
        return {str(r[0]): str(r[1]) for r in rows}

    async def set_read_position(self, user_id: UserId, chat_id: str, seq: int,
                                message_id: str) -> bool:
        """Move a user's read position in a chat forward (never back); whether it moved."""
        return bool(await self.db.execute(
            "INSERT INTO read_positions (user_id, chat_id, seq, message_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, chat_id) DO UPDATE SET seq = excluded.seq,"
            " message_id = excluded.message_id WHERE read_positions.seq < excluded.seq",
            user_id, chat_id, seq, message_id))

    async def add_read_event(self, user_id: UserId, body: bytes, expires_at: float) -> int:
        """A `read` event for one user (all their clients); purged once the message it
        names expires, so read receipts do not pile up."""
        seq = await self.db.insert(
            "INSERT INTO events (user_id, type, body, expires_at) VALUES (?, 'read', ?, ?)",
            "seq", user_id, body.decode(), expires_at)
        self.wakeups.users.add(user_id)
        return seq
