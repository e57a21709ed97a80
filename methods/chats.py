"""Private group chats: create, invite, link, join, approve, decline, leave."""
from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Required, TypedDict

from methods import errors
from methods.base import Result, UserMethod
from methods.context import Caller, Request, Services
from methods.logsafe import clean, info_per_account
from methods.rules import (
    check_caller_not_banned, check_not_blocked, existing_user, member_chat, new_id, owned_chat,
    owns,
)
from methods.views import chat_view, event_body
from store.models import GENERAL_CHAT, Chat, ChatId, UserId
from store.sql import SqlTx

log = logging.getLogger(__name__)


def link_hash(link: str) -> str:
    """Join links are stored hashed, like tokens."""
    return hashlib.sha256(link.encode()).hexdigest()


async def member_event(tx: SqlTx, chat_id: ChatId, action: str, username: str) -> None:
    """A `chat` event for every member of the chat."""
    await tx.add_chat_event(chat_id, "chat", event_body("chat", action=action, chat_id=chat_id,
                                                        username=username))


async def chat_result(tx: SqlTx, chat: Chat, viewer: str) -> Result:
    """`{"chat": ...}` as the viewer sees it."""
    members = await tx.member_names(chat.chat_id)
    owner = None
    if chat.owner_id is not None:
        o = await tx.get_user(chat.owner_id)
        owner = None if o is None else o.username
    return {"chat": chat_view(chat, members, owner, viewer)}


class CreateParams(TypedDict, total=False):
    """chats.create's params."""

    title: Required[str]
    members: list[str]


class Create(UserMethod[CreateParams]):
    """Create a private group chat owned by the caller, inviting members at once."""

    name = "chats.create"

    async def call(self, services: Services, caller: Caller, params: CreateParams,
                   request: Request) -> Result:
        title: str = params["title"].strip()
        if not title:
            raise errors.invalid_params("title must not be blank", "/title")
        invited: list[str] = params.get("members", [])
        now = services.now()

        async def create(tx: SqlTx) -> Result:
            users = [await existing_user(tx, name) for name in invited]
            if users:
                await check_caller_not_banned(tx, caller, now)  # nor add others
            chat = Chat(ChatId(new_id("g")), "group", title, caller.user_id, now)
            await tx.create_chat(chat)
            await tx.add_member(chat.chat_id, caller.user_id, now)
            await member_event(tx, chat.chat_id, "added", caller.username)
            seen = {caller.user_id}
            for user in users:
                if user.user_id in seen:
                    continue
                seen.add(user.user_id)
                if await tx.blocks(user.user_id, caller.user_id):
                    continue  # created without those who block the creator (see the schema)
                await tx.add_member(chat.chat_id, user.user_id, now)
                await member_event(tx, chat.chat_id, "added", user.username)
            return await chat_result(tx, chat, caller.username)

        result = await services.store.write(create)
        log.info("%s created chat %s", caller.username, result["chat"]["chat_id"])
        return result


class InviteParams(TypedDict):
    """chats.invite's params."""

    chat_id: str
    username: str


class Invite(UserMethod[InviteParams]):
    """The owner adds a user to the chat."""

    name = "chats.invite"

    async def call(self, services: Services, caller: Caller, params: InviteParams,
                   request: Request) -> Result:
        now = services.now()

        async def invite(tx: SqlTx) -> None:
            chat = await owned_chat(tx, caller, params["chat_id"])
            user = await existing_user(tx, params["username"])
            if await tx.is_member(chat.chat_id, user.user_id):
                return
            await check_caller_not_banned(tx, caller, now)  # nor add others
            await check_not_blocked(tx, user, caller.user_id)
            await tx.add_member(chat.chat_id, user.user_id, now)
            await member_event(tx, chat.chat_id, "added", user.username)
            if await tx.take_join_request(chat.chat_id, user.user_id):
                await tx.add_user_event(user.user_id, "join_decided", event_body(
                    "join_decided", chat_id=chat.chat_id, approved=True))

        await services.store.write(invite)
        log.info("%s invited %s to %s", caller.username, params["username"], params["chat_id"])
        return {}


class LinkParams(TypedDict):
    """chats.link's params."""

    chat_id: str


class Link(UserMethod[LinkParams]):
    """The owner makes a fresh join link; the previous one stops working."""

    name = "chats.link"

    async def call(self, services: Services, caller: Caller, params: LinkParams,
                   request: Request) -> Result:
        link = secrets.token_urlsafe(24)  # 192 bits

        async def relink(tx: SqlTx) -> None:
            chat = await owned_chat(tx, caller, params["chat_id"])
            await tx.set_link(chat.chat_id, link_hash(link))

        await services.store.write(relink)
        info_per_account(log, caller.username, "%s made a new join link for %s",
                         caller.username, clean(params["chat_id"]))
        return {"link": link}


