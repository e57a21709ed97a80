"""The async client library: one typed method per JSON-RPC method, plus poll and files.

The HTTP exchange, error mapping, the long poll and file transfer live in `transport.py`;
a new JSON-RPC method is one short method here (see "Adding a method" in the README).
"""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any, cast

from .errors import MessengerError, RpcError, ServerUnavailable
from .files import ProgressCallback
from .models import (
    BlockedList,
    ChatResult,
    ConnectResult,
    EditResult,
    Event,
    HistoryResult,
    JoinResult,
    LinkResult,
    PollResult,
    ReportResult,
    ScheduledList,
    SearchResult,
    SendResult,
    Status,
)
from .poll import EventHandler, PollLoop
from .transport import Transport, drop_none, poll_read_timeout

# Waits before the repeats of a send whose outcome is unknown (see `send_params`).
SEND_RETRY_DELAYS = (0.5, 1.0, 2.0)


def new_client_msg_id() -> str:
    """A fresh `client_msg_id`: the key that makes a send safe to retry."""
    return "c_" + secrets.token_urlsafe(12)


def _worth_retrying(exc: MessengerError) -> bool:
    """Whether a send failed in a way where repeating it may succeed (and is safe with
    its client_msg_id): the server unreachable, or 503 (its database restarting)."""
    return isinstance(exc, ServerUnavailable) or (
        isinstance(exc, RpcError) and exc.code == 503)


