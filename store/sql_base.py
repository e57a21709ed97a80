"""What every area of `SqlTx` shares: the connection protocol, column lists, row mappers,
wakeups and the base of the unit of work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from store.models import (
    Chat, ChatId, FileId, MessageId, Scheduled, ScheduledId, StoredFile, StoredMessage, User,
    UserId,
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

    async def insert(self, sql: str, key: str, *args: object) -> int:
        """Insert one row; its integer key column `key` (on SQLite the rowid, which `key`
        must be an alias of: no RETURNING, which costs a statement journal there)."""
        ...


USER_COLS = "user_id, username, pw_hash, read_seq, banned_until, created_at"
CHAT_COLS = "chat_id, kind, title, owner_id, created_at"
MSG_COLS = ("message_id, chat_id, author, author_id, text, attachments, comment_to, sent_at,"
            " expires_at, seq, edited_at")
SCHED_COLS = ("scheduled_id, user_id, chat_id, to_user, text, attachments, comment_to, send_at,"
              " created_at, state, message_id")
FILE_COLS = "file_id, owner_id, name, size, content_type, path, created_at"


def user_from(r: Row) -> User:
    """A `User` from a row of its column list."""
    return User(UserId(r[0]), r[1], r[2], r[3], r[4], r[5])


def chat_from(r: Row) -> Chat:
    """A `Chat` from a row of its column list."""
    return Chat(ChatId(r[0]), r[1], r[2], None if r[3] is None else UserId(r[3]), r[4])


def message_from(r: Row) -> StoredMessage:
    """A `StoredMessage` from a row of its column list."""
    return StoredMessage(MessageId(r[0]), ChatId(r[1]), r[2], UserId(r[3]), r[4], r[5],
                         None if r[6] is None else MessageId(r[6]), r[7], r[8], r[9], r[10])


def scheduled_from(r: Row) -> Scheduled:
    """A `Scheduled` from a row of its column list."""
    return Scheduled(ScheduledId(r[0]), UserId(r[1]), None if r[2] is None else ChatId(r[2]),
                     r[3], r[4], r[5], None if r[6] is None else MessageId(r[6]), r[7], r[8],
                     r[9], None if r[10] is None else MessageId(r[10]))


def file_from(r: Row) -> StoredFile:
    """A `StoredFile` from a row of its column list."""
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
        # The highest seq of a message stored (SQLite's search index catches up to it).
        self.newest_message = 0

    def merge(self, other: "Wakeups") -> None:
        """Add another transaction's wakeups."""
        self.everyone = self.everyone or other.everyone
        self.users |= other.users
        self.ended |= other.ended
        self.chats |= other.chats
        self.newest_message = max(self.newest_message, other.newest_message)


FILE_IN_DATABASE = "database"  # a files row's path when its bytes are in file_chunks
SendKey = tuple[UserId, "str | None", "str | None"]  # author, chat_id, client_msg_id

ATTACH_FILE = ("INSERT INTO message_files (message_id, file_id, chat_id) VALUES (?, ?, ?)"
               " ON CONFLICT DO NOTHING")


@dataclass(frozen=True)
class XactInfo:
    """A PostgreSQL write transaction's id and the NOTIFY queue's usage (0..1), fetched
    along with other answers: its commit then needs no round trip of its own to learn them."""

    xid: int
    notify_queue: float


@dataclass(frozen=True)
class PrefetchedSends:
    """What `prefetch_sends` fetched: each send's answers, and the transaction's `XactInfo`
    (None when no send's author exists)."""

    memos: list[dict[tuple[object, ...], Any]]
    xact: XactInfo | None


class DeferredSends:
    """Messages of a batch's sends, written together just before anything else runs."""

    __slots__ = ("messages", "files")

    def __init__(self) -> None:
        self.messages: list[tuple[object, ...]] = []
        self.files: list[tuple[object, ...]] = []


class SqlTxBase:
    """The state of one unit of work that every area of `SqlTx` shares."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.wakeups = Wakeups()
        # Answers fetched ahead in one round trip (`prefetch_send`); each is used once.
        self._memo: dict[tuple[object, ...], Any] = {}
        self._preloaded = False
        self._deferred: DeferredSends | None = None
