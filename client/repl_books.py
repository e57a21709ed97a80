"""The REPL's bookkeeping: ids shown short, chats by label, read marks, progress lines."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TextIO

from .api import MessengerClient
from .errors import MessengerError
from .models import Chat, ChatInfo
from .render import human_size

log = logging.getLogger(__name__)

SHORT_ID = 8


class CommandError(Exception):
    """A command was used wrongly; its message is shown to the user as is."""


def _short(full_id: str) -> str:
    if len(full_id) <= SHORT_ID + 2:
        return full_id
    kind, sep, _ = full_id.partition("_")
    if not sep or len(kind) > 2:
        return full_id[:SHORT_ID]
    return full_id[:len(kind) + 1] + full_id[len(kind) + 1 - SHORT_ID:]


def needs(arg: str, usage: str) -> str:
    """The argument, stripped; a CommandError showing `usage` when it is empty."""
    if not arg.strip():
        raise CommandError(f"usage: {usage}")
    return arg.strip()


class IdBook:
    """Ids seen in this session, shown short and resolved back from the short form or any
    unique prefix.

    Server ids start with their kind and the time they were made (`m_1a233b0805...` for a
    message), so the short form keeps the kind and the id's last characters, which differ
    between ids made together."""

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}
        self.message_chats: dict[str, str] = {}
        self.files: dict[str, str] = {}

    def add(self, full_id: str) -> None:
        """Remember an id."""
        self._ids[full_id] = None

    def short(self, full_id: str) -> str:
        """The id as displayed, `kind_` and its last characters (remembered for `resolve`)."""
        self.add(full_id)
        return _short(full_id)

    def resolve(self, text: str) -> str:
        """The full id for what the user typed: exact, else the one known id shown so or
        starting so, else as is."""
        text = text.strip().lstrip("(").rstrip(")")
        if text in self._ids:
            return text
        matches = [known for known in self._ids
                   if known.startswith(text) or _short(known) == text]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise CommandError(f"ambiguous id {text!r}: type more of it")
        return text


class ChatBook:
    """The user's chats by id, with short labels: #general, @bob, #Team."""

    def __init__(self, me: str, ids: IdBook) -> None:
        self.me = me
        self.ids = ids
        self.chats: dict[str, Chat] = {}
        self.unread: dict[str, int] = {}
        self.past: dict[str, Chat] = {}

    def replace(self, chats: Iterable[ChatInfo]) -> None:
        """Forget every chat and remember these (from session.status)."""
        self.past.update(self.chats)
        self.chats = {}
        self.unread = {}
        for chat in chats:
            self.chats[chat["chat_id"]] = chat
            self.unread[chat["chat_id"]] = chat["unread"]

    def add(self, chat: Chat) -> None:
        """Remember (or update) one chat."""
        self.chats[chat["chat_id"]] = chat

    def remove(self, chat_id: str) -> None:
        """Forget a chat the user left (its label is kept for late events)."""
        chat = self.chats.pop(chat_id, None)
        if chat is not None:
            self.past[chat_id] = chat

    def label(self, chat_id: str) -> str:
        """The short label of a chat."""
        chat = self.chats.get(chat_id) or self.past.get(chat_id)
        if chat is None:
            return "#general" if chat_id == "general" else f"#{self.ids.short(chat_id)}"
        if chat["kind"] == "general":
            return "#general"
        if chat["kind"] == "direct":
            others = [m for m in chat["members"] if m != self.me]
            return "@" + (others[0] if others else chat["title"] or self.me)
        return "#" + (chat["title"] or self.ids.short(chat_id))

    def resolve(self, text: str) -> str | None:
        """A chat id from an id, a unique id prefix, a label, a title or a username."""
        text = text.strip()
        if text in self.chats:
            return text
        wanted = text.lower()
        for chat_id in self.chats:
            label = self.label(chat_id).lower()
            if wanted in (label, label[1:]):
                return chat_id
        prefixed = [chat_id for chat_id in self.chats if chat_id.startswith(text)]
        return prefixed[0] if len(prefixed) == 1 else None

    def direct_with(self, username: str) -> str | None:
        """The id of the direct chat with `username`, if known."""
        for chat_id, chat in self.chats.items():
            if chat["kind"] == "direct" and username in chat["members"]:
                return chat_id
        return None

    def labels(self) -> list[str]:
        """Every chat's label, for completion."""
        return [self.label(chat_id) for chat_id in self.chats]


class Progress:
    """A one-line `\\r` progress indicator for transfers (quiet for small files)."""

    def __init__(self, out: TextIO, label: str, min_size: int = 256 * 1024) -> None:
        self.out = out
        self.label = label
        self.min_size = min_size
        self.shown = False
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        """Update the line (at most ten times a second)."""
        if total is not None and total < self.min_size:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last < 0.1:
            return
        self._last = now
        if total:
            width = 24
            filled = int(width * done / total)
            bar = "#" * filled + "-" * (width - filled)
            text = f"\r{self.label} [{bar}] {100 * done // total:3d}% of {human_size(total)}"
        else:
            text = f"\r{self.label} {human_size(done)}"
        self.out.write(text)
        self.out.flush()
        self.shown = True

    def finish(self) -> None:
        """End the progress line."""
        if self.shown:
            self.out.write("\n")
            self.out.flush()


def split_first(arg: str) -> tuple[str, str]:
    """The first word and the rest."""
    parts = arg.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def split_path(arg: str) -> tuple[str, str]:
    """A leading path (possibly quoted) and the rest of the line."""
    arg = arg.strip()
    if arg[:1] in ("'", '"'):
        end = arg.find(arg[0], 1)
        if end < 0:
            raise CommandError("unterminated quote in path")
        return arg[1:end], arg[end + 1:].strip()
    return split_first(arg)


class ReadTracker:
    """Marks chats read in the background as their messages are shown, one call at a time
    per chat (a burst of messages becomes one or two chats.read calls)."""

    def __init__(self, client: MessengerClient) -> None:
        self.client = client
        self.pending: dict[str, str | None] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def mark(self, chat_id: str, message_id: str | None) -> None:
        """The user has seen `chat_id` up to `message_id` (None: its newest message)."""
        self.pending[chat_id] = message_id
        if chat_id not in self.tasks:
            self.tasks[chat_id] = asyncio.create_task(self._flush(chat_id))

    async def _flush(self, chat_id: str) -> None:
        try:
            while chat_id in self.pending:
                message_id = self.pending.pop(chat_id)
                try:
                    await self.client.mark_read(chat_id, message_id)
                except MessengerError:  # e.g. deleted meanwhile: the next one will do
                    log.debug("marking %s read failed", chat_id, exc_info=True)
        finally:
            self.tasks.pop(chat_id, None)

    async def settle(self) -> None:
        """Wait for the calls under way (tests, and before disconnecting)."""
        while self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
