"""Value objects the store hands to the method layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

UserId = NewType("UserId", int)
ChatId = NewType("ChatId", str)
MessageId = NewType("MessageId", str)
ScheduledId = NewType("ScheduledId", str)
FileId = NewType("FileId", str)

GENERAL_CHAT = ChatId("general")
# Event seqs are 64-bit signed integers in both databases: the one "after everything" seq.
MAX_SEQ = 2 ** 63 - 1


@dataclass(frozen=True)
class User:
    """A registered user."""

    user_id: UserId
    username: str
    pw_hash: str
    read_seq: int
    banned_until: float | None
    created_at: float


@dataclass(frozen=True)
class Session:
    """One connected client of a user (a token, stored only as its hash)."""

    token_hash: str
    user_id: UserId
    username: str
    client: str | None
    created_at: float
    last_seen: float


@dataclass(frozen=True)
class Chat:
    """A chat: the general chat, a 1-to-1 chat or a private group."""

    chat_id: ChatId
    kind: str  # general | direct | group
    title: str | None
    owner_id: UserId | None
    created_at: float


@dataclass(frozen=True)
class Member:
    """A user's membership of a chat: events after `joined_seq` (up to `left_seq`) are theirs."""

    chat_id: ChatId
    user_id: UserId
    joined_seq: int
    left_seq: int | None
    joined_at: float

    @property
    def active(self) -> bool:
        """Still a member."""
        return self.left_seq is None


@dataclass(frozen=True)
class StoredMessage:
    """A delivered message (or comment) with its place in the event stream."""

    message_id: MessageId
    chat_id: ChatId
    author: str
    author_id: UserId
    text: str | None
    attachments: str  # JSON array of attachment objects
    comment_to: MessageId | None
    sent_at: float
    expires_at: float
    seq: int
    edited_at: float | None = None


@dataclass(frozen=True)
class Scheduled:
    """A message waiting for its `send_at`."""

    scheduled_id: ScheduledId
    user_id: UserId
    chat_id: ChatId | None
    to_user: str | None
    text: str | None
    attachments: str  # JSON array of file ids
    comment_to: MessageId | None
    send_at: float
    created_at: float
    state: str  # pending | sent | cancelled
    message_id: MessageId | None


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file: metadata row; the bytes live under the data directory."""

    file_id: FileId
    owner_id: UserId
    name: str
    size: int
    content_type: str
    path: str
    created_at: float


@dataclass(frozen=True)
class JoinRequest:
    """A pending request to join a group chat through its link."""

    chat_id: ChatId
    user_id: UserId
    username: str
    created_at: float


@dataclass(frozen=True)
class EventRecord:
    """A serialized event as it is sent to pollers: `seq` plus its JSON body."""

    seq: int
    body: bytes  # JSON object without "seq"