class MessengerClient(Transport):
    """An async client of one messenger server; use it as an async context manager.

    `call`, `poll`, `upload` and `download` come from `Transport`."""

    async def connect(self, username: str, password: str,
                      client: str | None = None) -> ConnectResult:
        """Log in (registering a new username); the client keeps the returned token."""
        result = await self.call("session.connect", drop_none(
            username=username, password=password, client=client))
        self.token = result["token"]
        return cast(ConnectResult, result)

    async def disconnect(self) -> None:
        """End this session; the token stops working."""
        await self.call("session.disconnect")
        self.token = None

    async def status(self) -> Status:
        """The user's read marker, chats, sessions, ban, quota and server facts."""
        return cast(Status, await self.call("session.status"))

    async def send(self, chat_id: str | None = None, to: str | None = None,
                   text: str | None = None, attachments: list[str] | None = None,
                   comment_to: str | None = None, send_at: str | None = None,
                   client_msg_id: str | None = None) -> SendResult:
        """Send (or schedule, with a future `send_at`) a message to a chat or a user.

        Safe to retry: see `send_params` (a fresh `client_msg_id` unless one is given).
        """
        return await self.send_params(drop_none(
            chat_id=chat_id, to=to, text=text, attachments=attachments,
            comment_to=comment_to, send_at=send_at, client_msg_id=client_msg_id))

    async def send_params(self, params: dict[str, Any]) -> SendResult:
        """`messages.send` with these params, retried safely when the outcome is unknown.

        The send carries a `client_msg_id` (a fresh one unless `params` has one). When the
        server cannot be reached, the connection breaks before the answer, or it answers
        503, the same send is repeated with the same id (SEND_RETRY_DELAYS): the server
        answers a repeat with the first message and sends nothing twice.
        """
        params = dict(params)
        params.setdefault("client_msg_id", new_client_msg_id())
        for delay in (*SEND_RETRY_DELAYS, None):
            try:
                return cast(SendResult, await self.call("messages.send", params))
            except (ServerUnavailable, RpcError) as exc:
                if delay is None or not _worth_retrying(exc):
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def edit(self, message_id: str, text: str) -> EditResult:
        """Replace the text of a message you sent."""
        return cast(EditResult, await self.call("messages.edit", {
            "message_id": message_id, "text": text}))

    async def delete(self, message_id: str) -> None:
        """Delete a message you sent (or any message of a group chat you own)."""
        await self.call("messages.delete", {"message_id": message_id})

    async def search(self, query: str, chat_id: str | None = None, before: str | None = None,
                     limit: int | None = None) -> SearchResult:
        """Messages of your chats with every word of `query`, newest first."""
        return cast(SearchResult, await self.call("messages.search", drop_none(
            query=query, chat_id=chat_id, before=before, limit=limit)))

    async def mark_read(self, chat_id: str, message_id: str | None = None) -> None:
        """Mark a chat read up to a message (default: its newest); never moves back."""
        await self.call("chats.read", drop_none(chat_id=chat_id, message_id=message_id))

    async def history(self, chat_id: str, before: str | None = None,
                      limit: int | None = None) -> HistoryResult:
        """Messages of a chat, oldest first, optionally before a message id."""
        return cast(HistoryResult, await self.call("messages.history", drop_none(
            chat_id=chat_id, before=before, limit=limit)))

    async def scheduled(self) -> ScheduledList:
        """The user's pending scheduled messages."""
        return cast(ScheduledList, await self.call("messages.scheduled"))

    async def cancel(self, scheduled_id: str) -> None:
        """Cancel a pending scheduled message."""
        await self.call("messages.cancel", {"scheduled_id": scheduled_id})

    async def report(self, username: str, reason: str | None = None) -> ReportResult:
        """Report a user; enough distinct reports ban them from sending."""
        return cast(ReportResult, await self.call("users.report", drop_none(
            username=username, reason=reason)))

    async def create_chat(self, title: str, members: list[str] | None = None) -> ChatResult:
        """Create a private group chat owned by the caller."""
        return cast(ChatResult, await self.call("chats.create", drop_none(
            title=title, members=members)))

    async def invite(self, chat_id: str, username: str) -> None:
        """Add a user to a chat the caller owns."""
        await self.call("chats.invite", {"chat_id": chat_id, "username": username})

    async def link(self, chat_id: str) -> LinkResult:
        """Make a fresh join link for a chat the caller owns (the previous one stops working)."""
        return cast(LinkResult, await self.call("chats.link", {"chat_id": chat_id}))

    async def join(self, link: str) -> JoinResult:
        """Ask to join a chat through its link."""
        return cast(JoinResult, await self.call("chats.join", {"link": link}))

    async def approve(self, chat_id: str, username: str) -> None:
        """Accept a pending join request."""
        await self.call("chats.approve", {"chat_id": chat_id, "username": username})

    async def decline(self, chat_id: str, username: str) -> None:
        """Refuse a pending join request."""
        await self.call("chats.decline", {"chat_id": chat_id, "username": username})

    async def leave(self, chat_id: str) -> None:
        """Leave a chat (not the general chat)."""
        await self.call("chats.leave", {"chat_id": chat_id})

    async def block(self, username: str) -> None:
        """Block a user: they can no longer message you 1-to-1, invite you or add you."""
        await self.call("users.block", {"username": username})

    async def unblock(self, username: str) -> None:
        """Lift a block."""
        await self.call("users.unblock", {"username": username})

    async def blocked(self) -> BlockedList:
        """The usernames you block."""
        return cast(BlockedList, await self.call("users.blocked"))

    async def discover(self) -> dict[str, Any]:
        """The server's OpenRPC document."""
        return await self.call("rpc.discover")

    async def events_poll(self, cursor: int | None = None, timeout: float | None = None,
                          limit: int | None = None) -> PollResult:
        """`events.poll`: the same answer as `poll()`, through JSON-RPC."""
        result = await self.call("events.poll", drop_none(
            cursor=cursor, timeout=timeout, limit=limit), timeout=poll_read_timeout(timeout))
        self._heard(result.get("events", []))
        return cast(PollResult, result)

    # -- the poll loop -------------------------------------------------------------------

    def poll_loop(self, handler: EventHandler | None = None, *, cursor: int | None = None,
                  timeout: float | None = None, limit: int | None = None) -> PollLoop:
        """A PollLoop over this client (not started: call `.start()` or `.run()`)."""
        return PollLoop(self, handler, cursor=cursor, timeout=timeout, limit=limit)

    def start_poll_loop(self, handler: EventHandler, *, cursor: int | None = None,
                        timeout: float | None = None) -> PollLoop:
        """Start a PollLoop task calling `handler` for every event; stop it with `.stop()`."""
        loop = self.poll_loop(handler, cursor=cursor, timeout=timeout)
        loop.start()
        return loop

    async def events(self, cursor: int | None = None, *, timeout: float | None = None,
                     limit: int | None = None) -> AsyncIterator[Event]:
        """Every event from `cursor` on, forever, reconnecting with backoff when needed."""
        loop = self.poll_loop(cursor=cursor, timeout=timeout, limit=limit)
        async for batch in loop.batches():
            for event in batch:
                yield event


__all__ = ["MessengerClient", "MessengerError", "ProgressCallback", "RpcError",
           "ServerUnavailable"]
