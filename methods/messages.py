"""messages.send, messages.history, messages.scheduled, messages.cancel, and delivery rules."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Required, TypedDict

import orjson

from methods import errors
from methods.base import Result, UserMethod
from methods.context import Caller, Request, Services, parse_rfc3339
from methods.rules import (
    check_direct_allowed, check_not_banned, check_quota, check_send_limit, existing_user,
    member_chat, message_in_chat, new_id, rejoin, release_send,
)
from methods.views import event_body, message_view, scheduled_view
from store.models import (
    GENERAL_CHAT, Chat, ChatId, MessageId, Scheduled, ScheduledId, StoredMessage, User, UserId,
)
from store.sql import SqlTx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """What a sender asked for, before it is checked and delivered."""

    author_id: UserId
    chat_id: str | None
    to: str | None
    text: str | None
    attachments: tuple[str, ...]
    comment_to: str | None
    client_msg_id: str | None = None  # the sender's retry key (messages.send)


def direct_key(a: UserId, b: UserId) -> str:
    """The one direct chat of a pair, whichever of them writes first."""
    lo, hi = sorted((int(a), int(b)))
    return f"{lo}:{hi}"


async def resolve_target(tx: SqlTx, author: User, draft: Draft, now: float,
                         create: bool) -> tuple[Chat | None, User | None]:
    """The chat a draft goes to (creating a direct chat when `create`), or the recipient."""
    if draft.to is not None:
        peer = await existing_user(tx, draft.to)
        chat = await tx.find_direct_chat(direct_key(author.user_id, peer.user_id))
        if chat is None and create:
            chat = Chat(ChatId(new_id("d")), "direct", None, None, now)
            await tx.create_chat(chat, direct_key(author.user_id, peer.user_id))
        if chat is not None and create:
            await rejoin(tx, chat.chat_id, {author.user_id, peer.user_id}, now)
        return chat, peer
    assert draft.chat_id is not None
    return await member_chat(tx, author.user_id, draft.chat_id), None


async def check_draft(tx: SqlTx, services: Services, author: User, draft: Draft,
                      chat_id: str | None, now: float) -> list[dict[str, object]]:
    """Rules every message obeys wherever it goes; the attachment objects."""
    if draft.text is not None and len(draft.text) > services.limits.max_text:
        raise errors.too_large(f"text longer than {services.limits.max_text} characters",
                               max_text=services.limits.max_text)
    if draft.comment_to is not None:
        # chat_id None is a direct chat that does not exist yet: nothing in it to comment on.
        await message_in_chat(tx, draft.comment_to, chat_id, now)
    attachments: list[dict[str, object]] = []
    for file_id in draft.attachments:
        f = await tx.get_file(file_id)
        if f is None or f.owner_id != author.user_id:
            raise errors.not_found("file", file_id=file_id)
        attachments.append({"file_id": f.file_id, "name": f.name, "size": f.size,
                            "content_type": f.content_type})
    return attachments


async def deliver(tx: SqlTx, services: Services, draft: Draft,
                  now: float) -> tuple[StoredMessage, dict[str, Any]]:
    """Check every rule and store the message with its event (one transaction).

    Returns the stored message and its wire form (built once, for the event and the reply).
    """
    await tx.prefetch_send(draft.author_id, draft.chat_id, draft.client_msg_id)  # 1 round trip
    author = await tx.get_user(draft.author_id)
    assert author is not None
    if draft.client_msg_id is not None:
        # A retry of a send that already happened: the first message, nothing new.
        first = await tx.find_client_message(author.user_id, draft.client_msg_id, now)
        if first is not None:
            return first, message_view(first)
    check_not_banned(author, now)
    chat, _ = await resolve_target(tx, author, draft, now, create=False)
    await check_direct_allowed(tx, author, chat, draft.to)
    attachments = await check_draft(tx, services, author, draft,
                                    None if chat is None else chat.chat_id, now)
    if chat is None or draft.to is not None:
        # A direct chat by name: created on the first message, and whoever left it is
        # brought back by the next one (a message is never sent into a chat nobody reads).
        chat, _ = await resolve_target(tx, author, draft, now, create=True)
        assert chat is not None
    elif chat.kind == "direct":
        await rejoin(tx, chat.chat_id, await tx.direct_pair(chat.chat_id), now)
    if chat.chat_id == GENERAL_CHAT:
        await check_quota(tx, services, author.user_id, now, consume=True)
    expires = now + services.limits.message_ttl
    message = StoredMessage(MessageId(new_id("m")), chat.chat_id, author.username,
                            author.user_id, draft.text, orjson.dumps(attachments).decode(),
                            None if draft.comment_to is None else MessageId(draft.comment_to),
                            now, expires, 0)
    view = message_view(message)
    stored = await tx.insert_message(message, event_body("message", message=view),
                                     draft.client_msg_id)
    for a in attachments:
        await tx.attach_file(stored.message_id, a["file_id"], chat.chat_id)  # type: ignore
    return stored, view


def draft_from(caller: Caller, params: SendParams) -> Draft:
    """A draft from validated `messages.send` params."""
    return Draft(caller.user_id, params.get("chat_id"), params.get("to"), params.get("text"),
                 tuple(params.get("attachments", ())), params.get("comment_to"),
                 params.get("client_msg_id"))


class SendParams(TypedDict, total=False):
    """messages.send's params."""

    chat_id: str
    to: str
    text: str
    attachments: list[str]
    comment_to: str
    send_at: str
    client_msg_id: str


