"""How stored rows look on the wire (one place for every shape the schemas describe)."""
from __future__ import annotations

from typing import Any

import orjson

from methods.context import rfc3339
from store.models import Chat, Scheduled, StoredMessage


def message_view(m: StoredMessage) -> dict[str, Any]:
    """A message as PROTOCOL.md defines it."""
    return {
        "message_id": m.message_id,
        "chat_id": m.chat_id,
        "author": m.author,
        "text": m.text,
        "attachments": orjson.loads(m.attachments),
        "comment_to": m.comment_to,
        "sent_at": rfc3339(m.sent_at),
        "expires_at": rfc3339(m.expires_at),
        "edited_at": None if m.edited_at is None else rfc3339(m.edited_at),
    }


def scheduled_view(s: Scheduled) -> dict[str, Any]:
    """A pending (or just cancelled) scheduled message."""
    return {
        "scheduled_id": s.scheduled_id,
        "chat_id": s.chat_id,
        "to": s.to_user,
        "text": s.text,
        "attachments": orjson.loads(s.attachments),
        "comment_to": s.comment_to,
        "send_at": rfc3339(s.send_at),
        "created_at": rfc3339(s.created_at),
    }


def chat_view(chat: Chat, members: list[str], owner: str | None,
              viewer: str) -> dict[str, Any]:
    """A chat as its member `viewer` sees it (a direct chat is titled by the other person)."""
    title = chat.title
    if chat.kind == "direct":
        others = [m for m in members if m != viewer]
        title = others[0] if others else viewer
    return {"chat_id": chat.chat_id, "kind": chat.kind, "title": title, "owner": owner,
            "members": members}


def event_body(type_: str, **fields: Any) -> bytes:
    """An event serialized once, without its seq (added when it is sent)."""
    return orjson.dumps({"type": type_, **fields})
