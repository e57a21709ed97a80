"""Domain operations in portable SQL, run through a small connection adapter per dialect."""
from __future__ import annotations

from typing import Any, Protocol, Sequence

from store.models import (
    GENERAL_CHAT, Chat, ChatId, EventRecord, FileId, JoinRequest, Member, MessageId,
    Scheduled, ScheduledId, Session, StoredFile, StoredMessage, User, UserId,
)

Row = Sequence[Any]


class Db(Protocol):
    """The few calls the SQL layer needs from a connection; `?` placeholders everywhere."""

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        ...

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        ...

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; the number of rows it changed."""
        ...


_USER_COLS = "user_id, username, pw_hash, read_seq, banned_until, created_at"
_CHAT_COLS = "chat_id, kind, title, owner_id, created_at"
_MSG_COLS = ("message_id, chat_id, author, author_id, text, attachments, comment_to, sent_at,"
             " expires_at, seq")
_SCHED_COLS = ("scheduled_id, user_id, chat_id, to_user, text, attachments, comment_to, send_at,"
               " created_at, state, message_id")
_FILE_COLS = "file_id, owner_id, name, size, content_type, path, created_at"


def _user(r: Row) -> User:
    return User(UserId(r[0]), r[1], r[2], r[3], r[4], r[5])


def _chat(r: Row) -> Chat:
    return Chat(ChatId(r[0]), r[1], r[2], None if r[3] is None else UserId(r[3]), r[4])


def _msg(r: Row) -> StoredMessage:
    return StoredMessage(MessageId(r[0]), ChatId(r[1]), r[2], UserId(r[3]), r[4], r[5],
                         None if r[6] is None else MessageId(r[6]), r[7], r[8], r[9])


def _sched(r: Row) -> Scheduled:
    return Scheduled(ScheduledId(r[0]), UserId(r[1]), None if r[2] is None else ChatId(r[2]),
                     r[3], r[4], r[5], None if r[6] is None else MessageId(r[6]), r[7], r[8],
                     r[9], None if r[10] is None else MessageId(r[10]))


def _file(r: Row) -> StoredFile:
    return StoredFile(FileId(r[0]), UserId(r[1]), r[2], r[3], r[4], r[5], r[6])


def username_key(username: str) -> str:
    """Usernames are unique case-insensitively."""
    return username.casefold()


class Wakeups:
    """Whom a transaction's events concern, so pollers are woken after it commits."""

    def __init__(self) -> None:
        self.everyone = False
        self.users: set[int] = set()
        # Chats whose members to wake; resolved to users after the commit, and only when
        # someone is waiting at all (a send with nobody polling costs no member lookup).
        self.chats: set[str] = set()

    def merge(self, other: "Wakeups") -> None:
        """Add another transaction's wakeups."""
        self.everyone = self.everyone or other.everyone
        self.users |= other.users
        self.chats |= other.chats


