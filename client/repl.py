"""The interactive client: live events printed above a prompt that is never garbled."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.input import Input, create_input
from prompt_toolkit.patch_stdout import patch_stdout

from .api import MessengerClient
from .errors import MessengerError, RpcError, ServerUnavailable
from .models import Chat, ChatInfo, Event, Message, Scheduled
from .poll import PollLoop
from .render import (
    clock,
    day_and_clock,
    describe_error,
    format_message,
    human_size,
    parse_when,
    printable,
    rfc3339,
)

log = logging.getLogger(__name__)

CLIENT_LABEL = "messenger-repl"
HISTORY_DEFAULT = 20
SHORT_ID = 8

Output = Callable[[str], None]


class CommandError(Exception):
    """A command was used wrongly; its message is shown to the user as is."""


@dataclass(frozen=True)
class CommandSpec:
    """One slash command: its handler name, argument synopsis and help text."""

    name: str
    args: str
    help: str
    completes_users: bool = False


COMMANDS: list[CommandSpec] = [
    CommandSpec("/to", "USER text", "send a direct message to USER", True),
    CommandSpec("/chat", "ID", "switch the current chat (id, title, @user or general)"),
    CommandSpec("/chats", "", "list your chats with unread counts"),
    CommandSpec("/history", "[N]", "show the last N messages of the current chat"),
    CommandSpec("/comment", "MSG_ID text", "comment on a message"),
    CommandSpec("/edit", "MSG_ID text", "replace the text of a message you sent"),
    CommandSpec("/delete", "MSG_ID", "delete a message (yours, or any in a group you own)"),
    CommandSpec("/search", "WORDS", "find messages of your chats with all these words"),
    CommandSpec("/schedule", "WHEN text", "send later: 30s, 10m, 2h, 14:30 or an RFC 3339 time"),
    CommandSpec("/scheduled", "", "list your pending scheduled messages"),
    CommandSpec("/cancel", "ID", "cancel a scheduled message"),
    CommandSpec("/report", "USER [reason]", "report a user for abuse", True),
    CommandSpec("/block", "USER", "stop USER from messaging you, inviting or adding you", True),
    CommandSpec("/unblock", "USER", "lift a block", True),
    CommandSpec("/blocked", "", "list the users you block"),
    CommandSpec("/send", "--file PATH [text]", "send a file (and text) to the current chat"),
    CommandSpec("/download", "ID [PATH]", "download an attachment"),
    CommandSpec("/create", "TITLE [user ...]", "create a group chat (quote a TITLE with spaces)",
                True),
    CommandSpec("/invite", "USER", "add USER to the current chat (owner only)", True),
    CommandSpec("/link", "", "make a join link for the current chat (owner only)"),
    CommandSpec("/join", "LINK", "ask to join a chat through its link"),
    CommandSpec("/approve", "USER", "accept USER's request to join", True),
    CommandSpec("/decline", "USER", "refuse USER's request to join", True),
    CommandSpec("/leave", "", "leave the current chat"),
    CommandSpec("/status", "", "your account, quota, sessions and the server"),
    CommandSpec("/help", "", "this list"),
    CommandSpec("/quit", "", "disconnect and exit"),
]
COMMAND_NAMES = [spec.name for spec in COMMANDS]


class IdBook:
    """Ids seen in this session, shown short and resolved back from any unique prefix."""

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}
        self.message_chats: dict[str, str] = {}
        self.files: dict[str, str] = {}

    def add(self, full_id: str) -> None:
        """Remember an id."""
        self._ids[full_id] = None

    def short(self, full_id: str) -> str:
        """The id as displayed: its first characters (remembered for `resolve`)."""
        self.add(full_id)
        return full_id if len(full_id) <= SHORT_ID + 2 else full_id[:SHORT_ID]

    def resolve(self, text: str) -> str:
        """The full id for what the user typed: exact, else a unique known prefix, else as is."""
        text = text.strip().lstrip("(").rstrip(")")
        if text in self._ids:
            return text
        matches = [known for known in self._ids if known.startswith(text)]
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


class ReplCompleter(Completer):
    """Completes commands, then usernames seen so far (or chat labels after /chat)."""

    def __init__(self, usernames: Callable[[], Iterable[str]],
                 chat_labels: Callable[[], Iterable[str]]) -> None:
        self.usernames = usernames
        self.chat_labels = chat_labels

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterator[Completion]:
        """Yield the completions of the word before the cursor."""
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            for name in COMMAND_NAMES:
                if name.startswith(before):
                    yield Completion(name, start_position=-len(before))
            return
        command = before.split(" ", 1)[0]
        word = document.get_word_before_cursor(WORD=True)
        if command == "/chat":
            candidates: Iterable[str] = self.chat_labels()
        elif any(spec.completes_users and spec.name == command for spec in COMMANDS):
            candidates = self.usernames()
        else:
            return
        for candidate in sorted(set(candidates)):
            if candidate.lower().startswith(word.lower()) and candidate != word:
                yield Completion(candidate, start_position=-len(word))


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


SEARCH_LIMIT = 20


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


class Repl:
    """One logged-in REPL session: renders events and runs commands."""

    def __init__(self, client: MessengerClient, me: str, out: Output) -> None:
        self.client = client
        self.me = me

        def safe_out(line: str) -> None:
            # Every line passes here: others' text, names and titles reach the terminal
            # without control characters.
            out(printable(line))

        self.out = safe_out
        self.ids = IdBook()
        self.chats = ChatBook(me, self.ids)
        self.current = "general"
        self.usernames: set[str] = set()
        self.shown_messages: set[str] = set()
        self.shown_scheduled: set[tuple[str, str]] = set()
        self.join_requests: dict[str, list[str]] = {}
        # Chat events our own commands caused and already reported: (action, chat, user).
        self.announced: set[tuple[str, str, str]] = set()
        self.poll_loop: PollLoop | None = None
        self.cursor: int | None = None
        self.reads = ReadTracker(client)
        # Edits and deletions our own commands made and already printed.
        self.echoed_edits: set[tuple[str, str | None]] = set()
        self.echoed_deletes: set[str] = set()
        self.handlers: dict[str, Callable[[str], Awaitable[bool | None]]] = {
            "/to": self.cmd_to, "/chat": self.cmd_chat, "/chats": self.cmd_chats,
            "/history": self.cmd_history, "/comment": self.cmd_comment,
            "/schedule": self.cmd_schedule, "/scheduled": self.cmd_scheduled,
            "/cancel": self.cmd_cancel, "/report": self.cmd_report, "/send": self.cmd_send,
            "/block": self.cmd_block, "/unblock": self.cmd_unblock, "/blocked": self.cmd_blocked,
            "/download": self.cmd_download, "/create": self.cmd_create,
            "/invite": self.cmd_invite, "/link": self.cmd_link, "/join": self.cmd_join,
            "/approve": self.cmd_approve, "/decline": self.cmd_decline,
            "/leave": self.cmd_leave, "/status": self.cmd_status, "/help": self.cmd_help,
            "/quit": self.cmd_quit, "/exit": self.cmd_quit,
            "/edit": self.cmd_edit, "/delete": self.cmd_delete, "/search": self.cmd_search,
        }

    # -- state -----------------------------------------------------------------------------

    def prompt(self) -> str:
        """The prompt: the current chat's label."""
        return f"{self.chats.label(self.current)}> "

    async def refresh_chats(self) -> None:
        """Reload the chat list (and the usernames in it) from session.status."""
        status = await self.client.status()
        self.chats.replace(status["chats"])
        for chat in status["chats"]:
            self.usernames.update(chat["members"])
        if self.current not in self.chats.chats:
            self.current = "general"

    def remember_message(self, msg: Message) -> None:
        """Record a message's ids, author and files for completion and id resolution."""
        self.usernames.add(msg["author"])
        self.ids.add(msg["message_id"])
        self.ids.message_chats[msg["message_id"]] = msg["chat_id"]
        for item in msg.get("attachments") or []:
            if isinstance(item, dict):
                self.ids.add(item["file_id"])
                self.ids.files[item["file_id"]] = item.get("name", item["file_id"])

    async def show_message(self, msg: Message, *, again: bool = False) -> None:
        """Print a message once (or `again`, for /history)."""
        if msg["message_id"] in self.shown_messages and not again:
            return
        self.shown_messages.add(msg["message_id"])
        self.remember_message(msg)
        if msg["chat_id"] not in self.chats.chats:
            try:
                await self.refresh_chats()
            except MessengerError:
                pass
        self.out(format_message(msg, self.chats.label(msg["chat_id"]), self.ids.short))
        if msg["chat_id"] == self.current and msg["author"] != self.me:
            self.reads.mark(msg["chat_id"], msg["message_id"])  # shown: read

    def describe_scheduled(self, entry: Scheduled) -> str:
        """`ID at HH:MM → #chat: text`."""
        to = entry.get("to")
        target = f"@{to}" if to else self.chats.label(entry.get("chat_id") or "general")
        text = entry.get("text") or ""
        files = len(entry.get("attachments") or [])
        extra = f" (+{files} file{'s' if files != 1 else ''})" if files else ""
        return (f"{self.ids.short(entry['scheduled_id'])} at {day_and_clock(entry['send_at'])} "
                f"→ {target}: {text}{extra}")

    def show_scheduled(self, action: str, entry: Scheduled, reason: str | None = None) -> None:
        """Print a scheduled message's creation or cancellation once."""
        key = (entry["scheduled_id"], action)
        if key in self.shown_scheduled:
            return
        self.shown_scheduled.add(key)
        if action == "created":
            self.out(f"* scheduled {self.describe_scheduled(entry)}  "
                     f"(/cancel {self.ids.short(entry['scheduled_id'])})")
        else:
            why = f" ({reason.replace('_', ' ')})" if reason and reason != "cancelled" else ""
            self.out(f"* cancelled scheduled {self.ids.short(entry['scheduled_id'])}{why}")

    # -- events ----------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        """Render one event from the poll loop."""
        try:
            await self._render_event(event)
        except MessengerError as exc:
            self.out(f"! {describe_error(exc)}")
        except Exception:  # a malformed event must not stop the poll loop
            log.exception("cannot render event %r", event)
            self.out(f"* event: {event!r}")

    async def _render_event(self, event: Event) -> None:
        if event["type"] == "message":
            await self.show_message(event["message"])
        elif event["type"] == "scheduled":
            self.show_scheduled(event["action"], event["scheduled"], event.get("reason"))
        elif event["type"] == "chat":
            await self._chat_event(event["action"], event["chat_id"], event["username"])
        elif event["type"] == "join_request":
            user, chat_id = event["username"], event["chat_id"]
            self.usernames.add(user)
            pending = self.join_requests.setdefault(user, [])
            if chat_id not in pending:
                pending.append(chat_id)
            self.out(f"* {user} asks to join {self.chats.label(chat_id)}: "
                     f"/approve {user} or /decline {user}")
        elif event["type"] == "join_decided":
            if event["approved"]:
                await self.refresh_chats()
                self.out(f"* your request to join {self.chats.label(event['chat_id'])} "
                         f"was approved: /chat {self.chats.label(event['chat_id'])}")
            else:
                self.out(f"* your request to join {self.chats.label(event['chat_id'])} "
                         "was declined")
        elif event["type"] == "ban":
            self.out(f"* you are banned from sending until {clock(event['until'])}")
        elif event["type"] in ("message_edited", "message_deleted", "read"):
            self.render_essentials_event(event)
        else:
            self.out(f"* event: {event!r}")

    async def _chat_event(self, action: str, chat_id: str, user: str) -> None:
        self.usernames.add(user)
        if user == self.me or chat_id not in self.chats.chats:
            await self.refresh_chats()
        else:
            members = self.chats.chats[chat_id]["members"]
            if action == "left" and user in members:
                members.remove(user)
            elif action != "left" and user not in members:
                members.append(user)
        if (action, chat_id, user) in self.announced:
            self.announced.discard((action, chat_id, user))
            return
        label = self.chats.label(chat_id)
        who = "you" if user == self.me else user
        verb = {"added": "were added to" if who == "you" else "was added to",
                "joined": "joined", "left": "left"}.get(action, action)
        self.out(f"* {who} {verb} {label}")

    # -- commands --------------------------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            await self.send(chat_id=self.current, text=text)
            return True
        name, arg = split_first(line)
        handler = self.handlers.get(name.lower())
        if handler is None:
            self.out(f"! unknown command {name}: /help lists them")
            return True
        try:
            return await handler(arg) is not False
        except CommandError as exc:
            self.out(f"! {exc}")
        except RpcError as exc:
            self.out(f"! {describe_error(exc)}")
        except ServerUnavailable as exc:
            self.out(f"! {describe_error(exc)}")
        except OSError as exc:
            self.out(f"! {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except Exception as exc:  # a bug in one command must not end the session
            log.exception("command %s failed", name)
            self.out(f"! {name} failed: {exc!r}")
        return True

    async def send(self, *, chat_id: str | None = None, to: str | None = None,
                   text: str | None = None, attachments: list[str] | None = None,
                   comment_to: str | None = None, send_at: str | None = None) -> None:
        """Send and show the result at once (the echo from the poll is then skipped)."""
        try:
            result = await self.client.send(chat_id=chat_id, to=to, text=text,
                                            attachments=attachments, comment_to=comment_to,
                                            send_at=send_at)
        except MessengerError as exc:
            self.out(f"! {describe_error(exc)}")
            return
        if "message" in result:
            await self.show_message(result["message"])
        elif "scheduled" in result:
            self.show_scheduled("created", result["scheduled"])

    def _needs(self, arg: str, usage: str) -> str:
        if not arg.strip():
            raise CommandError(f"usage: {usage}")
        return arg.strip()

    async def cmd_help(self, arg: str) -> None:
        """List commands."""
        self.out("plain text goes to the current chat (start with // to send a leading /)")
        for spec in COMMANDS:
            self.out(f"  {spec.name + ' ' + spec.args:<28} {spec.help}")

    async def cmd_quit(self, arg: str) -> bool:
        """Leave the REPL."""
        return False

    async def cmd_to(self, arg: str) -> None:
        """Direct message."""
        user, text = split_first(self._needs(arg, "/to USER text"))
        if not text:
            raise CommandError("usage: /to USER text")
        await self.send(to=user.lstrip("@"), text=text)

    async def cmd_chat(self, arg: str) -> None:
        """Switch the current chat."""
        wanted = self._needs(arg, "/chat ID")
        chat_id = self.chats.resolve(wanted)
        if chat_id is None:
            await self.refresh_chats()
            chat_id = self.chats.resolve(wanted)
        if chat_id is None and wanted.startswith("@"):
            chat_id = self.chats.direct_with(wanted[1:])
        if chat_id is None:
            raise CommandError(f"no chat {wanted!r}: /chats lists yours")
        self.current = chat_id
        unread = self.chats.unread.get(chat_id)
        self.out(f"* now in {self.chats.label(chat_id)}"
                 + (f" ({unread} unread)" if unread else ""))
        if unread:  # they were printed as they came: reading the chat now
            self.reads.mark(chat_id, None)
            self.chats.unread[chat_id] = 0

    async def cmd_chats(self, arg: str) -> None:
        """List chats."""
        await self.refresh_chats()
        for chat_id, chat in self.chats.chats.items():
            marker = "*" if chat_id == self.current else " "
            unread = self.chats.unread.get(chat_id, 0)
            owner = chat.get("owner")
            self.out(f"{marker} {self.chats.label(chat_id):<20} {chat['kind']:<7} "
                     f"{len(chat['members'])} members  {unread} unread  id={chat_id}"
                     + (f"  owner={owner}" if owner else ""))

    async def cmd_history(self, arg: str) -> None:
        """Recent messages of the current chat."""
        try:
            limit = int(arg) if arg.strip() else HISTORY_DEFAULT
        except ValueError:
            raise CommandError("usage: /history [N]")
        result = await self.client.history(self.current, limit=max(1, min(limit, 100)))
        if not result["messages"]:
            self.out(f"* no messages in {self.chats.label(self.current)}")
        for msg in result["messages"]:
            await self.show_message(msg, again=True)

    async def cmd_comment(self, arg: str) -> None:
        """Comment on a message."""
        ref, text = split_first(self._needs(arg, "/comment MSG_ID text"))
        if not text:
            raise CommandError("usage: /comment MSG_ID text")
        message_id = self.ids.resolve(ref)
        chat_id = self.ids.message_chats.get(message_id, self.current)
        await self.send(chat_id=chat_id, text=text, comment_to=message_id)

    # -- edits, deletions, search and read receipts ---------------------------------------

    async def cmd_edit(self, arg: str) -> None:
        """Replace the text of one of your messages."""
        ref, text = split_first(self._needs(arg, "/edit MSG_ID text"))
        if not text:
            raise CommandError("usage: /edit MSG_ID text")
        message = (await self.client.edit(self.ids.resolve(ref), text))["message"]
        self.echoed_edits.add((message["message_id"], message.get("edited_at")))
        self.remember_message(message)
        label = self.chats.label(message["chat_id"])
        self.out("* edited: " + format_message(message, label, self.ids.short))

    async def cmd_delete(self, arg: str) -> None:
        """Delete a message."""
        message_id = self.ids.resolve(self._needs(arg, "/delete MSG_ID").split()[0])
        await self.client.delete(message_id)
        self.echoed_deletes.add(message_id)
        self.out(f"* deleted {self.ids.short(message_id)}")

    async def cmd_search(self, arg: str) -> None:
        """Messages of your chats with every word, newest first."""
        result = await self.client.search(self._needs(arg, "/search WORDS"), limit=SEARCH_LIMIT)
        found = result["messages"]
        if not found:
            self.out("* no message has all of these words")
            return
        more = " (more: add words to narrow it down)" if result["more"] else ""
        self.out(f"— {len(found)} match{'es' if len(found) != 1 else ''}, newest first{more} —")
        for msg in found:
            self.remember_message(msg)
            self.out(format_message(msg, self.chats.label(msg["chat_id"]), self.ids.short))

    def render_essentials_event(self, event: Event) -> None:
        """Print an edit, a deletion or a read receipt (not our own echoes)."""
        if event["type"] == "message_edited":
            msg = event["message"]
            key = (msg["message_id"], msg.get("edited_at"))
            if key in self.echoed_edits:
                self.echoed_edits.discard(key)
                return
            self.remember_message(msg)
            label = self.chats.label(msg["chat_id"])
            self.out("* edited: " + format_message(msg, label, self.ids.short))
        elif event["type"] == "message_deleted":
            if event["message_id"] in self.echoed_deletes:
                self.echoed_deletes.discard(event["message_id"])
                return
            self.out(f"* a message was deleted in {self.chats.label(event['chat_id'])} "
                     f"({self.ids.short(event['message_id'])})")
        elif event["type"] == "read" and event["username"] != self.me:
            chat = self.chats.chats.get(event["chat_id"])
            if chat is not None and chat["kind"] == "direct":
                self.out(f"* ✓ seen by {event['username']}: your messages in "
                         f"{self.chats.label(event['chat_id'])} up to "
                         f"{self.ids.short(event['message_id'])}")

    async def cmd_schedule(self, arg: str) -> None:
        """Schedule a message to the current chat."""
        when, text = split_first(self._needs(arg, "/schedule WHEN text"))
        if not text:
            raise CommandError("usage: /schedule WHEN text (WHEN: 30s, 10m, 2h, 14:30)")
        try:
            at = parse_when(when)
        except ValueError as exc:
            raise CommandError(str(exc))
        await self.send(chat_id=self.current, text=text, send_at=rfc3339(at))

    async def cmd_scheduled(self, arg: str) -> None:
        """List pending scheduled messages."""
        entries = (await self.client.scheduled())["scheduled"]
        if not entries:
            self.out("* nothing scheduled")
        for entry in entries:
            self.out(f"  {self.describe_scheduled(entry)}")

    async def cmd_cancel(self, arg: str) -> None:
        """Cancel a scheduled message."""
        scheduled_id = self.ids.resolve(self._needs(arg, "/cancel ID"))
        await self.client.cancel(scheduled_id)
        key = (scheduled_id, "cancelled")
        if key not in self.shown_scheduled:
            self.shown_scheduled.add(key)
            self.out(f"* cancelled scheduled {self.ids.short(scheduled_id)}")

    async def cmd_report(self, arg: str) -> None:
        """Report a user."""
        user, reason = split_first(self._needs(arg, "/report USER [reason]"))
        result = await self.client.report(user.lstrip("@"), reason or None)
        banned = result.get("banned_until")
        if not result["reports"]:
            self.out(f"* reported {user} (recorded, but not counted toward a ban: your account "
                     "is too new, or they are banned already"
                     + (f" until {clock(banned)})" if banned else ")"))
            return
        self.out(f"* reported {user} ({result['reports']} report"
                 f"{'s' if result['reports'] != 1 else ''} so far"
                 + (f"; banned until {clock(banned)})" if banned else ")"))

    async def cmd_block(self, arg: str) -> None:
        """Block a user."""
        user = self._needs(arg, "/block USER").split()[0].lstrip("@")
        await self.client.block(user)
        self.out(f"* blocked {user}: they can no longer message you 1-to-1, invite or add you "
                 f"(/unblock {user} to undo)")

    async def cmd_unblock(self, arg: str) -> None:
        """Lift a block."""
        user = self._needs(arg, "/unblock USER").split()[0].lstrip("@")
        await self.client.unblock(user)
        self.out(f"* unblocked {user}")

    async def cmd_blocked(self, arg: str) -> None:
        """List the users you block."""
        names = (await self.client.blocked())["usernames"]
        self.out("* you block: " + ", ".join(names) if names else "* you block nobody")

    async def cmd_send(self, arg: str) -> None:
        """Send a file (with optional text), or plain text, to the current chat."""
        arg = arg.strip()
        if not arg.startswith("--file"):
            await self.send(chat_id=self.current, text=self._needs(arg, "/send --file PATH"))
            return
        path_text, text = split_path(arg[len("--file"):])
        if not path_text:
            raise CommandError("usage: /send --file PATH [text]")
        path = Path(path_text).expanduser()
        progress = Progress(sys.stdout, f"uploading {path.name}")
        try:
            info = await self.client.upload(path, progress=progress)
        finally:
            progress.finish()
        self.ids.files[info["file_id"]] = info["name"]
        await self.send(chat_id=self.current, text=text or None,
                        attachments=[info["file_id"]])

    async def cmd_download(self, arg: str) -> None:
        """Download an attachment."""
        ref, dest_text = split_first(self._needs(arg, "/download ID [PATH]"))
        file_id = self.ids.resolve(ref.removeprefix("id="))
        dest = Path(dest_text).expanduser() if dest_text else Path(".")
        name = self.ids.files.get(file_id, file_id)
        progress = Progress(sys.stdout, f"downloading {name}")
        try:
            result = await self.client.download(file_id, dest, progress=progress,
                                                overwrite=False)
        finally:
            progress.finish()
        renamed = result.get("renamed_from")
        kept = f"; {renamed} exists, kept as is" if renamed else ""
        self.out(f"* saved {result['path']} ({human_size(result['size'])}{kept})")

    async def cmd_create(self, arg: str) -> None:
        """Create a group chat and switch to it."""
        try:
            words = shlex.split(self._needs(arg, "/create TITLE [user ...]"))
        except ValueError as exc:
            raise CommandError(f"/create: {exc}")
        title, members = words[0], [w.lstrip("@") for w in words[1:]]
        chat = (await self.client.create_chat(title, members or None))["chat"]
        self.chats.add(chat)
        self.usernames.update(chat["members"])
        self.current = chat["chat_id"]
        self.announced.add(("added", chat["chat_id"], self.me))
        self.out(f"* created {self.chats.label(chat['chat_id'])} with "
                 f"{', '.join(chat['members'])}; you are in it now")

    async def cmd_invite(self, arg: str) -> None:
        """Invite a user to the current chat."""
        user = self._needs(arg, "/invite USER").lstrip("@")
        await self.client.invite(self.current, user)
        self.announced.add(("added", self.current, user))
        self.out(f"* invited {user} to {self.chats.label(self.current)}")

    async def cmd_link(self, arg: str) -> None:
        """Make a join link."""
        link = (await self.client.link(self.current))["link"]
        self.out(f"* join link for {self.chats.label(self.current)}: {link}  "
                 f"(others type /join {link})")

    async def cmd_join(self, arg: str) -> None:
        """Ask to join through a link."""
        result = await self.client.join(self._needs(arg, "/join LINK"))
        if result["status"] == "member":
            await self.refresh_chats()
            self.out("* you are already a member: /chats lists your chats")
        else:
            self.out("* asked to join: waiting for the owner's answer")

    def _request_chat(self, user: str) -> str:
        """The chat of `user`'s join request: the current chat, else their only request."""
        pending = self.join_requests.get(user, [])
        if self.current in pending or not pending:
            return self.current
        if len(pending) == 1:
            return pending[0]
        raise CommandError(f"{user} asked to join several chats: /chat one of them first")

    async def _decide(self, arg: str, approve: bool) -> None:
        usage = "/approve USER" if approve else "/decline USER"
        user = self._needs(arg, usage).lstrip("@")
        chat_id = self._request_chat(user)
        if approve:
            await self.client.approve(chat_id, user)
            self.announced.add(("joined", chat_id, user))
        else:
            await self.client.decline(chat_id, user)
        pending = self.join_requests.get(user, [])
        if chat_id in pending:
            pending.remove(chat_id)
        self.out(f"* {'approved' if approve else 'declined'} {user} "
                 f"for {self.chats.label(chat_id)}")

    async def cmd_approve(self, arg: str) -> None:
        """Accept a join request."""
        await self._decide(arg, True)

    async def cmd_decline(self, arg: str) -> None:
        """Refuse a join request."""
        await self._decide(arg, False)

    async def cmd_leave(self, arg: str) -> None:
        """Leave the current chat."""
        chat_id = self.current
        label = self.chats.label(chat_id)
        await self.client.leave(chat_id)
        self.announced.add(("left", chat_id, self.me))
        self.chats.remove(chat_id)
        self.current = "general"
        self.out(f"* you left {label}; now in #general")

    async def cmd_status(self, arg: str) -> None:
        """Show session.status."""
        status = await self.client.status()
        self.chats.replace(status["chats"])
        quota, server = status["quota"], status["server"]
        unread = sum(chat["unread"] for chat in status["chats"])
        self.out(f"* {status['username']} on {self.client.server_url} "
                 f"(server {server['version']}, {server['users_online']} online)")
        self.out(f"  chats: {len(status['chats'])}, unread: {unread}, "
                 f"sessions: {len(status['sessions'])}")
        self.out(f"  general quota: {quota['remaining']}/{quota['limit']} left, "
                 f"resets at {clock(quota['resets_at'])}")
        banned = status.get("banned_until")
        self.out(f"  banned until {clock(banned)}" if banned else "  not banned")

    # -- lifecycle -------------------------------------------------------------------------

    def already_shown(self, event: Event) -> bool:
        """Whether rendering this event would print nothing new (a message in the history)."""
        if event["type"] == "message":
            return event["message"]["message_id"] in self.shown_messages
        if event["type"] == "scheduled":
            return (event["scheduled"]["scheduled_id"], event["action"]) in self.shown_scheduled
        return False

    async def show_backlog(self) -> None:
        """Print a label, then the events after the read marker not shown yet; remember the
        cursor to go on from."""
        cursor: int | None = None
        backlog: list[Event] = []
        while True:
            result = await self.client.poll(cursor, timeout=0, limit=100)
            backlog.extend(e for e in result["events"] if not self.already_shown(e))
            cursor = result["cursor"]
            if not result["more"]:
                break
        self.cursor = cursor
        count = len(backlog)
        self.out(f"— {count} new event{'s' if count != 1 else ''} while you were away —"
                 if count else "— no unread events —")
        for event in backlog:
            await self.on_event(event)

    def start_polling(self, on_fatal: Callable[[BaseException], None]) -> PollLoop:
        """Start the live poll loop; `on_fatal` hears of an error that stops it."""
        loop = PollLoop(self.client, self.on_event, cursor=self.cursor,
                        on_connection_lost=lambda exc: self.out("* reconnecting…"),
                        on_connection_restored=lambda: self.out("* reconnected"))
        task = loop.start()

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                on_fatal(exc)

        task.add_done_callback(done)
        self.poll_loop = loop
        return loop


async def _session(server: str, username: str, password: str, tty_input: Input | None) -> int:
    """Log in, show history and backlog, then prompt until /quit or Ctrl-D."""

    def out(line: str) -> None:
        print(line, flush=True)

    async with MessengerClient(server) as client:
        try:
            connected = await client.connect(username, password, client=CLIENT_LABEL)
        except MessengerError as exc:
            out(f"messenger: {describe_error(exc)}")
            return 3 if isinstance(exc, ServerUnavailable) else 1
        me = connected["username"]
        if connected.get("created"):
            # A mistyped name would otherwise silently become a new user.
            out(f"* new account created for {me} (no account had this name; "
                "check the spelling if you meant an existing one)")
        repl = Repl(client, me, out)
        try:
            return await _interact(repl, connected["history"], tty_input)
        finally:
            if repl.poll_loop is not None:
                try:
                    await repl.poll_loop.stop()
                except Exception:  # its fatal error was already shown
                    pass
            try:  # chats.read calls under way finish before the token ends
                await asyncio.wait_for(repl.reads.settle(), 5)
            except asyncio.TimeoutError:
                pass
            if client.token is not None:
                try:
                    await asyncio.wait_for(client.disconnect(), 5)
                except (MessengerError, asyncio.TimeoutError):
                    pass


async def _interact(repl: Repl, history: list[Message], tty_input: Input | None) -> int:
    session: PromptSession[str] = PromptSession(
        completer=ReplCompleter(lambda: repl.usernames, repl.chats.labels),
        complete_while_typing=False, input=tty_input)
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        text = describe_error(exc) if isinstance(exc, MessengerError) else repr(exc)
        repl.out(f"! poll stopped: {text}")
        if session.app.is_running:
            session.app.exit(exception=EOFError())

    with patch_stdout():
        try:
            await repl.refresh_chats()
        except MessengerError as exc:
            repl.out(f"! {describe_error(exc)}")
        repl.out(f"* connected to {repl.client.server_url} as {repl.me} "
                 f"— /help lists commands, Tab completes")
        if history:
            repl.out(f"— last {len(history)} message{'s' if len(history) != 1 else ''} "
                     "in #general —")
        for msg in history:
            await repl.show_message(msg)
        try:
            await repl.show_backlog()
        except MessengerError as exc:
            repl.out(f"! {describe_error(exc)}")
        repl.start_polling(on_fatal)
        while not fatal:
            try:
                line = await session.prompt_async(repl.prompt)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not await _run_interruptibly(repl, line):
                break
    return 1 if fatal else 0


async def _run_interruptibly(repl: Repl, line: str) -> bool:
    """Run one input line; Ctrl-C cancels it (not the REPL). False means quit."""
    task = asyncio.create_task(repl.execute(line))
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (NotImplementedError, RuntimeError):  # not the main thread / no signals here
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        repl.out("! interrupted")
        return True
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _read_password(args: argparse.Namespace, tty_input: Input | None) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise SystemExit("messenger: --password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    env = os.environ.get("MESSENGER_PASSWORD")
    if env is not None:
        return env
    session: PromptSession[str] = PromptSession(input=tty_input)
    return session.prompt("password: ", is_password=True)


def _terminal_input(args: argparse.Namespace) -> tuple[Input | None, str | None]:
    """prompt_toolkit input: stdin if it is a terminal, else /dev/tty after --password-stdin."""
    if not sys.stdout.isatty():
        return None, "stdout is not a terminal"
    if sys.stdin.isatty():
        return None, None
    if not args.password_stdin:
        return None, "stdin is not a terminal"
    try:
        tty = open("/dev/tty")
    except OSError:
        return None, "no terminal to read commands from"
    return create_input(stdin=tty), None


async def _unreachable(server: str) -> str | None:
    """Why the server cannot be reached, or None when it answers (any answer will do)."""
    async with MessengerClient(server, request_timeout=10) as client:
        try:
            await client.call("rpc.discover")
        except ServerUnavailable as exc:
            return str(exc)
        except MessengerError:
            pass
    return None


def run_repl(args: argparse.Namespace) -> int:
    """Run the interactive client for `messenger [--server URL] [--user NAME]`."""
    from .cli import resolve_server

    # Log records (e.g. a failed command) must never print tracebacks over the REPL.
    logging.getLogger("client").addHandler(logging.NullHandler())
    tty_input, problem = _terminal_input(args)
    if problem is not None:
        print(f"messenger: the interactive client needs a terminal ({problem}); "
              "in scripts use `messenger call METHOD key=value ...` or `messenger poll`",
              file=sys.stderr)
        return 2
    server = resolve_server(args.server)
    down = asyncio.run(_unreachable(server))
    if down is not None:  # say so before asking for a password that could not be used
        print(f"messenger: {down}; is the server running? (--server URL or "
              f"$MESSENGER_SERVER chooses another)", file=sys.stderr)
        return 3
    try:
        username = args.user
        if not username:
            username = PromptSession[str](input=tty_input).prompt("username: ").strip()
        password = _read_password(args, tty_input)
    except (EOFError, KeyboardInterrupt):
        return 130
    if not username:
        print("messenger: a username is needed (--user NAME)", file=sys.stderr)
        return 2
    return asyncio.run(_session(server, username, password, tty_input))


__all__ = ["COMMANDS", "ChatBook", "IdBook", "Repl", "ReplCompleter", "run_repl"]
