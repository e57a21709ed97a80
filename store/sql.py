"""Domain operations in portable SQL, run through a small connection adapter per dialect."""
from __future__ import annotations

import asyncio
from typing import Any, Protocol, Sequence

import orjson

from store.models import (
    GENERAL_CHAT, MAX_SEQ, Chat, ChatId, EventRecord, FileId, JoinRequest, Member, MessageId,
    Scheduled, ScheduledId, Session, StoredFile, StoredMessage, User, UserId,
)
from store.sql_messages import (
    RECENT_SCAN, SEARCH_CHUNK_MAX, UNREAD_CAP, fts5_query, msg_cols, search_words,
)

Row = Sequence[Any]


class Db(Protocol):
    """The few calls the SQL layer needs from a connection; `?` placeholders everywhere."""

    dialect: str  # "sqlite" or "postgres", for the rare query that cannot be portable

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        ...

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        ...

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run a statement once per row of arguments (pipelined where the driver can)."""
        ...


_USER_COLS = "user_id, username, pw_hash, read_seq, banned_until, created_at"
_CHAT_COLS = "chat_id, kind, title, owner_id, created_at"
_MSG_COLS = ("message_id, chat_id, author, author_id, text, attachments, comment_to, sent_at,"
             " expires_at, seq, edited_at")
_SCHED_COLS = ("scheduled_id, user_id, chat_id, to_user, text, attachments, comment_to, send_at,"
               " created_at, state, message_id")
_FILE_COLS = "file_id, owner_id, name, size, content_type, path, created_at"


def _user(r: Row) -> User:
    return User(UserId(r[0]), r[1], r[2], r[3], r[4], r[5])


def _chat(r: Row) -> Chat:
    return Chat(ChatId(r[0]), r[1], r[2], None if r[3] is None else UserId(r[3]), r[4])


def _msg(r: Row) -> StoredMessage:
    return StoredMessage(MessageId(r[0]), ChatId(r[1]), r[2], UserId(r[3]), r[4], r[5],
                         None if r[6] is None else MessageId(r[6]), r[7], r[8], r[9], r[10])


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
        # Sessions (token hashes) that ended: their parked polls answer 401.
        self.ended: set[str] = set()

    def merge(self, other: "Wakeups") -> None:
        """Add another transaction's wakeups."""
        self.everyone = self.everyone or other.everyone
        self.users |= other.users
        self.ended |= other.ended
        self.chats |= other.chats


# A user's stream on PostgreSQL: per chat, a walk of the (chat_id, seq) index from the
# cursor (row comparisons, so that no plan can walk the seq index instead and skip past
# other chats' events), at most `lim` each, merged. Parameters: `?` for the expiry time.
_PG_STREAM = (
    "SELECT seq, body FROM ("
    "(SELECT e.seq, e.body FROM events e WHERE e.user_id = {user} AND e.seq > {after}"
    " ORDER BY e.user_id, e.seq LIMIT {lim})"
    " UNION ALL"
    " SELECT x.seq, x.body FROM members m CROSS JOIN LATERAL ("
    "SELECT e.seq, e.body FROM events e"
    " WHERE (e.chat_id, e.seq) > (m.chat_id, GREATEST({after}, m.joined_seq))"
    f" AND (e.chat_id, e.seq) <= (m.chat_id, COALESCE(m.left_seq, {MAX_SEQ}))"
    " AND (e.expires_at IS NULL OR e.expires_at > ?)"
    " ORDER BY e.chat_id, e.seq LIMIT {lim}) AS x WHERE m.user_id = {user}"
    ") AS u ORDER BY seq LIMIT {lim}")
FILE_IN_DATABASE = "database"  # a files row's path when its bytes are in file_chunks
SendKey = tuple[UserId, "str | None", "str | None"]  # author, chat_id, client_msg_id
_SEND_COLS = (f"{msg_cols('u', _USER_COLS)}, {msg_cols('c', _CHAT_COLS)},"
              " mb.user_id IS NOT NULL AND mb.left_seq IS NULL, "
              f"{msg_cols('cm', _MSG_COLS)}")


_DEFERRED_MESSAGE = (
    "WITH e AS (INSERT INTO events (seq, chat_id, type, body, message_id, expires_at)"
    " VALUES (?, ?, 'message', ?, ?, ?))"
    f" INSERT INTO messages ({_MSG_COLS}, client_msg_id, search_words)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_ATTACH = ("INSERT INTO message_files (message_id, file_id, chat_id) VALUES (?, ?, ?)"
           " ON CONFLICT DO NOTHING")