class SqlTx:
    """One unit of work: reads and writes as typed operations, no SQL outside this class."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.wakeups = Wakeups()

    # -- users ---------------------------------------------------------------------------
    async def find_user(self, username: str) -> User | None:
        """A user by name (case-insensitive)."""
        r = await self.db.fetchone(f"SELECT {_USER_COLS} FROM users WHERE username_key = ?",
                                   username_key(username))
        return None if r is None else _user(r)

    async def get_user(self, user_id: UserId) -> User | None:
        """A user by id."""
        r = await self.db.fetchone(f"SELECT {_USER_COLS} FROM users WHERE user_id = ?", user_id)
        return None if r is None else _user(r)

    async def create_user(self, username: str, pw_hash: str, now: float) -> User | None:
        """Register a user and join them to the general chat; None if the name is taken."""
        changed = await self.db.execute(
            "INSERT INTO users (username, username_key, pw_hash, read_seq, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (username_key) DO NOTHING",
            username, username_key(username), pw_hash, await self.last_seq(), now)
        if not changed:
            return None
        user = await self.find_user(username)
        assert user is not None
        await self.add_member(GENERAL_CHAT, user.user_id, now)
        return user

    async def set_read_marker(self, user_id: UserId, seq: int) -> None:
        """Move the user's read marker forward (never back)."""
        await self.db.execute("UPDATE users SET read_seq = ? WHERE user_id = ? AND read_seq < ?",
                              seq, user_id, seq)

    async def set_banned_until(self, user_id: UserId, until: float | None) -> None:
        """Ban a user until a time, or lift the ban (None)."""
        await self.db.execute("UPDATE users SET banned_until = ? WHERE user_id = ?",
                              until, user_id)

    # -- sessions ------------------------------------------------------------------------
    async def create_session(self, token_hash: str, user_id: UserId, client: str | None,
                             now: float) -> None:
        """Store a new session under the hash of its token."""
        await self.db.execute(
            "INSERT INTO sessions (token_hash, user_id, client, created_at, last_seen)"
            " VALUES (?, ?, ?, ?, ?)", token_hash, user_id, client, now, now)

    async def get_session(self, token_hash: str) -> Session | None:
        """The session a token hash names, with its user's name."""
        r = await self.db.fetchone(
            "SELECT s.token_hash, s.user_id, u.username, s.client, s.created_at, s.last_seen"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id WHERE s.token_hash = ?",
            token_hash)
        if r is None:
            return None
        return Session(r[0], UserId(r[1]), r[2], r[3], r[4], r[5])

    async def touch_session(self, token_hash: str, now: float) -> None:
        """Record that a session was used."""
        await self.db.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                              now, token_hash)

    async def delete_session(self, token_hash: str) -> bool:
        """End a session; whether it existed."""
        return bool(await self.db.execute("DELETE FROM sessions WHERE token_hash = ?",
                                          token_hash))

    async def delete_idle_sessions(self, before: float) -> int:
        """End sessions unused since `before`."""
        return await self.db.execute("DELETE FROM sessions WHERE last_seen < ?", before)

    async def users_online(self, since: float) -> int:
        """Distinct users with a session used since a time."""
        r = await self.db.fetchone(
            "SELECT COUNT(DISTINCT user_id) FROM sessions WHERE last_seen >= ?", since)
        return int(r[0]) if r else 0

    async def list_sessions(self, user_id: UserId) -> list[Session]:
        """A user's sessions, oldest first."""
        rows = await self.db.fetchall(
            "SELECT s.token_hash, s.user_id, u.username, s.client, s.created_at, s.last_seen"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id WHERE s.user_id = ?"
            " ORDER BY s.created_at", user_id)
        return [Session(r[0], UserId(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    # -- chats and members ---------------------------------------------------------------
    async def get_chat(self, chat_id: str) -> Chat | None:
        """A chat by id."""
        r = await self.db.fetchone(f"SELECT {_CHAT_COLS} FROM chats WHERE chat_id = ?", chat_id)
        return None if r is None else _chat(r)

    async def create_chat(self, chat: Chat, direct_key: str | None = None) -> bool:
        """Create a chat; False if a direct chat with that key already exists."""
        return bool(await self.db.execute(
            f"INSERT INTO chats ({_CHAT_COLS}, direct_key) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            chat.chat_id, chat.kind, chat.title, chat.owner_id, chat.created_at, direct_key))

    async def find_direct_chat(self, direct_key: str) -> Chat | None:
        """The 1-to-1 chat of a pair of users."""
        r = await self.db.fetchone(f"SELECT {_CHAT_COLS} FROM chats WHERE direct_key = ?",
                                   direct_key)
        return None if r is None else _chat(r)

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
        m = await self.get_member(chat_id, user_id)
        return m is not None and m.active

    async def add_member(self, chat_id: ChatId, user_id: UserId, now: float) -> None:
        """Make a user a member from the next event on."""
        seq = await self.last_seq()
        await self.db.execute(
            "INSERT INTO members (chat_id, user_id, joined_seq, left_seq, joined_at)"
            " VALUES (?, ?, ?, NULL, ?) ON CONFLICT (user_id, chat_id) DO UPDATE"
            " SET joined_seq = excluded.joined_seq, left_seq = NULL,"
            " joined_at = excluded.joined_at",
            chat_id, user_id, seq, now)

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
            f"SELECT {', '.join('c.' + c for c in _CHAT_COLS.split(', '))} FROM members m"
            " JOIN chats c ON c.chat_id = m.chat_id"
            " WHERE m.user_id = ? AND m.left_seq IS NULL ORDER BY m.joined_seq", user_id)
        chats = [_chat(r) for r in rows]
        return sorted(chats, key=lambda c: c.kind != "general")

    async def set_link(self, chat_id: ChatId, link_hash: str | None) -> None:
        """Replace a chat's join link (the previous one stops working)."""
        await self.db.execute("UPDATE chats SET link_hash = ? WHERE chat_id = ?",
                              link_hash, chat_id)

    async def chat_by_link(self, link_hash: str) -> Chat | None:
        """The chat whose live link has this hash."""
        r = await self.db.fetchone(f"SELECT {_CHAT_COLS} FROM chats WHERE link_hash = ?",
                                   link_hash)
        return None if r is None else _chat(r)

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

    # -- events --------------------------------------------------------------------------
    async def last_seq(self) -> int:
        """The newest event's seq (0 when there is none)."""
        r = await self.db.fetchone("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(r[0]) if r else 0

    async def add_chat_event(self, chat_id: ChatId, type_: str, body: bytes,
                             message_id: str | None = None,
                             expires_at: float | None = None) -> int:
        """Append an event for every member of a chat; its seq."""
        r = await self.db.fetchone(
            "INSERT INTO events (chat_id, type, body, message_id, expires_at)"
            " VALUES (?, ?, ?, ?, ?) RETURNING seq",
            chat_id, type_, body.decode(), message_id, expires_at)
        assert r is not None
        if chat_id == GENERAL_CHAT:
            self.wakeups.everyone = True
        else:
            self.wakeups.chats.add(chat_id)
        return int(r[0])

    async def add_user_event(self, user_id: UserId, type_: str, body: bytes) -> int:
        """Append an event addressed to one user (all of their clients); its seq."""
        r = await self.db.fetchone(
            "INSERT INTO events (user_id, type, body) VALUES (?, ?, ?) RETURNING seq",
            user_id, type_, body.decode())
        assert r is not None
        self.wakeups.users.add(user_id)
        return int(r[0])

    async def read_events(self, user_id: UserId, after: int, limit: int,
                          now: float) -> list[EventRecord]:
        """The user's events with seq > after, oldest first, expired ones left out."""
        rows = await self.db.fetchall(
            "SELECT seq, body FROM ("
            " SELECT e.seq, e.body FROM events e WHERE e.user_id = ? AND e.seq > ?"
            " UNION ALL"
            " SELECT e.seq, e.body FROM members m JOIN events e ON e.chat_id = m.chat_id"
            " WHERE m.user_id = ? AND e.seq > ? AND e.seq > m.joined_seq"
            " AND (m.left_seq IS NULL OR e.seq <= m.left_seq)"
            " AND (e.expires_at IS NULL OR e.expires_at > ?)"
            ") AS s ORDER BY seq LIMIT ?",
            user_id, after, user_id, after, now, limit)
        return [EventRecord(int(r[0]), r[1].encode()) for r in rows]

    async def unread_counts(self, user_id: UserId, after: int, now: float) -> dict[str, int]:
        """Per chat, the live messages of others after the read marker that the user may see."""
        rows = await self.db.fetchall(
            "SELECT m.chat_id, COUNT(e.seq) FROM members m JOIN events e"
            " ON e.chat_id = m.chat_id AND e.type = 'message'"
            " JOIN messages msg ON msg.message_id = e.message_id AND msg.author_id <> ?"
            " WHERE m.user_id = ? AND m.left_seq IS NULL AND e.seq > ? AND e.seq > m.joined_seq"
            " AND e.expires_at > ? GROUP BY m.chat_id", user_id, user_id, after, now)
        return {r[0]: int(r[1]) for r in rows}

    # -- messages ------------------------------------------------------------------------
    async def insert_message(self, m: StoredMessage, event_body: bytes) -> StoredMessage:
        """Store a message and its `message` event; the message with its seq."""
        seq = await self.add_chat_event(m.chat_id, "message", event_body, m.message_id,
                                        m.expires_at)
        await self.db.execute(
            f"INSERT INTO messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            m.message_id, m.chat_id, m.author, m.author_id, m.text, m.attachments,
            m.comment_to, m.sent_at, m.expires_at, seq)
        return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                             m.attachments, m.comment_to, m.sent_at, m.expires_at, seq)

    async def get_message(self, message_id: str, now: float) -> StoredMessage | None:
        """A live (unexpired) message by id."""
        r = await self.db.fetchone(
            f"SELECT {_MSG_COLS} FROM messages WHERE message_id = ? AND expires_at > ?",
            message_id, now)
        return None if r is None else _msg(r)

    async def history(self, chat_id: str, before_seq: int | None, limit: int,
                      now: float, after_seq: int = 0) -> list[StoredMessage]:
        """Up to `limit` live messages of a chat before a seq, oldest first."""
        rows = await self.db.fetchall(
            f"SELECT {_MSG_COLS} FROM messages WHERE chat_id = ? AND seq < ? AND seq > ?"
            " AND expires_at > ? ORDER BY seq DESC LIMIT ?",
            chat_id, before_seq if before_seq is not None else 2 ** 62, after_seq, now, limit)
        return [_msg(r) for r in reversed(rows)]

    # -- quota ---------------------------------------------------------------------------
    async def quota_used(self, user_id: UserId, window_start: float) -> int:
        """Messages counted against the user's general-chat quota in a window."""
        r = await self.db.fetchone(
            "SELECT used FROM quota WHERE user_id = ? AND window_start = ?",
            user_id, window_start)
        return int(r[0]) if r else 0

    async def quota_add(self, user_id: UserId, window_start: float) -> None:
        """Count one more message in the window (older windows are dropped)."""
        await self.db.execute("DELETE FROM quota WHERE user_id = ? AND window_start < ?",
                              user_id, window_start)
        await self.db.execute(
            "INSERT INTO quota (user_id, window_start, used) VALUES (?, ?, 1)"
            " ON CONFLICT (user_id, window_start) DO UPDATE SET used = quota.used + 1",
            user_id, window_start)

    # -- reports -------------------------------------------------------------------------
    async def add_report(self, reported: UserId, reporter: UserId, reason: str | None,
                         now: float) -> bool:
        """Record a report; False if this reporter already reported this user."""
        return bool(await self.db.execute(
            "INSERT INTO reports (reported_id, reporter_id, reason, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", reported, reporter, reason, now))

    async def count_reports(self, reported: UserId) -> int:
        """Distinct reporters of a user since their reports were last reset."""
        r = await self.db.fetchone("SELECT COUNT(*) FROM reports WHERE reported_id = ?",
                                   reported)
        return int(r[0]) if r else 0

    async def clear_reports(self, reported: UserId) -> None:
        """Reset a user's reports (a ban started)."""
        await self.db.execute("DELETE FROM reports WHERE reported_id = ?", reported)

    # -- scheduled -----------------------------------------------------------------------
    async def insert_scheduled(self, s: Scheduled) -> None:
        """Store a pending scheduled message."""
        await self.db.execute(
            f"INSERT INTO scheduled ({_SCHED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            s.scheduled_id, s.user_id, s.chat_id, s.to_user, s.text, s.attachments,
            s.comment_to, s.send_at, s.created_at, s.state, s.message_id)

    async def get_scheduled(self, scheduled_id: str) -> Scheduled | None:
        """A scheduled message by id, whatever its state."""
        r = await self.db.fetchone(f"SELECT {_SCHED_COLS} FROM scheduled WHERE scheduled_id = ?",
                                   scheduled_id)
        return None if r is None else _sched(r)

    async def pending_scheduled(self, user_id: UserId) -> list[Scheduled]:
        """A user's pending scheduled messages, soonest first."""
        rows = await self.db.fetchall(
            f"SELECT {_SCHED_COLS} FROM scheduled WHERE user_id = ? AND state = 'pending'"
            " ORDER BY send_at, created_at", user_id)
        return [_sched(r) for r in rows]

    async def due_scheduled(self, now: float, limit: int) -> list[Scheduled]:
        """Pending scheduled messages whose time has come, oldest first."""
        rows = await self.db.fetchall(
            f"SELECT {_SCHED_COLS} FROM scheduled WHERE state = 'pending' AND send_at <= ?"
            " ORDER BY send_at LIMIT ?", now, limit)
        return [_sched(r) for r in rows]

    async def next_scheduled_time(self) -> float | None:
        """When the soonest pending scheduled message is due."""
        r = await self.db.fetchone("SELECT MIN(send_at) FROM scheduled WHERE state = 'pending'")
        return None if r is None or r[0] is None else float(r[0])

    async def finish_scheduled(self, scheduled_id: str, state: str,
                               message_id: str | None) -> bool:
        """Move a pending schedule to sent/cancelled; False if it was no longer pending."""
        return bool(await self.db.execute(
            "UPDATE scheduled SET state = ?, message_id = ? WHERE scheduled_id = ?"
            " AND state = 'pending'", state, message_id, scheduled_id))

    # -- files ---------------------------------------------------------------------------
    async def insert_file(self, f: StoredFile) -> None:
        """Record an uploaded file."""
        await self.db.execute(
            f"INSERT INTO files ({_FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            f.file_id, f.owner_id, f.name, f.size, f.content_type, f.path, f.created_at)

    async def file_ids(self) -> set[str]:
        """Every file id the database knows."""
        return {r[0] for r in await self.db.fetchall("SELECT file_id FROM files")}

    async def get_file(self, file_id: str) -> StoredFile | None:
        """A file's metadata."""
        r = await self.db.fetchone(f"SELECT {_FILE_COLS} FROM files WHERE file_id = ?", file_id)
        return None if r is None else _file(r)

    async def attach_file(self, message_id: MessageId, file_id: FileId, chat_id: ChatId) -> None:
        """Record that a file was sent in a message of a chat."""
        await self.db.execute(
            "INSERT INTO message_files (message_id, file_id, chat_id) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING", message_id, file_id, chat_id)

    async def may_read_file(self, file_id: str, user_id: UserId, now: float) -> bool:
        """The uploader, or a member of a chat where a live message carries the file."""
        r = await self.db.fetchone(
            "SELECT 1 FROM files WHERE file_id = ? AND owner_id = ?"
            " UNION ALL SELECT 1 FROM message_files f"
            " JOIN messages msg ON msg.message_id = f.message_id AND msg.expires_at > ?"
            " JOIN members m ON m.chat_id = f.chat_id AND m.user_id = ? AND m.left_seq IS NULL"
            " WHERE f.file_id = ? LIMIT 1", file_id, user_id, now, user_id, file_id)
        return r is not None

    # -- expiry --------------------------------------------------------------------------
    async def purge_expired(self, now: float, unsent_file_before: float) -> list[str]:
        """Delete expired messages and their events, and files nobody can reach any more.

        Returns the disk paths of the deleted files, to be removed after the commit.
        """
        await self.db.execute("DELETE FROM events WHERE expires_at IS NOT NULL"
                              " AND expires_at <= ?", now)
        await self.db.execute(
            "DELETE FROM message_files WHERE message_id IN"
            " (SELECT message_id FROM messages WHERE expires_at <= ?)", now)
        await self.db.execute("DELETE FROM messages WHERE expires_at <= ?", now)
        rows = await self.db.fetchall(
            "SELECT file_id, path FROM files f WHERE created_at <= ? AND NOT EXISTS"
            " (SELECT 1 FROM message_files mf WHERE mf.file_id = f.file_id) AND NOT EXISTS"
            " (SELECT 1 FROM scheduled s WHERE s.state = 'pending'"
            "  AND s.attachments LIKE '%' || f.file_id || '%')", unsent_file_before)
        for r in rows:
            await self.db.execute("DELETE FROM files WHERE file_id = ?", r[0])
        return [r[1] for r in rows]

    # -- login throttling ----------------------------------------------------------------
    async def add_login_failure(self, key: str, now: float) -> None:
        """Record a failed login for a username or address key."""
        await self.db.execute("INSERT INTO login_failures (key, at) VALUES (?, ?)", key, now)

    async def login_failures(self, key: str, since: float) -> list[float]:
        """Times of failed logins for a key since a time, oldest first."""
        rows = await self.db.fetchall(
            "SELECT at FROM login_failures WHERE key = ? AND at > ? ORDER BY at", key, since)
        return [float(r[0]) for r in rows]

    async def clear_login_failures(self, key: str) -> None:
        """Forget failures for a key (after a correct login)."""
        await self.db.execute("DELETE FROM login_failures WHERE key = ?", key)

    async def prune_login_failures(self, before: float) -> None:
        """Forget failures older than a time."""
        await self.db.execute("DELETE FROM login_failures WHERE at < ?", before)