class JoinParams(TypedDict):
    """chats.join's params."""

    link: str


class Join(UserMethod[JoinParams]):
    """Ask to join the chat of a link; the owner decides."""

    name = "chats.join"

    async def call(self, services: Services, caller: Caller, params: JoinParams,
                   request: Request) -> Result:
        now = services.now()

        async def join(tx: SqlTx) -> Result:
            chat = await tx.chat_by_link(link_hash(params["link"]))
            if chat is None or chat.owner_id is None:
                raise errors.not_found("link")
            if await tx.is_member(chat.chat_id, caller.user_id):
                return {"status": "member", "chat_id": chat.chat_id}
            owner = await tx.get_user(chat.owner_id)
            if owner is not None:  # whom the owner blocks cannot ask them either
                await check_not_blocked(tx, owner, caller.user_id)
            if await tx.add_join_request(chat.chat_id, caller.user_id, now):
                await tx.add_user_event(chat.owner_id, "join_request", event_body(
                    "join_request", chat_id=chat.chat_id, username=caller.username))
            return {"status": "pending", "chat_id": chat.chat_id}

        result = await services.store.write(join)
        log.info("%s asked to join %s", caller.username, result["chat_id"])
        return result


class DecideParams(TypedDict):
    """chats.approve's and chats.decline's params."""

    chat_id: str
    username: str


class _Decide(UserMethod[DecideParams]):
    """Shared body of approve/decline: the owner answers a pending request."""

    approve = False

    async def call(self, services: Services, caller: Caller, params: DecideParams,
                   request: Request) -> Result:
        now = services.now()

        async def decide(tx: SqlTx) -> None:
            chat = await owned_chat(tx, caller, params["chat_id"])
            user = await existing_user(tx, params["username"])
            if not await tx.take_join_request(chat.chat_id, user.user_id):
                raise errors.not_found("join request", chat_id=chat.chat_id,
                                       username=user.username)
            if self.approve:
                await tx.add_member(chat.chat_id, user.user_id, now)
                await member_event(tx, chat.chat_id, "joined", user.username)
            await tx.add_user_event(user.user_id, "join_decided", event_body(
                "join_decided", chat_id=chat.chat_id, approved=self.approve))

        await services.store.write(decide)
        log.info("%s %s %s for %s", caller.username,
                 "approved" if self.approve else "declined", params["username"],
                 params["chat_id"])
        return {}


class Approve(_Decide):
    """The owner lets a requester in."""

    name = "chats.approve"
    approve = True


class Decline(_Decide):
    """The owner refuses a request."""

    name = "chats.decline"
    approve = False


class LeaveParams(TypedDict):
    """chats.leave's params."""

    chat_id: str


class Leave(UserMethod[LeaveParams]):
    """Leave a chat; an owner who leaves hands the chat to the longest-standing member."""

    name = "chats.leave"

    async def call(self, services: Services, caller: Caller, params: LeaveParams,
                   request: Request) -> Result:
        chat_id: str = params["chat_id"]

        async def leave(tx: SqlTx) -> None:
            if chat_id == GENERAL_CHAT:
                raise errors.forbidden("the general chat cannot be left", chat_id=chat_id)
            chat = await member_chat(tx, caller.user_id, chat_id)
            await member_event(tx, chat.chat_id, "left", caller.username)
            await tx.remove_member(chat.chat_id, caller.user_id)
            if owns(chat, caller.user_id):
                rest = await tx.member_ids(chat.chat_id)
                heir: UserId | None = rest[0] if rest else None
                await tx.set_chat_owner(chat.chat_id, heir)
                if heir is not None:  # the new owner inherits the pending requests
                    for req in await tx.join_requests(chat.chat_id):
                        await tx.add_user_event(heir, "join_request", event_body(
                            "join_request", chat_id=chat.chat_id, username=req.username))
                else:
                    await tx.set_link(chat.chat_id, None)
                    for req in await tx.join_requests(chat.chat_id):
                        await tx.take_join_request(chat.chat_id, req.user_id)
                        await tx.add_user_event(req.user_id, "join_decided", event_body(
                            "join_decided", chat_id=chat.chat_id, approved=False))

        await services.store.write(leave)
        log.info("%s left %s", caller.username, chat_id)
        return {}


METHODS = (Create, Invite, Link, Join, Approve, Decline, Leave)