class DeferredSends:
    """Messages of a batch's sends, written together just before anything else runs."""

    __slots__ = ("messages", "files")

    def __init__(self) -> None:
        self.messages: list[tuple[object, ...]] = []
        self.files: list[tuple[object, ...]] = []


def _send_memo(r: Row | None, author_id: UserId, chat_id: str | None,
               client_msg_id: str | None) -> dict[tuple[object, ...], Any]:
    """A `prefetch_send` row (its first column aside) as the answers it stands for."""
    if r is None:
        return {("user", author_id): None}
    memo: dict[tuple[object, ...], Any] = {("user", author_id): _user(r[1:7])}
    if chat_id is not None:
        memo[("chat", chat_id)] = None if r[7] is None else _chat(r[7:12])
        memo[("member", chat_id, author_id)] = bool(r[12])
    if client_msg_id is not None:
        memo[("client", author_id, client_msg_id)] = None if r[13] is None else r[13:24]
    return memo


class SqlTx:
    """One unit of work: reads and writes as typed operations, no SQL outside this class."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.wakeups = Wakeups()
        # Answers fetched ahead in one round trip (`prefetch_send`); each is used once.
        self._memo: dict[tuple[object, ...], Any] = {}
        self._preloaded = False
        self._deferred: DeferredSends | None = None

    async def prefetch_send(self, author_id: UserId, chat_id: str | None,
                            client_msg_id: str | None) -> None:
        """Fetch in one round trip what a send checks first: the author, their message with
        this retry key, the chat and whether they are in it. Must come before the job's
        first write; each answer is handed out once, by the usual method. Nothing to do
        when the batch fetched it already (`preload`)."""
        if self._preloaded:
            return
        r = await self.db.fetchone(
            f"SELECT 1, {_SEND_COLS} FROM users u"
            " LEFT JOIN chats c ON c.chat_id = ?"
            " LEFT JOIN members mb ON mb.chat_id = c.chat_id AND mb.user_id = u.user_id"
            " LEFT JOIN messages cm ON cm.author_id = u.user_id AND cm.client_msg_id = ?"
            " WHERE u.user_id = ?", chat_id, client_msg_id, author_id)
        self._memo.update(_send_memo(r, author_id, chat_id, client_msg_id))

    async def prefetch_sends(self, keys: Sequence[SendKey]) -> list[dict[tuple[object, ...], Any]]:
        """`prefetch_send` of a batch's sends in one query (PostgreSQL), for `preload`;
        with a seq taken for each send's event (in the order of `keys`)."""
        rows = await self.db.fetchall(
            f"SELECT q.i, {_SEND_COLS}, nextval('events_seq_seq')"
            " FROM unnest(?::bigint[], ?::text[], ?::text[]) WITH ORDINALITY"
            " AS q(author_id, chat_id, client_key, i)"
            " JOIN users u ON u.user_id = q.author_id"
            " LEFT JOIN chats c ON c.chat_id = q.chat_id"
            " LEFT JOIN members mb ON mb.chat_id = c.chat_id AND mb.user_id = u.user_id"
            " LEFT JOIN messages cm"
            " ON cm.author_id = u.user_id AND cm.client_msg_id = q.client_key",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
        found = {int(r[0]): r for r in rows}
        seqs = iter(sorted(int(r[-1]) for r in rows))  # seqs in the order of the sends
        memos = []
        for i, key in enumerate(keys, start=1):
            memo = _send_memo(found.get(i), *key)
            if i in found:
                memo[("seq",)] = next(seqs)
            memos.append(memo)
        return memos

    def preload(self, memo: dict[tuple[object, ...], Any],
                deferred: "DeferredSends | None" = None) -> None:
        """Answers a batch fetched ahead for this job (`prefetch_sends`). With `deferred`,
        the job's message is written later, with the others of the batch (its seq was
        taken ahead), so that nothing may read it before `flush_sends`."""
        self._memo.update(memo)
        self._preloaded = True
        self._deferred = deferred

    async def flush_sends(self, deferred: "DeferredSends") -> None:
        """Write the messages (and file links) that sends deferred: one round trip each."""
        if deferred.messages:
            await self.db.executemany(_DEFERRED_MESSAGE, deferred.messages)
            deferred.messages = []
        if deferred.files:
            await self.db.executemany(_ATTACH, deferred.files)
            deferred.files = []

    # -- users ---------------------------------------------------------------------------
    async def find_user(self, username: str) -> User | None:
        """A user by name (case-insensitive)."""
        r = await self.db.fetchone(f"SELECT {_USER_COLS} FROM users WHERE username_key = ?",
                                   username_key(username))
        return None if r is None else _user(r)

    async def get_user(self, user_id: UserId) -> User | None:
        """A user by id."""
        if self._memo and ("user", user_id) in self._memo:
            return self._memo.pop(("user", user_id))  # type: ignore[no-any-return]
        r = await self.db.fetchone(f"SELECT {_USER_COLS} FROM users WHERE user_id = ?", user_id)
        return None if r is None else _user(r)

    async def create_user(self, username: str, pw_hash: str, now: float) -> User | None:
        """Register a user (nothing else: joining chats is the methods' rule); None if the
        name is taken."""
        changed = await self.db.execute(
            "INSERT INTO users (username, username_key, pw_hash, read_seq, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (username_key) DO NOTHING",
            username, username_key(username), pw_hash, await self.last_seq(), now)
        if not changed:
            return None
        user = await self.find_user(username)
        assert user is not None
        return user

    async def set_read_marker(self, user_id: UserId, seq: int) -> None:
        """Move the user's read marker forward (never back)."""
        await self.db.execute("UPDATE users SET read_seq = ? WHERE user_id = ? AND read_seq < ?",
                              seq, user_id, seq)

    async def set_read_markers(self, markers: dict[UserId, int]) -> None:
        """Move several users' read markers forward (never back), each to at most the newest
        event: what many polls acknowledged, written at once."""
        if self.db.dialect != "postgres":
            newest = await self.last_seq()
            for user_id, seq in markers.items():
                await self.set_read_marker(user_id, min(seq, newest))
            return
        await self.db.execute(
            "UPDATE users AS u SET read_seq = v.seq FROM (SELECT a.user_id,"
            " LEAST(a.seq, (SELECT COALESCE(MAX(seq), 0) FROM events)) AS seq"
            " FROM unnest(?::bigint[], ?::bigint[]) AS a(user_id, seq)) AS v"
            " WHERE u.user_id = v.user_id AND u.read_seq < v.seq",
            list(markers), list(markers.values()))

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

    async def get_sessions(self, token_hashes: Sequence[str]) -> list[Session | None]:
        """`get_session` of several token hashes in one query, in order."""
        if self.db.dialect != "postgres":
            return [await self.get_session(h) for h in token_hashes]
        rows = await self.db.fetchall(
            "SELECT s.token_hash, s.user_id, u.username, s.client, s.created_at, s.last_seen"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id"
            " WHERE s.token_hash = ANY(?::text[])", list(token_hashes))
        found = {r[0]: Session(r[0], UserId(r[1]), r[2], r[3], r[4], r[5]) for r in rows}
        return [found.get(h) for h in token_hashes]

    async def touch_session(self, token_hash: str, now: float) -> None:
        """Record that a session was used."""
        await self.db.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                              now, token_hash)

    async def delete_session(self, token_hash: str) -> bool:
        """End a session; whether it existed. Its parked polls answer 401 after the commit."""
        self.wakeups.ended.add(token_hash)
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
        if self._memo and ("chat", chat_id) in self._memo:
            return self._memo.pop(("chat", chat_id))  # type: ignore[no-any-return]
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
        if self._memo and ("member", chat_id, user_id) in self._memo:
            return bool(self._memo.pop(("member", chat_id, user_id)))
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
        r = await self.db.fetchone(
            "INSERT INTO events (chat_id, type, body, message_id, expires_at)"
            " VALUES (?, ?, ?, ?, ?) RETURNING seq",
            chat_id, type_, body.decode(), message_id, expires_at)
        assert r is not None
        self._chat_event_added(chat_id)
        return int(r[0])

    def _chat_event_added(self, chat_id: ChatId) -> None:
        if chat_id == GENERAL_CHAT:
            self.wakeups.everyone = True
        else:
            self.wakeups.chats.add(chat_id)

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
        if self.db.dialect == "postgres":
            rows = await self.db.fetchall(
                "SELECT seq, body FROM (" + _PG_STREAM.format(user="?", after="?", lim="?")
                + ") AS s", user_id, after, limit, after, now, limit, user_id, limit)
            return [EventRecord(int(r[0]), r[1].encode()) for r in rows]
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
            [q[0] for q in queries], [q[1] for q in queries], [q[2] for q in queries], now)
        out: list[list[EventRecord]] = [[] for _ in queries]
        for i, seq, body in rows:
            out[int(i) - 1].append(EventRecord(int(seq), body.encode()))
        return out

    async def unread_counts(self, user_id: UserId, after: int, now: float) -> dict[str, int]:
        """Per chat, the live messages of others after both the stream read marker (`after`)
        and the chat's read position (chats.read) that the user may see.

        Bounded: only the chat's newest UNREAD_CAP messages after the markers are looked at
        (a walk down the (chat_id, seq) index), so a count is exact up to UNREAD_CAP.
        """
        rows = await self.db.fetchall(
            "SELECT m.chat_id, m.joined_seq, r.seq FROM members m LEFT JOIN read_positions r"
            " ON r.user_id = m.user_id AND r.chat_id = m.chat_id"
            " WHERE m.user_id = ? AND m.left_seq IS NULL", user_id)
        counts: dict[str, int] = {}
        for chat_id, joined_seq, read_seq in rows:
            since = max(after, int(joined_seq), int(read_seq or 0))
            r = await self.db.fetchone(
                "SELECT COUNT(*) FROM (SELECT author_id FROM messages WHERE chat_id = ?"
                " AND seq > ? AND expires_at > ? ORDER BY seq DESC LIMIT ?) AS recent"
                " WHERE author_id <> ?", chat_id, since, now, UNREAD_CAP, user_id)
            if r is not None and int(r[0]):
                counts[chat_id] = int(r[0])
        return counts

    # -- messages ------------------------------------------------------------------------
    async def insert_message(self, m: StoredMessage, event_body: bytes,
                             client_msg_id: str | None = None) -> StoredMessage:
        """Store a message and its `message` event; the message with its seq.

        `client_msg_id` (the sender's retry key) is unique per author while the message
        lives; the message's words go into the search index.
        """
        words = search_words(m.text)
        pg = self.db.dialect == "postgres"
        seq_ahead = self._memo.pop(("seq",), None)
        if self._deferred is not None and seq_ahead is not None:
            self._deferred.messages.append((
                seq_ahead, m.chat_id, event_body.decode(), m.message_id, m.expires_at,
                m.message_id, m.chat_id, m.author, m.author_id, m.text, m.attachments,
                m.comment_to, m.sent_at, m.expires_at, seq_ahead, m.edited_at, client_msg_id,
                words))
            self._chat_event_added(m.chat_id)
            return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                                 m.attachments, m.comment_to, m.sent_at, m.expires_at,
                                 seq_ahead, m.edited_at)
        if pg:  # one round trip: the event and the message in one statement
            r = await self.db.fetchone(
                "WITH e AS (INSERT INTO events (chat_id, type, body, message_id, expires_at)"
                " VALUES (?, 'message', ?, ?, ?) RETURNING seq)"
                f" INSERT INTO messages ({_MSG_COLS}, client_msg_id, search_words)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT seq FROM e), ?, ?, ?) RETURNING seq",
                m.chat_id, event_body.decode(), m.message_id, m.expires_at,
                m.message_id, m.chat_id, m.author, m.author_id, m.text, m.attachments,
                m.comment_to, m.sent_at, m.expires_at, m.edited_at, client_msg_id, words)
            assert r is not None
            seq = int(r[0])
            self._chat_event_added(m.chat_id)
            return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                                 m.attachments, m.comment_to, m.sent_at, m.expires_at, seq,
                                 m.edited_at)
        seq = await self.add_chat_event(m.chat_id, "message", event_body, m.message_id,
                                        m.expires_at)
        await self.db.execute(
            f"INSERT INTO messages ({_MSG_COLS}, client_msg_id{', search_words' if pg else ''})"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{', ?' if pg else ''})",
            m.message_id, m.chat_id, m.author, m.author_id, m.text, m.attachments,
            m.comment_to, m.sent_at, m.expires_at, seq, m.edited_at, client_msg_id,
            *((words,) if pg else ()))
        if not pg and words:
            await self.db.execute("INSERT INTO messages_fts (rowid, words) VALUES (?, ?)",
                                  seq, words)
        return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                             m.attachments, m.comment_to, m.sent_at, m.expires_at, seq,
                             m.edited_at)

    async def get_message(self, message_id: str, now: float) -> StoredMessage | None:
        """A live (unexpired) message by id."""
        r = await self.db.fetchone(
            f"SELECT {_MSG_COLS} FROM messages WHERE message_id = ? AND expires_at > ?",
            message_id, now)
        return None if r is None else _msg(r)

    async def history(self, chat_id: str, before_seq: int | None, limit: int,
                      now: float, after_seq: int = 0) -> list[StoredMessage]:
        """Up to `limit` live messages of a chat before a seq, oldest first."""
        before = before_seq if before_seq is not None else MAX_SEQ
        if self.db.dialect == "postgres":  # a walk of (chat_id, seq) whatever the plan
            rows = await self.db.fetchall(
                f"SELECT {_MSG_COLS} FROM messages WHERE (chat_id, seq) < (?, ?)"
                " AND (chat_id, seq) > (?, ?) AND expires_at > ?"
                " ORDER BY chat_id DESC, seq DESC LIMIT ?",
                chat_id, before, chat_id, after_seq, now, limit)
            return [_msg(r) for r in reversed(rows)]
        rows = await self.db.fetchall(
            f"SELECT {_MSG_COLS} FROM messages WHERE chat_id = ? AND seq < ? AND seq > ?"
            " AND expires_at > ? ORDER BY seq DESC LIMIT ?",
            chat_id, before, after_seq, now, limit)
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
    async def report_state(self, reported: UserId, reporter: UserId) -> str | None:
        """The state of this reporter's report of this user (counts/young/banned/used)."""
        r = await self.db.fetchone(
            "SELECT state FROM reports WHERE reported_id = ? AND reporter_id = ?",
            reported, reporter)
        return None if r is None else str(r[0])

    async def put_report(self, reported: UserId, reporter: UserId, reason: str | None,
                         now: float, state: str) -> None:
        """Record a report in a state, replacing this reporter's earlier one."""
        await self.db.execute(
            "INSERT INTO reports (reported_id, reporter_id, reason, created_at, state)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (reported_id, reporter_id) DO UPDATE"
            " SET reason = excluded.reason, created_at = excluded.created_at,"
            " state = excluded.state", reported, reporter, reason, now, state)

    async def count_reports(self, reported: UserId) -> int:
        """Distinct reporters of a user whose reports count toward the next ban."""
        r = await self.db.fetchone(
            "SELECT COUNT(*) FROM reports WHERE reported_id = ? AND state = 'counts'", reported)
        return int(r[0]) if r else 0

    async def use_reports(self, reported: UserId) -> None:
        """The counting reports caused a ban: they count no more."""
        await self.db.execute(
            "UPDATE reports SET state = 'used' WHERE reported_id = ? AND state = 'counts'",
            reported)

    # -- blocks --------------------------------------------------------------------------
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

    # -- scheduled -----------------------------------------------------------------------
    async def insert_scheduled(self, s: Scheduled) -> None:
        """Store a pending scheduled message."""
        await self.db.execute(
            f"INSERT INTO scheduled ({_SCHED_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        changed = bool(await self.db.execute(
            "UPDATE scheduled SET state = ?, message_id = ? WHERE scheduled_id = ?"
            " AND state = 'pending'", state, message_id, scheduled_id))
        if changed:  # its files are now kept by the message sent, or by nothing
            await self.db.execute("DELETE FROM scheduled_files WHERE scheduled_id = ?",
                                  scheduled_id)
        return changed

    # -- files ---------------------------------------------------------------------------
    async def insert_file(self, f: StoredFile) -> None:
        """Record an uploaded file."""
        await self.db.execute(
            f"INSERT INTO files ({_FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            f.file_id, f.owner_id, f.name, f.size, f.content_type, f.path, f.created_at)

    async def storage_used(self, owner_id: UserId, min_charge: int) -> int:
        """Bytes of the files a user holds, each counted as at least `min_charge`."""
        r = await self.db.fetchone(
            "SELECT COALESCE(SUM(CASE WHEN size < ? THEN ? ELSE size END), 0) FROM files"
            " WHERE owner_id = ?", min_charge, min_charge, owner_id)
        return int(r[0]) if r else 0

    async def lock_user(self, user_id: UserId) -> None:
        """Serialize this transaction with others that lock the same user (a no-op update)."""
        await self.db.execute("UPDATE users SET read_seq = read_seq WHERE user_id = ?", user_id)

    async def file_ids(self) -> set[str]:
        """Every file id the database knows."""
        return {r[0] for r in await self.db.fetchall("SELECT file_id FROM files")}

    async def get_file(self, file_id: str) -> StoredFile | None:
        """A file's metadata."""
        r = await self.db.fetchone(f"SELECT {_FILE_COLS} FROM files WHERE file_id = ?", file_id)
        return None if r is None else _file(r)

    async def attach_file(self, message_id: MessageId, file_id: FileId, chat_id: ChatId) -> None:
        """Record that a file was sent in a message of a chat."""
        if self._deferred is not None:  # after its message (`flush_sends`)
            self._deferred.files.append((message_id, file_id, chat_id))
            return
        await self.db.execute(_ATTACH, message_id, file_id, chat_id)

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
        paths: list[str] = []
        while True:
            chunk, more = await self.purge_chunk(now, unsent_file_before, 1000)
            paths += chunk
            if not more:
                return paths

    async def purge_chunk(self, now: float, unsent_file_before: float,
                          limit: int) -> tuple[list[str], bool]:
        """One bounded round of `purge_expired` (at most `limit` rows of each kind, all
        through indexes); the deleted files' paths, and whether more may be left."""
        events = await self.db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE expires_at IS NOT"
            " NULL AND expires_at <= ? LIMIT ?)", now, limit)
        rows = await self.db.fetchall(
            "SELECT message_id, seq FROM messages WHERE expires_at <= ? LIMIT ?", now, limit)
        if rows:
            ids = [r[0] for r in rows]
            marks = ", ".join("?" * len(ids))
            await self.db.execute(f"DELETE FROM message_files WHERE message_id IN ({marks})",
                                  *ids)
            if self.db.dialect == "sqlite":  # the search index of the expired messages
                await self.db.execute(f"DELETE FROM messages_fts WHERE rowid IN ({marks})",
                                      *[r[1] for r in rows])
            await self.db.execute(f"DELETE FROM messages WHERE message_id IN ({marks})", *ids)
        files = await self.db.fetchall(
            "SELECT file_id, path FROM files f WHERE created_at <= ? AND NOT EXISTS"
            " (SELECT 1 FROM message_files mf WHERE mf.file_id = f.file_id) AND NOT EXISTS"
            " (SELECT 1 FROM scheduled_files sf WHERE sf.file_id = f.file_id) LIMIT ?",
            unsent_file_before, limit)
        if files:
            marks = ", ".join("?" * len(files))
            await self.db.execute(f"DELETE FROM files WHERE file_id IN ({marks})",
                                  *[r[0] for r in files])
            await self.db.execute(f"DELETE FROM file_chunks WHERE file_id IN ({marks})",
                                  *[r[0] for r in files])
        orphans = await self.purge_orphan_chunks(unsent_file_before, limit)
        more = events >= limit or len(rows) >= limit or len(files) >= limit or orphans >= limit
        return [r[1] for r in files if r[1] != FILE_IN_DATABASE], more

    # -- files kept in the database (--file-store database) --------------------------------
    async def put_file_chunk(self, file_id: str, n: int, data: bytes, now: float) -> None:
        """Store chunk `n` (from 0) of a file's bytes."""
        await self.db.execute(
            "INSERT INTO file_chunks (file_id, n, data, created_at) VALUES (?, ?, ?, ?)",
            file_id, n, data, now)

    async def file_chunk(self, file_id: str, n: int) -> bytes | None:
        """Chunk `n` of a file's bytes; None past the last."""
        r = await self.db.fetchone("SELECT data FROM file_chunks WHERE file_id = ? AND n = ?",
                                   file_id, n)
        return None if r is None else bytes(r[0])

    async def delete_file_chunks(self, file_id: str) -> None:
        """Forget a file's bytes (its upload was refused after they were stored)."""
        await self.db.execute("DELETE FROM file_chunks WHERE file_id = ?", file_id)

    async def purge_orphan_chunks(self, before: float, limit: int) -> int:
        """Delete the bytes of up to `limit` files stored before `before` that never got a
        files row (the process died between storing and registering them); how many."""
        rows = await self.db.fetchall(
            "SELECT c.file_id FROM file_chunks c WHERE c.n = 0 AND c.created_at <= ?"
            " AND NOT EXISTS (SELECT 1 FROM files f WHERE f.file_id = c.file_id) LIMIT ?",
            before, limit)
        if rows:
            marks = ", ".join("?" * len(rows))
            await self.db.execute(f"DELETE FROM file_chunks WHERE file_id IN ({marks})",
                                  *[r[0] for r in rows])
        return len(rows)

    # -- login throttling, registrations, the session cap ----------------------------------
    async def login_attempts(self, key: str, address: str,
                             since: float) -> tuple[list[tuple[float, bool]],
                                                    list[tuple[float, bool]]]:
        """(time, failed) of password checks since a time, oldest first: those of the
        (username key, address) pair, and those of the address for any username."""
        rows = await self.db.fetchall(
            "SELECT at, failed, username_key FROM login_attempts WHERE address = ? AND at > ?"
            " ORDER BY at", address, since)
        everyone = [(float(r[0]), bool(r[1])) for r in rows]
        pair = [(float(r[0]), bool(r[1])) for r in rows if r[2] == key]
        return pair, everyone

    async def claim_login_attempt(self, attempt_id: str, key: str, address: str,
                                  now: float) -> None:
        """Record a password check that is about to run (it counts until it ends)."""
        await self.db.execute(
            "INSERT INTO login_attempts (attempt_id, username_key, address, failed, at)"
            " VALUES (?, ?, ?, 0, ?)", attempt_id, key, address, now)

    async def fail_login_attempt(self, attempt_id: str, key: str, address: str,
                                 now: float) -> None:
        """The claimed check found a wrong password: it stays, as a failure at `now`."""
        changed = await self.db.execute(
            "UPDATE login_attempts SET failed = 1, at = ? WHERE attempt_id = ?", now, attempt_id)
        if not changed:  # pruned while the check ran: the failure still counts
            await self.db.execute(
                "INSERT INTO login_attempts (attempt_id, username_key, address, failed, at)"
                " VALUES (?, ?, ?, 1, ?)", attempt_id, key, address, now)

    async def drop_login_attempt(self, attempt_id: str) -> None:
        """The claimed check succeeded or never ran: it no longer counts."""
        await self.db.execute("DELETE FROM login_attempts WHERE attempt_id = ?", attempt_id)

    async def clear_login_failures(self, key: str, address: str) -> None:
        """Forget a pair's failures (after a correct password from that address)."""
        await self.db.execute(
            "DELETE FROM login_attempts WHERE username_key = ? AND address = ? AND failed = 1",
            key, address)

    async def prune_login_attempts(self, before: float) -> None:
        """Forget password checks older than a time."""
        await self.db.execute("DELETE FROM login_attempts WHERE at < ?", before)

    async def registrations_used(self, address: str, window_start: float) -> int:
        """New usernames an address registered in a registration window."""
        r = await self.db.fetchone(
            "SELECT used FROM registrations WHERE address = ? AND window_start = ?",
            address, window_start)
        return int(r[0]) if r else 0

    async def add_registrations(self, address: str, window_start: float, count: int) -> None:
        """Count (or, negative, uncount) registrations of an address in a window."""
        await self.db.execute(
            "INSERT INTO registrations (address, window_start, used) VALUES (?, ?, ?)"
            " ON CONFLICT (address, window_start) DO UPDATE"
            " SET used = registrations.used + excluded.used", address, window_start, count)

    async def prune_registrations(self, before: float) -> None:
        """Forget registration windows that started before a time."""
        await self.db.execute("DELETE FROM registrations WHERE window_start < ?", before)

    async def end_sessions_over(self, user_id: UserId, keep: int) -> list[str]:
        """End a user's least recently used sessions beyond `keep`; their token hashes."""
        rows = await self.db.fetchall(
            "SELECT token_hash FROM sessions WHERE user_id = ?"
            " ORDER BY last_seen DESC, created_at DESC LIMIT 1000 OFFSET ?", user_id, keep)
        ended = [str(r[0]) for r in rows]
        for token_hash in ended:
            await self.delete_session(token_hash)
        return ended

    # -- messenger essentials: client_msg_id, edits, deletes, search, read positions --------
    async def find_client_message(self, author_id: UserId, client_msg_id: str,
                                  now: float) -> StoredMessage | None:
        """The live message an author sent with this retry key; an expired one (not purged
        yet) gives its key up, so the key may be used again."""
        key = ("client", author_id, client_msg_id)
        if self._memo and key in self._memo:
            r = self._memo.pop(key)
        else:
            r = await self.db.fetchone(
                f"SELECT {_MSG_COLS} FROM messages WHERE author_id = ? AND client_msg_id = ?",
                author_id, client_msg_id)
        if r is None:
            return None
        found = _msg(r)
        if found.expires_at > now:
            return found
        await self.db.execute("UPDATE messages SET client_msg_id = NULL WHERE message_id = ?",
                              found.message_id)
        return None

    async def edit_message(self, m: StoredMessage, text: str, edited_at: float) -> StoredMessage:
        """Replace a message's text (search index included); the message as edited."""
        words = search_words(text)
        if self.db.dialect == "postgres":
            await self.db.execute(
                "UPDATE messages SET text = ?, edited_at = ?, search_words = ?"
                " WHERE message_id = ?", text, edited_at, words, m.message_id)
        else:
            await self.db.execute("UPDATE messages SET text = ?, edited_at = ?"
                                  " WHERE message_id = ?", text, edited_at, m.message_id)
            await self.db.execute("DELETE FROM messages_fts WHERE rowid = ?", m.seq)
            if words:
                await self.db.execute("INSERT INTO messages_fts (rowid, words) VALUES (?, ?)",
                                      m.seq, words)
        return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, text,
                             m.attachments, m.comment_to, m.sent_at, m.expires_at, m.seq,
                             edited_at)

    async def delete_message(self, m: StoredMessage) -> None:
        """Remove a message: its row, its search entry, its file links (a file sent only
        here is no longer downloadable by the chat) and its events not yet delivered (the
        `message` event and any `message_edited`)."""
        await self.db.execute("DELETE FROM events WHERE message_id = ?", m.message_id)
        await self.db.execute("DELETE FROM message_files WHERE message_id = ?", m.message_id)
        await self.db.execute("DELETE FROM messages WHERE message_id = ?", m.message_id)
        if self.db.dialect == "sqlite":
            await self.db.execute("DELETE FROM messages_fts WHERE rowid = ?", m.seq)

    async def search_messages(self, user_id: UserId, words: list[str], chat_id: str | None,
                              before_seq: int | None, limit: int,
                              now: float) -> list[StoredMessage]:
        """Live messages containing every word (normalized by `search_words`) in chats the
        user is a member of, newest first."""
        before = before_seq if before_seq is not None else MAX_SEQ
        chat_filter = " AND msg.chat_id = ?" if chat_id is not None else ""
        chat_args: tuple[object, ...] = (chat_id,) if chat_id is not None else ()
        cols = msg_cols("msg", _MSG_COLS)
        member = (" JOIN members mb ON mb.chat_id = msg.chat_id AND mb.user_id = ?"
                  " AND mb.left_seq IS NULL")
        if self.db.dialect == "sqlite":
            return await self._search_fts5(user_id, words, chat_id, before, limit, now)
        match = ("to_tsvector('simple', COALESCE(msg.search_words, ''))"
                 " @@ plainto_tsquery('simple', ?)")
        query = " ".join(words)
        # Common words: the newest RECENT_SCAN candidates usually hold a page already.
        recent = (
            f"SELECT {cols} FROM (SELECT * FROM messages msg WHERE msg.seq < ?"
            f" AND msg.expires_at > ?{chat_filter} ORDER BY msg.seq DESC LIMIT ?) AS msg"
            f"{member} WHERE {match} ORDER BY msg.seq DESC LIMIT ?")
        rows = await self.db.fetchall(recent, before, now, *chat_args, RECENT_SCAN, user_id,
                                      query, limit)
        if len(rows) < limit:  # rarer words: the GIN index
            rows = await self.db.fetchall(
                f"SELECT {cols} FROM messages msg{member} WHERE {match} AND msg.seq < ?"
                f" AND msg.expires_at > ?{chat_filter} ORDER BY msg.seq DESC LIMIT ?",
                user_id, query, before, now, *chat_args, limit)
        return [_msg(r) for r in rows]

    async def _search_fts5(self, user_id: UserId, words: list[str], chat_id: str | None,
                           before: int, limit: int, now: float) -> list[StoredMessage]:
        """SQLite search: FTS5 hands out matches newest first, a chunk at a time; each chunk
        is filtered (live, the user's chats) and the walk stops once the page is full.

        Between chunks the event loop gets a turn (SQLite reads run on it), so a word with
        many matches in chats the user is not in costs time, never a stall.
        """
        query = fts5_query(words)
        chat_filter = " AND msg.chat_id = ?" if chat_id is not None else ""
        chat_args: tuple[object, ...] = (chat_id,) if chat_id is not None else ()
        found: list[StoredMessage] = []
        chunk = max(2 * limit, 50)
        while len(found) < limit:
            candidates = [int(r[0]) for r in await self.db.fetchall(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? AND rowid < ?"
                " ORDER BY rowid DESC LIMIT ?", query, before, chunk)]
            if not candidates:
                break
            marks = ", ".join("?" * len(candidates))
            rows = await self.db.fetchall(
                f"SELECT {msg_cols('msg', _MSG_COLS)} FROM messages msg"
                " JOIN members mb ON mb.chat_id = msg.chat_id AND mb.user_id = ?"
                f" AND mb.left_seq IS NULL WHERE msg.seq IN ({marks}) AND msg.expires_at > ?"
                f"{chat_filter} ORDER BY msg.seq DESC LIMIT ?",
                user_id, *candidates, now, *chat_args, limit - len(found))
            found.extend(_msg(r) for r in rows)
            if len(candidates) < chunk:
                break
            before = candidates[-1]
            chunk = min(chunk * 2, SEARCH_CHUNK_MAX)
            await asyncio.sleep(0)
        return found

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
        r = await self.db.fetchone(
            "INSERT INTO events (user_id, type, body, expires_at) VALUES (?, 'read', ?, ?)"
            " RETURNING seq", user_id, body.decode(), expires_at)
        assert r is not None
        self.wakeups.users.add(user_id)
        return int(r[0])
