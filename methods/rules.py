"""The rules more than one method obeys, each written once: ids, membership, ownership,
bans, blocks, the general chat's quota and who joins what."""
from __future__ import annotations

import math
import secrets
import time
from typing import Iterable

from methods import errors
from methods.context import Caller, Services, rfc3339
from store.models import GENERAL_CHAT, Chat, ChatId, StoredMessage, User, UserId
from store.sql import SqlTx


def new_id(prefix: str) -> str:
    """An opaque, unguessable id (96 random bits) that sorts by creation time.

    It starts with the millisecond it was made in, 11 hex digits (in the same order under
    any collation), so the ids of rows written together sit together in an index: a batch
    of sends dirties one page of each index on message ids, instead of one random page per
    message (which the database then writes again on every commit: in SQLite's log, about
    half of what a send wrote).
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:011x}{secrets.token_urlsafe(12)}"


# -- accounts ---------------------------------------------------------------------------

async def register_user(tx: SqlTx, username: str, pw_hash: str, now: float) -> User | None:
    """A new account, a member of the general chat like everyone; None if the name is taken."""
    user = await tx.create_user(username, pw_hash, now)
    if user is not None:
        await tx.add_member(GENERAL_CHAT, user.user_id, now)
    return user


async def existing_user(tx: SqlTx, username: str) -> User:
    """A user by name, or 404."""
    user = await tx.find_user(username)
    if user is None:
        raise errors.not_found("user", username=username)
    return user


async def caller_user(tx: SqlTx, caller: Caller) -> User:
    """The caller's own account (users are never deleted, so it exists)."""
    user = await tx.get_user(caller.user_id)
    assert user is not None
    return user


# -- bans --------------------------------------------------------------------------------

def banned_until(user: User, now: float) -> float | None:
    """When the user's ban ends, if they are banned now."""
    if user.banned_until is not None and user.banned_until > now:
        return user.banned_until
    return None


def check_not_banned(user: User, now: float) -> None:
    """403 with reason `banned` while the user is banned."""
    until = banned_until(user, now)
    if until is not None:
        raise errors.forbidden("you are banned from sending", reason="banned",
                               until=rfc3339(until))


async def check_caller_not_banned(tx: SqlTx, caller: Caller, now: float) -> User:
    """The caller's account, or 403 `banned` (a banned user may not write or add others)."""
    user = await caller_user(tx, caller)
    check_not_banned(user, now)
    return user


# -- chats: membership and ownership ----------------------------------------------------

async def member_chat(tx: SqlTx, user_id: UserId, chat_id: str) -> Chat:
    """A chat the user is a member of; 404 unknown, 403 not a member."""
    chat = await tx.get_chat(chat_id)
    if chat is None:
        raise errors.not_found("chat", chat_id=chat_id)
    if not await tx.is_member(chat.chat_id, user_id):
        raise errors.forbidden("not a member of this chat", chat_id=chat_id)
    return chat


async def readable_message(tx: SqlTx, user_id: UserId, message_id: str,
                           now: float) -> StoredMessage:
    """A live message of a chat the user is a member of; 404 otherwise (a message of
    someone else's chat is not revealed to exist)."""
    message = await tx.get_message(message_id, now)
    if message is None or not await tx.is_member(message.chat_id, user_id):
        raise errors.not_found("message", message_id=message_id)
    return message


async def message_in_chat(tx: SqlTx, message_id: str, chat_id: str | None,
                          now: float) -> StoredMessage:
    """A live message of the chat `chat_id` (an anchor, a target, a message commented
    on); 404 otherwise."""
    message = await tx.get_message(message_id, now)
    if message is None or message.chat_id != chat_id:
        raise errors.not_found("message in this chat", message_id=message_id)
    return message


def owns(chat: Chat, user_id: UserId) -> bool:
    """Whether the user owns the chat (only group chats have an owner)."""
    return chat.kind == "group" and chat.owner_id == user_id