class Send(UserMethod[SendParams]):
    """Send to a chat or a user now, or schedule it with `send_at`."""

    name = "messages.send"

    async def call(self, services: Services, caller: Caller, params: SendParams,
                   request: Request) -> Result:
        draft = draft_from(caller, params)
        if not draft.text and not draft.attachments:
            raise errors.invalid_params("a message needs text or attachments", "")
        now = services.now()
        send_at = None
        if "send_at" in params:
            send_at = parse_rfc3339(params["send_at"])
            if send_at is None:
                raise errors.invalid_params("send_at is not an RFC 3339 date-time",
                                            "/send_at")
            if send_at - now > services.limits.max_schedule_ahead:
                raise errors.invalid_params("send_at is more than a year ahead", "/send_at")
        try:
            check_send_limit(services, caller.user_id, now)  # every chat: bounds the disk
        except errors.RpcError:
            retried = await _already_sent(services, draft, now)
            if retried is None:
                raise
            return {"message": message_view(retried)}  # a retry stores nothing new
        try:
            if send_at is not None and send_at > now:
                return {"scheduled": await schedule(services, draft, send_at, now)}

            async def send(tx: SqlTx) -> tuple[StoredMessage, dict[str, Any]]:
                return await deliver(tx, services, draft, now)

            stored, view = await services.store.write(
                send, prefetch=(draft.author_id, draft.chat_id, draft.client_msg_id))
        except Exception:
            release_send(services, caller.user_id)  # nothing was stored
            raise
        if stored.sent_at != now:  # a retry of a client_msg_id already sent: nothing new
            release_send(services, caller.user_id)
        log.debug("%s sent %s to %s", caller.username, stored.message_id, stored.chat_id)
        return {"message": view}


async def _already_sent(services: Services, draft: Draft, now: float) -> StoredMessage | None:
    """The live message this draft's client_msg_id already sent, if any."""
    key = draft.client_msg_id
    if key is None:
        return None
    return await services.store.read(
        lambda tx: tx.find_client_message(draft.author_id, key, now))


async def check_scheduled_count(tx: SqlTx, services: Services, user_id: UserId) -> None:
    """429 (no retry_after: only sending or cancelling helps) at --max-scheduled pending."""
    await tx.lock_user(user_id)  # concurrent schedules of one user count one at a time
    limit = services.limits.max_scheduled
    if await tx.count_pending_scheduled(user_id) >= limit:
        raise errors.RpcError(errors.ErrorCode.TOO_MANY_REQUESTS,
                              f"{limit} scheduled messages are pending already", {"limit": limit})


async def schedule(services: Services, draft: Draft, send_at: float,
                   now: float) -> dict[str, object]:
    """Check the draft as if it were sent now, then store it for later."""

    async def store_it(tx: SqlTx) -> Scheduled:
        author = await tx.get_user(draft.author_id)
        assert author is not None
        check_not_banned(author, now)
        chat, _ = await resolve_target(tx, author, draft, now, create=False)
        await check_direct_allowed(tx, author, chat, draft.to)
        chat_id = None if chat is None else chat.chat_id
        await check_draft(tx, services, author, draft, chat_id, now)
        if chat_id == GENERAL_CHAT:
            await check_quota(tx, services, author.user_id, now, consume=False)
        await check_scheduled_count(tx, services, author.user_id)
        entry = Scheduled(ScheduledId(new_id("s")), author.user_id,
                          None if draft.chat_id is None else ChatId(draft.chat_id), draft.to,
                          draft.text, orjson.dumps(list(draft.attachments)).decode(),
                          None if draft.comment_to is None else MessageId(draft.comment_to),
                          send_at, now, "pending", None)
        await tx.insert_scheduled(entry)
        await tx.add_user_event(author.user_id, "scheduled", event_body(
            "scheduled", action="created", scheduled=scheduled_view(entry)))
        return entry

    entry = await services.store.write(store_it)
    services.schedule_changed.set()
    log.info("scheduled %s for %s", entry.scheduled_id, entry.send_at)
    return scheduled_view(entry)


