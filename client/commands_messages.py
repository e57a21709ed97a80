"""REPL commands on messages: direct messages, comments, history, edits, deletions,
search and scheduled messages. Each is listed, with its usage and help, in COMMANDS at
the end (client/repl_commands.py joins the areas' lists into the REPL's one table)."""
from __future__ import annotations

from .render import format_message, parse_when, rfc3339
from .repl_books import CommandError, needs, split_first
from .command import Command
from .repl_session import Session

HISTORY_DEFAULT = 20
SEARCH_LIMIT = 20


async def to(repl: Session, arg: str) -> None:
    """Direct message."""
    user, text = split_first(needs(arg, "/to USER text"))
    if not text:
        raise CommandError("usage: /to USER text")
    await repl.send(to=user.lstrip("@"), text=text)


async def comment(repl: Session, arg: str) -> None:
    """Comment on a message."""
    ref, text = split_first(needs(arg, "/comment MSG_ID text"))
    if not text:
        raise CommandError("usage: /comment MSG_ID text")
    message_id = repl.ids.resolve(ref)
    chat_id = repl.ids.message_chats.get(message_id, repl.current)
    await repl.send(chat_id=chat_id, text=text, comment_to=message_id)


async def history(repl: Session, arg: str) -> None:
    """Recent messages of the current chat."""
    try:
        limit = int(arg) if arg.strip() else HISTORY_DEFAULT
    except ValueError:
        raise CommandError("usage: /history [N]")
    result = await repl.client.history(repl.current, limit=max(1, min(limit, 100)))
    if not result["messages"]:
        repl.out(f"* no messages in {repl.chats.label(repl.current)}")
    for msg in result["messages"]:
        await repl.show_message(msg, again=True)


async def edit(repl: Session, arg: str) -> None:
    """Replace the text of one of your messages."""
    ref, text = split_first(needs(arg, "/edit MSG_ID text"))
    if not text:
        raise CommandError("usage: /edit MSG_ID text")
    message = (await repl.client.edit(repl.ids.resolve(ref), text))["message"]
    repl.echoed_edits.add((message["message_id"], message.get("edited_at")))
    repl.remember_message(message)
    label = repl.chats.label(message["chat_id"])
    repl.out("* edited: " + format_message(message, label, repl.ids.short))


async def delete(repl: Session, arg: str) -> None:
    """Delete a message."""
    message_id = repl.ids.resolve(needs(arg, "/delete MSG_ID").split()[0])
    await repl.client.delete(message_id)
    repl.echoed_deletes.add(message_id)
    repl.out(f"* deleted {repl.ids.short(message_id)}")


async def search(repl: Session, arg: str) -> None:
    """Messages of your chats with every word, newest first."""
    result = await repl.client.search(needs(arg, "/search WORDS"), limit=SEARCH_LIMIT)
    found = result["messages"]
    if not found:
        repl.out("* no message has all of these words")
        return
    more = " (more: add words to narrow it down)" if result["more"] else ""
    repl.out(f"— {len(found)} match{'es' if len(found) != 1 else ''}, newest first{more} —")
    for msg in found:
        repl.remember_message(msg)
        repl.out(format_message(msg, repl.chats.label(msg["chat_id"]), repl.ids.short))


async def schedule(repl: Session, arg: str) -> None:
    """Schedule a message to the current chat."""
    when, text = split_first(needs(arg, "/schedule WHEN text"))
    if not text:
        raise CommandError("usage: /schedule WHEN text (WHEN: 30s, 10m, 2h, 14:30)")
    try:
        at = parse_when(when)
    except ValueError as exc:
        raise CommandError(str(exc))
    await repl.send(chat_id=repl.current, text=text, send_at=rfc3339(at))


async def scheduled(repl: Session, arg: str) -> None:
    """List pending scheduled messages."""
    entries = (await repl.client.scheduled())["scheduled"]
    if not entries:
        repl.out("* nothing scheduled")
    for entry in entries:
        repl.out(f"  {repl.describe_scheduled(entry)}")


async def cancel(repl: Session, arg: str) -> None:
    """Cancel a scheduled message."""
    scheduled_id = repl.ids.resolve(needs(arg, "/cancel ID"))
    await repl.client.cancel(scheduled_id)
    key = (scheduled_id, "cancelled")
    if key not in repl.shown_scheduled:
        repl.shown_scheduled.add(key)
        repl.out(f"* cancelled scheduled {repl.ids.short(scheduled_id)}")


# This area's part of the REPL's command table, in /help order.
COMMANDS: list[Command] = [
    Command("/to", "USER text", "send a direct message to USER", to, True),
    Command("/history", "[N]", "show the last N messages of the current chat",
            history),
    Command("/comment", "MSG_ID text", "comment on a message", comment),
    Command("/edit", "MSG_ID text", "replace the text of a message you sent", edit),
    Command("/delete", "MSG_ID", "delete a message (yours, or any in a group you own)",
            delete),
    Command("/search", "WORDS", "find messages of your chats with all these words",
            search),
    Command("/schedule", "WHEN text", "send later: 30s, 10m, 2h, 14:30 or an RFC 3339 time",
            schedule),
    Command("/scheduled", "", "list your pending scheduled messages", scheduled),
    Command("/cancel", "ID", "cancel a scheduled message", cancel),
]