async def owned_chat(tx: SqlTx, caller: Caller, chat_id: str) -> Chat:
    """The group chat `chat_id` if the caller owns it; 404 / 403 otherwise."""
    chat = await tx.get_chat(chat_id)
    if chat is None or chat.kind != "group":
        if chat is not None and await tx.is_member(chat_id, caller.user_id):
            raise errors.forbidden("only group chats have an owner", chat_id=chat_id)
        raise errors.not_found("chat", chat_id=chat_id)
    if not owns(chat, caller.user_id):
        raise errors.forbidden("only the chat's owner may do this", chat_id=chat_id)
    return chat


async def rejoin(tx: SqlTx, chat_id: ChatId, user_ids: Iterable[UserId], now: float) -> None:
    """Bring back whoever of `user_ids` left the chat (a direct chat's pair: a message is
    never sent into a chat nobody reads)."""
    for uid in user_ids:
        if not await tx.is_member(chat_id, uid):
            await tx.add_member(chat_id, uid, now)


# -- blocks ------------------------------------------------------------------------------

def blocked_error(username: str) -> errors.RpcError:
    """403 with reason `blocked`: the other user blocks the caller."""
    return errors.forbidden(f"{username} does not accept this from you", reason="blocked",
                            username=username)


async def check_not_blocked(tx: SqlTx, user: User, by: UserId) -> None:
    """403 `blocked` when `user` blocks `by` (the one who writes, invites or adds)."""
    if user.user_id != by and await tx.blocks(user.user_id, by):
        raise blocked_error(user.username)


async def check_direct_allowed(tx: SqlTx, author: User, chat: Chat | None,
                               to: str | None) -> None:
    """A 1-to-1 message (by username, or into a direct chat) is refused when the other
    person blocks the author; group and general chats are unaffected."""
    peers: list[User] = []
    if to is not None:
        peer = await tx.find_user(to)
        peers = [] if peer is None else [peer]
    elif chat is not None and chat.kind == "direct":
        for uid in await tx.direct_pair(chat.chat_id):
            other = await tx.get_user(uid)
            if other is not None:
                peers.append(other)
    for peer in peers:
        await check_not_blocked(tx, peer, author.user_id)


# -- every chat's send limit -------------------------------------------------------------

def check_send_limit(services: Services, user_id: UserId, now: float) -> None:
    """429 with retry_after past --send-limit messages in the fixed --send-period window,
    all chats together; else count one (`release_send` gives it back). Counted in memory,
    per server process."""
    limit, period = services.limits.send_limit, services.limits.send_period
    window = math.floor(now / period) * period
    counts = services.send_counts
    if counts.count(user_id, window) >= limit:
        retry = max(1, math.ceil(window + period - now))
        raise errors.too_many(
            f"limit of {limit} messages per {period:g} seconds reached", retry, limit=limit)
    counts.add(user_id)


def release_send(services: Services, user_id: UserId) -> None:
    """A counted send stored nothing new (refused, or a retry of one already sent)."""
    services.send_counts.add(user_id, -1)


# -- the general chat's quota ------------------------------------------------------------

def quota_window(services: Services, now: float) -> float:
    """Start of the fixed general-chat quota window containing `now`."""
    period = services.limits.rate_period
    return math.floor(now / period) * period


async def check_quota(tx: SqlTx, services: Services, user_id: UserId, now: float,
                      consume: bool) -> None:
    """429 with retry_after when the general-chat window is used up; else count one."""
    window = quota_window(services, now)
    used = await tx.quota_used(user_id, window)
    if used >= services.limits.rate_limit:
        retry = max(1, math.ceil(window + services.limits.rate_period - now))
        raise errors.too_many(
            f"general chat limit of {services.limits.rate_limit} messages reached", retry,
            limit=services.limits.rate_limit)
    if consume:
        await tx.quota_add(user_id, window)