class HistoryParams(TypedDict, total=False):
    """messages.history's params."""

    chat_id: Required[str]
    before: str
    limit: int


class History(UserMethod[HistoryParams]):
    """A page of a chat's live messages, oldest first; `before` pages further back."""

    name = "messages.history"

    async def call(self, services: Services, caller: Caller, params: HistoryParams,
                   request: Request) -> Result:
        chat_id: str = params["chat_id"]
        limit = int(params.get("limit", 50))  # JSON Schema counts 2.0 as an integer
        before: str | None = params.get("before")
        now = services.now()

        async def page(tx: SqlTx) -> Result:
            await member_chat(tx, caller.user_id, chat_id)
            before_seq = None
            if before is not None:
                before_seq = (await message_in_chat(tx, before, chat_id, now)).seq
            rows = await tx.history(chat_id, before_seq, limit + 1, now)
            more = len(rows) > limit
            rows = rows[-limit:]
            return {"messages": [message_view(m) for m in rows], "more": more}

        return await services.store.read(page)


class ScheduledParams(TypedDict):
    """messages.scheduled's params (none)."""


class ScheduledList(UserMethod[ScheduledParams]):
    """The caller's pending scheduled messages, soonest first."""

    name = "messages.scheduled"

    async def call(self, services: Services, caller: Caller, params: ScheduledParams,
                   request: Request) -> Result:
        rows = await services.store.read(lambda tx: tx.pending_scheduled(caller.user_id))
        return {"scheduled": [scheduled_view(s) for s in rows]}


class CancelParams(TypedDict):
    """messages.cancel's params."""

    scheduled_id: str


class Cancel(UserMethod[CancelParams]):
    """Cancel a pending scheduled message of the caller's."""

    name = "messages.cancel"

    async def call(self, services: Services, caller: Caller, params: CancelParams,
                   request: Request) -> Result:
        scheduled_id: str = params["scheduled_id"]

        async def cancel(tx: SqlTx) -> None:
            entry = await tx.get_scheduled(scheduled_id)
            if entry is None or entry.user_id != caller.user_id:
                raise errors.not_found("scheduled message", scheduled_id=scheduled_id)
            if entry.state != "pending":
                raise errors.conflict(f"scheduled message already {entry.state}",
                                      scheduled_id=scheduled_id, state=entry.state,
                                      message_id=entry.message_id)
            await tx.finish_scheduled(scheduled_id, "cancelled", None)
            await tx.add_user_event(caller.user_id, "scheduled", event_body(
                "scheduled", action="cancelled", scheduled=scheduled_view(entry),
                reason="cancelled"))

        await services.store.write(cancel)
        services.schedule_changed.set()
        log.info("%s cancelled %s", caller.username, scheduled_id)
        return {}


async def _drop_scheduled(entry: Scheduled, exc: errors.RpcError, tx: SqlTx) -> None:
    """Cancel a scheduled message that a rule refused at firing time, telling its author."""
    current = await tx.get_scheduled(entry.scheduled_id)
    if current is None or current.state != "pending":
        return
    await tx.finish_scheduled(entry.scheduled_id, "cancelled", None)
    reason = (exc.data or {}).get("reason") or {
        429: "rate_limited", 404: "not_found", 403: "forbidden",
        413: "too_large"}.get(int(exc.code), "rejected")
    await tx.add_user_event(entry.user_id, "scheduled", event_body(
        "scheduled", action="cancelled", scheduled=scheduled_view(entry), reason=reason))


async def fire_due(services: Services, limit: int = 100) -> int:
    """Deliver every scheduled message that is due, each exactly once; how many were handled."""
    now = services.now()
    due = await services.store.read(lambda tx: tx.due_scheduled(now, limit))
    for entry in due:
        draft = Draft(entry.user_id, entry.chat_id, entry.to_user, entry.text,
                      tuple(orjson.loads(entry.attachments)), entry.comment_to)

        async def fire(tx: SqlTx, entry: Scheduled = entry, draft: Draft = draft) -> None:
            current = await tx.get_scheduled(entry.scheduled_id)
            if current is None or current.state != "pending":
                return  # cancelled meanwhile, or fired by another process
            # A rule refusing it raises, and the store undoes whatever this job wrote.
            stored, _ = await deliver(tx, services, draft, now)
            await tx.finish_scheduled(entry.scheduled_id, "sent", stored.message_id)

        try:
            await services.store.write(fire)
        except errors.RpcError as exc:
            await services.store.write(functools.partial(_drop_scheduled, entry, exc))
            log.info("scheduled %s dropped at send time: %s", entry.scheduled_id, exc.message)
    return len(due)


METHODS = (Send, History, ScheduledList, Cancel)
