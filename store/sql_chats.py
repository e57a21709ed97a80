"""Chats, members, join links, join requests and blocks."""
from __future__ import annotations

from store.models import Chat, ChatId, JoinRequest, Member, UserId
from store.sql_base import CHAT_COLS, chat_from
from store.sql_events import EventsSql

# Ended memberships kept per user and chat (each costs that user's polls one index probe);
# with leave-and-come-back loops merged, only interleaved activity makes more of them.
PAST_MEMBERSHIPS = 50


class ChatsSql(EventsSql):
    """`SqlTx`, one area: chats, members, join links, join requests and blocks."""

    # -- chats and members -----------------------------------------------------------------
    async def get_chat(self, chat_id: str) -> Chat | None:
        """A chat by id."""
        if self._memo and ("chat", chat_id) in self._memo:
            return self._memo.pop(("chat", chat_id))  # type: ignore[no-any-return]
        r = await self.db.fetchone(f"SELECT {CHAT_COLS} FROM chats WHERE chat_id = ?", chat_id)
        return None if r is None else chat_from(r)

    async def create_chat(self, chat: Chat, direct_key: str | None = None) -> bool:
        """Create a chat; False if a direct chat with that key already exists."""
        return bool(await self.db.execute(
            f"INSERT INTO chats ({CHAT_COLS}, direct_key) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            chat.chat_id, chat.kind, chat.title, chat.owner_id, chat.created_at, direct_key))

    async def find_direct_chat(self, direct_key: str) -> Chat | None:
        """The 1-to-1 chat of a pair of users."""
        r = await self.db.fetchone(f"SELECT {CHAT_COLS} FROM chats WHERE direct_key = ?",
                                   direct_key)
        return None if r is None else chat_from(r)

    async def direct_pair(self, chat_id: str) -> list[UserId]:
        """The two users (one, for a note to self) of a direct chat."""
        r = await self.db.fetchone("SELECT direct_key FROM chats WHERE chat_id = ?", chat_id)
        if r is None or r[0] is None:
            return []
        return [UserId(int(u)) for u in sorted(set(r[0].split(":")))]

    async def set_chat_owner(self, chat_id: ChatId, owner_id: UserId | None) -> None:
        """Hand a chat to another owner (None: nobody owns it any more)."""
        await self.db.execute("UPDATE chats SET owner_id = ? WHERE chat_id = ?",
                              owner_id, chat_id)

    async def get_member(self, chat_id: str, user_id: UserId) -> Member | None:
        """A user's membership row of a chat (active or not)."""
        r = await self.db.fetchone(
            "SELECT chat_id, user_id, joined_seq, left_seq, joined_at FROM members"
            " WHERE user_id = ? AND chat_id = ?", user_id, chat_id)
        return None if r is None else Member(ChatId(r[0]), UserId(r[1]), r[2], r[3], r[4])

    async def is_member(self, chat_id: str, user_id: UserId) -> bool:
        """Whether the user is currently a member."""
        if self._memo and ("member", chat_id, user_id) in self._memo:
            return bool(self._memo.pop(("member", chat_id, user_id)))
        m = await self.get_member(chat_id, user_id)
        return m is not None and m.active

    async def add_member(self, chat_id: ChatId, user_id: UserId, now: float) -> None:
        """Make a user a member from the next event on.

        Someone coming back to a chat they left keeps the events of their old membership
        that they have not polled yet (a client of theirs may be offline), and gets none
        of those in between: the old membership is kept as a past one (`past_members`,
        which `read_events` reads too). They count as joining now (member order, heirs).
        """
        seq = await self.last_seq()
        r = await self.db.fetchone(
            "SELECT joined_seq, left_seq FROM members WHERE chat_id = ? AND user_id = ?",
            chat_id, user_id)
        if r is not None and r[1] is not None and int(r[1]) > int(r[0]):
            await self._keep_past_membership(chat_id, user_id, int(r[0]), int(r[1]), now)
        await self.db.execute(
            "INSERT INTO members (chat_id, user_id, joined_seq, left_seq, joined_at)"
            " VALUES (?, ?, ?, NULL, ?) ON CONFLICT (user_id, chat_id) DO UPDATE"
            " SET joined_seq = excluded.joined_seq, left_seq = NULL,"
            " joined_at = excluded.joined_at",
            chat_id, user_id, seq, now)

    async def _keep_past_membership(self, chat_id: ChatId, user_id: UserId, joined: int,
                                    left: int, now: float) -> None:
        """Record an ended membership (joined, left]. It extends the user's previous one in
        the chat when nothing happened there in between (leaving and coming back in a loop
        keeps one row), and a user keeps at most PAST_MEMBERSHIPS of them per chat."""
        last = await self.db.fetchone(
            "SELECT joined_seq, left_seq FROM past_members WHERE user_id = ? AND chat_id = ?"
            " ORDER BY joined_seq DESC LIMIT 1", user_id, chat_id)
        if last is not None:
            between = await self.db.fetchone(
                "SELECT 1 FROM events WHERE chat_id = ? AND seq > ? AND seq <= ? LIMIT 1",
                chat_id, int(last[1]), joined)
            if between is None:
                await self.db.execute(
                    "UPDATE past_members SET left_seq = ?, resumed_at = ?"
                    " WHERE user_id = ? AND chat_id = ? AND joined_seq = ?",
                    left, now, user_id, chat_id, int(last[0]))
                return
        await self.db.execute(
            "INSERT INTO past_members (user_id, chat_id, joined_seq, left_seq, resumed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            user_id, chat_id, joined, left, now)
        await self.db.execute(
            "DELETE FROM past_members WHERE user_id = ? AND chat_id = ? AND joined_seq <"
            " (SELECT joined_seq FROM past_members WHERE user_id = ? AND chat_id = ?"
            " ORDER BY joined_seq DESC LIMIT 1 OFFSET ?)",
            user_id, chat_id, user_id, chat_id, PAST_MEMBERSHIPS - 1)

    async def remove_member(self, chat_id: ChatId, user_id: UserId) -> None:
        """End a membership after the last event so far (which the leaver still sees)."""
        self.wakeups.users.add(user_id)
        await self.db.execute(
            "UPDATE members SET left_seq = ? WHERE chat_id = ? AND user_id = ?"
            " AND left_seq IS NULL", await self.last_seq(), chat_id, user_id)

    async def member_names(self, chat_id: str) -> list[str]:
        """Usernames of the current members, in the order they joined."""
        rows = await self.db.fetchall(
            "SELECT u.username FROM members m JOIN users u ON u.user_id = m.user_id"
            " WHERE m.chat_id = ? AND m.left_seq IS NULL ORDER BY m.joined_seq, u.user_id",
            chat_id)
        return [r[0] for r in rows]

    async def member_ids(self, chat_id: str) -> list[UserId]:
        """Ids of the current members, in the order they joined."""
        rows = await self.db.fetchall(
            "SELECT user_id FROM members WHERE chat_id = ? AND left_seq IS NULL"
            " ORDER BY joined_seq, user_id", chat_id)
        return [UserId(r[0]) for r in rows]

    async def user_chats(self, user_id: UserId) -> list[Chat]:
        """The chats a user currently belongs to, general first."""
        rows = await self.db.fetchall(
            f"SELECT {', '.join('c.' + c for c in CHAT_COLS.split(', '))} FROM members m"
            " JOIN chats c ON c.chat_id = m.chat_id"
            " WHERE m.user_id = ? AND m.left_seq IS NULL ORDER BY m.joined_seq", user_id)
        chats = [chat_from(r) for r in rows]
        return sorted(chats, key=lambda c: c.kind != "general")

    # -- links and join requests -----------------------------------------------------------
    async def set_link(self, chat_id: ChatId, link_hash: str | None) -> None:
        """Replace a chat's join link (the previous one stops working)."""
        await self.db.execute("UPDATE chats SET link_hash = ? WHERE chat_id = ?",
                              link_hash, chat_id)

    async def chat_by_link(self, link_hash: str) -> Chat | None:
        """The chat whose live link has this hash."""
        r = await self.db.fetchone(f"SELECT {CHAT_COLS} FROM chats WHERE link_hash = ?",
                                   link_hash)
        return None if r is None else chat_from(r)

    async def add_join_request(self, chat_id: ChatId, user_id: UserId, now: float) -> bool:
        """Record a pending join request; False if one is already pending."""
        return bool(await self.db.execute(
            "INSERT INTO join_requests (chat_id, user_id, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING", chat_id, user_id, now))

    async def take_join_request(self, chat_id: ChatId, user_id: UserId) -> bool:
        """Remove a pending request; whether there was one."""
        return bool(await self.db.execute(
            "DELETE FROM join_requests WHERE chat_id = ? AND user_id = ?", chat_id, user_id))

    async def join_requests(self, chat_id: ChatId) -> list[JoinRequest]:
        """Pending requests of a chat, oldest first."""
        rows = await self.db.fetchall(
            "SELECT j.chat_id, j.user_id, u.username, j.created_at FROM join_requests j"
            " JOIN users u ON u.user_id = j.user_id WHERE j.chat_id = ? ORDER BY j.created_at",
            chat_id)
        return [JoinRequest(ChatId(r[0]), UserId(r[1]), r[2], r[3]) for r in rows]

    # -- blocks ----------------------------------------------------------------------------
    async def block(self, blocker: UserId, blocked: UserId, now: float) -> None:
        """`blocker` blocks `blocked` (again is a no-op)."""
        await self.db.execute(
            "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING", blocker, blocked, now)

    async def unblock(self, blocker: UserId, blocked: UserId) -> None:
        """Lift a block (none is a no-op)."""
        await self.db.execute("DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?",
                              blocker, blocked)

    async def blocks(self, blocker: UserId, blocked: UserId) -> bool:
        """Whether `blocker` blocks `blocked`."""
        r = await self.db.fetchone(
            "SELECT 1 FROM blocks WHERE blocker_id = ? AND blocked_id = ?", blocker, blocked)
        return r is not None

    async def blocked_names(self, blocker: UserId) -> list[str]:
        """Usernames a user blocks, in the order they were blocked."""
        rows = await self.db.fetchall(
            "SELECT u.username FROM blocks b JOIN users u ON u.user_id = b.blocked_id"
            " WHERE b.blocker_id = ? ORDER BY b.created_at, u.user_id", blocker)
        return [r[0] for r in rows]
