"""One logged-in REPL session's state and rendering: chats, ids, events, sends.

The slash commands (client/repl_commands.py) work on a `Session`; `client.repl.Repl` adds
the command dispatch, the backlog and the live poll loop.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from .api import MessengerClient
from .errors import MessengerError
from .models import Event, Message, Scheduled
from .poll import PollLoop
from .render import clock, day_and_clock, describe_error, format_message, printable
from .repl_books import ChatBook, IdBook, ReadTracker

log = logging.getLogger(__name__)

Output = Callable[[str], None]


class Session:
    """One logged-in REPL session: what it knows and how it prints it."""

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
