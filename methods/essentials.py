"""messages.edit, messages.delete, messages.search and chats.read: the messenger essentials."""
from __future__ import annotations

import logging
from typing import Required, TypedDict

from methods import errors
from methods.base import Result, UserMethod
from methods.context import Caller, Request, Services
from methods.rules import (
    check_caller_not_banned, member_chat, message_in_chat, owns, readable_message,
)
from methods.views import event_body, message_view
from store.models import Chat, StoredMessage
from store.sql import SqlTx
from store.sql_messages import search_words

log = logging.getLogger(__name__)

MAX_QUERY_WORDS = 16  # every word is one more index lookup


async def visible_message(tx: SqlTx, caller: Caller, message_id: str,
                          now: float) -> tuple[StoredMessage, Chat]:
    """A live message of a chat the caller is a member of, and its chat; 404 otherwise (a
    message of someone else's chat is not revealed to exist)."""
    message = await readable_message(tx, caller.user_id, message_id, now)
    chat = await tx.get_chat(message.chat_id)
    assert chat is not None
    return message, chat


def may_delete(caller: Caller, message: StoredMessage, chat: Chat) -> bool:
    """The author may take a message back; the owner of a group chat may remove any."""
    return message.author_id == caller.user_id or owns(chat, caller.user_id)


class EditParams(TypedDict):
    """messages.edit's params."""

    message_id: str
    text: str


class Edit(UserMethod[EditParams]):
    """The author replaces a live message's text; members get `message_edited`."""

    name = "messages.edit"

    async def call(self, services: Services, caller: Caller, params: EditParams,
                   request: Request) -> Result:
        message_id: str = params["message_id"]
        text: str = params["text"]
        if len(text) > services.limits.max_text:
            raise errors.too_large(f"text longer than {services.limits.max_text} characters",
                                   max_text=services.limits.max_text)
        now = services.now()

        async def edit(tx: SqlTx) -> Result:
            message, _ = await visible_message(tx, caller, message_id, now)
            if message.author_id != caller.user_id:
                raise errors.forbidden("only the author may edit a message",
                                       message_id=message_id)
            await check_caller_not_banned(tx, caller, now)
            edited = await tx.edit_message(message, text, now)
            view = message_view(edited)
            await tx.add_chat_event(edited.chat_id, "message_edited",
                                    event_body("message_edited", message=view),
                                    edited.message_id, edited.expires_at)
            return {"message": view}

        result = await services.store.write(edit)
        log.info("%s edited %s", caller.username, message_id)
        return result


class DeleteParams(TypedDict):
    """messages.delete's params."""

    message_id: str


class Delete(UserMethod[DeleteParams]):
    """The author (or a group chat's owner) removes a message; members get `message_deleted`."""

    name = "messages.delete"

    async def call(self, services: Services, caller: Caller, params: DeleteParams,
                   request: Request) -> Result:
        message_id: str = params["message_id"]
        now = services.now()

        async def delete(tx: SqlTx) -> None:
            message, chat = await visible_message(tx, caller, message_id, now)
            if not may_delete(caller, message, chat):
                raise errors.forbidden("only the author or the chat's owner may delete it",
                                       message_id=message_id)
            await tx.delete_message(message)
            # Expires with the message it speaks of: afterwards nobody has that one anyway.
            await tx.add_chat_event(message.chat_id, "message_deleted", event_body(
                "message_deleted", chat_id=message.chat_id, message_id=message.message_id),
                expires_at=message.expires_at)

        await services.store.write(delete)
        log.info("%s deleted %s", caller.username, message_id)
        return {}


class SearchParams(TypedDict, total=False):
    """messages.search's params."""

    query: Required[str]
    chat_id: str
    before: str
    limit: int


class Search(UserMethod[SearchParams]):
    """Live messages with every word of the query, in the caller's chats, newest first."""

    name = "messages.search"

    async def call(self, services: Services, caller: Caller, params: SearchParams,
                   request: Request) -> Result:
        words = list(dict.fromkeys(search_words(params["query"]).split()))
        if not words:
            raise errors.invalid_params("the query has no words", "/query")
        if len(words) > MAX_QUERY_WORDS:
            raise errors.invalid_params(f"at most {MAX_QUERY_WORDS} words", "/query")
        chat_id: str | None = params.get("chat_id")
        before: str | None = params.get("before")
        limit = int(params.get("limit", 20))
        now = services.now()

        async def search(tx: SqlTx) -> Result:
            if chat_id is not None:
                await member_chat(tx, caller.user_id, chat_id)
            before_seq = None
            if before is not None:
                anchor = await readable_message(tx, caller.user_id, before, now)
                if chat_id is not None and anchor.chat_id != chat_id:
                    raise errors.not_found("message", message_id=before)
                before_seq = anchor.seq
            rows = await tx.search_messages(caller.user_id, words, chat_id, before_seq,
                                            limit + 1, now)
            return {"messages": [message_view(m) for m in rows[:limit]],
                    "more": len(rows) > limit}

        await services.store.catch_up_search()
        return await services.store.read(search)


class ReadParams(TypedDict, total=False):
    """chats.read's params."""

    chat_id: Required[str]
    message_id: str


class Read(UserMethod[ReadParams]):
    """The caller has read a chat up to a message (default: the newest); only ever forward."""

    name = "chats.read"

    async def call(self, services: Services, caller: Caller, params: ReadParams,
                   request: Request) -> Result:
        chat_id: str = params["chat_id"]
        message_id: str | None = params.get("message_id")
        now = services.now()

        async def read(tx: SqlTx) -> bool:
            chat = await member_chat(tx, caller.user_id, chat_id)
            if message_id is not None:
                target = await message_in_chat(tx, message_id, chat_id, now)
            else:
                newest = await tx.history(chat_id, None, 1, now)
                if not newest:
                    return False  # nothing to read yet
                target = newest[0]
            if not await tx.set_read_position(caller.user_id, chat_id, target.seq,
                                              target.message_id):
                return False  # already read that far: positions never move back
            body = event_body("read", chat_id=chat_id, username=caller.username,
                              message_id=target.message_id)
            await tx.add_read_event(caller.user_id, body, target.expires_at)
            if chat.kind == "direct":  # a read receipt for the other person
                for uid in await tx.direct_pair(chat_id):
                    if uid != caller.user_id and await tx.is_member(chat_id, uid):
                        await tx.add_read_event(uid, body, target.expires_at)
            return True

        moved = await services.store.write(read)
        log.debug("%s read %s (moved: %s)", caller.username, chat_id, moved)
        return {}


METHODS = (Edit, Delete, Search, Read)
