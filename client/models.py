"""Typed shapes of the server's results and events, as PROTOCOL.md describes them.

They mirror the JSON Schemas in schemas/ (tests/test_client_models.py checks every one:
property names, required keys and nullability), so a schema change fails a test here.
"""
from __future__ import annotations

from typing import Literal, NotRequired, TypedDict, Union


class FileInfo(TypedDict):
    """An uploaded file, as `POST /files` returns it and as messages carry it."""

    file_id: str
    name: str
    size: int
    content_type: str


class Message(TypedDict):
    """A delivered message or comment; times are RFC 3339 UTC."""

    message_id: str
    chat_id: str
    author: str
    text: str | None
    attachments: list[FileInfo]
    comment_to: str | None
    sent_at: str
    expires_at: str
    edited_at: str | None  # set once the author edited it


class Scheduled(TypedDict):
    """A message waiting for its `send_at` time (for a chat, or `to` a user)."""

    scheduled_id: str
    chat_id: str | None
    to: str | None
    text: str | None
    attachments: list[str]
    comment_to: str | None
    send_at: str
    created_at: str


class ConnectResult(TypedDict):
    """The result of `session.connect`."""

    token: str
    username: str
    cursor: int
    general_chat_id: str
    history: list[Message]
    created: NotRequired[bool]  # this connect registered the username (older servers omit it)


class Chat(TypedDict):
    """A chat as `chats.create` returns it (a direct chat is titled by the other person)."""

    chat_id: str
    kind: Literal["general", "direct", "group"]
    title: str | None
    owner: str | None  # the owner of a group chat; None for general and direct chats
    members: list[str]


class ChatInfo(Chat):
    """One chat in `session.status`, with its unread count."""

    unread: int
    read_up_to: str | None  # the message chats.read marked read up to


class Quota(TypedDict):
    """The general chat's send quota of the caller."""

    limit: int
    remaining: int
    resets_at: str


class ServerInfo(TypedDict):
    """Facts about the server in `session.status`."""

    version: str
    started_at: str
    users_online: int


class SessionInfo(TypedDict):
    """One connected client of the user in `session.status`."""

    client: str | None
    connected_at: str
    last_seen: str
    current: bool


class Status(TypedDict):
    """The result of `session.status`."""

    username: str
    cursor: int
    chats: list[ChatInfo]
    sessions: list[SessionInfo]
    banned_until: str | None
    quota: Quota
    server: ServerInfo


class SendResult(TypedDict, total=False):
    """The result of `messages.send`: `message`, or `scheduled` for a future `send_at`."""

    message: Message
    scheduled: Scheduled


class EditResult(TypedDict):
    """The result of `messages.edit`."""

    message: Message


class SearchResult(TypedDict):
    """The result of `messages.search`: matches newest first."""

    messages: list[Message]
    more: bool


class HistoryResult(TypedDict):
    """The result of `messages.history`."""

    messages: list[Message]
    more: bool


class ScheduledList(TypedDict):
    """The result of `messages.scheduled`."""

    scheduled: list[Scheduled]


class ReportResult(TypedDict):
    """The result of `users.report`."""

    reports: int
    banned_until: str | None


class BlockedList(TypedDict):
    """The result of `users.blocked`."""

    usernames: list[str]


class ChatResult(TypedDict):
    """The result of `chats.create`."""

    chat: Chat


class LinkResult(TypedDict):
    """The result of `chats.link`."""

    link: str


class JoinResult(TypedDict):
    """The result of `chats.join`: `pending` (the owner is asked) or already a `member`."""

    status: Literal["pending", "member"]
    chat_id: str


class DownloadResult(TypedDict):
    """What `MessengerClient.download` wrote."""

    path: str
    size: int
    name: str | None
    content_type: str | None
    # With overwrite=False: the path that already existed (the file went to `path` instead).
    renamed_from: NotRequired[str]


class MessageEvent(TypedDict):
    """A new message or comment in one of the user's chats."""

    seq: int
    type: Literal["message"]
    message: Message


class ScheduledEvent(TypedDict):
    """One of the user's scheduled messages was created or cancelled."""

    seq: int
    type: Literal["scheduled"]
    action: Literal["created", "cancelled"]
    scheduled: Scheduled
    reason: NotRequired[str]


class ChatEvent(TypedDict):
    """Someone was added to, joined or left a chat."""

    seq: int
    type: Literal["chat"]
    action: Literal["added", "joined", "left"]
    chat_id: str
    username: str


class JoinRequestEvent(TypedDict):
    """Someone asks to join a chat the user owns."""

    seq: int
    type: Literal["join_request"]
    chat_id: str
    username: str


class JoinDecidedEvent(TypedDict):
    """The owner decided on the user's join request."""

    seq: int
    type: Literal["join_decided"]
    chat_id: str
    approved: bool


class BanEvent(TypedDict):
    """The user is banned from sending until `until`."""

    seq: int
    type: Literal["ban"]
    until: str


class MessageEditedEvent(TypedDict):
    """A message of one of the user's chats was edited."""

    seq: int
    type: Literal["message_edited"]
    message: Message


class MessageDeletedEvent(TypedDict):
    """A message of one of the user's chats was deleted."""

    seq: int
    type: Literal["message_deleted"]
    chat_id: str
    message_id: str


class ReadEvent(TypedDict):
    """Someone (the user, or the other person of a direct chat) read a chat up to a message."""

    seq: int
    type: Literal["read"]
    chat_id: str
    username: str
    message_id: str


Event = Union[MessageEvent, ScheduledEvent, ChatEvent, JoinRequestEvent, JoinDecidedEvent,
              BanEvent, MessageEditedEvent, MessageDeletedEvent, ReadEvent]


class PollResult(TypedDict):
    """The answer of `GET /poll` (and of `events.poll`)."""

    events: list[Event]
    cursor: int
    more: bool
