"""REPL commands on chats: switching, listing, groups, links and join requests.
Each is listed, with its usage and help, in COMMANDS at the end (client/repl_commands.py
joins the areas' lists into the REPL's one table)."""
from __future__ import annotations

import shlex

from .repl_books import CommandError, needs
from .command import Command
from .repl_session import Session


async def chat(repl: Session, arg: str) -> None:
    """Switch the current chat."""
    wanted = needs(arg, "/chat ID")
    chat_id = repl.chats.resolve(wanted)
    if chat_id is None:
        await repl.refresh_chats()
        chat_id = repl.chats.resolve(wanted)
    if chat_id is None and wanted.startswith("@"):
        chat_id = repl.chats.direct_with(wanted[1:])
    if chat_id is None:
        raise CommandError(f"no chat {wanted!r}: /chats lists yours")
    repl.current = chat_id
    unread = repl.chats.unread.get(chat_id)
    repl.out(f"* now in {repl.chats.label(chat_id)}"
             + (f" ({unread} unread)" if unread else ""))
    if unread:  # they were printed as they came: reading the chat now
        repl.reads.mark(chat_id, None)
        repl.chats.unread[chat_id] = 0


async def chats(repl: Session, arg: str) -> None:
    """List chats."""
    await repl.refresh_chats()
    for chat_id, chat in repl.chats.chats.items():
        marker = "*" if chat_id == repl.current else " "
        unread = repl.chats.unread.get(chat_id, 0)
        owner = chat.get("owner")
        repl.out(f"{marker} {repl.chats.label(chat_id):<20} {chat['kind']:<7} "
                 f"{len(chat['members'])} members  {unread} unread  id={chat_id}"
                 + (f"  owner={owner}" if owner else ""))


async def create(repl: Session, arg: str) -> None:
    """Create a group chat and switch to it."""
    try:
        words = shlex.split(needs(arg, "/create TITLE [user ...]"))
    except ValueError as exc:
        raise CommandError(f"/create: {exc}")
    title, members = words[0], [w.lstrip("@") for w in words[1:]]
    chat = (await repl.client.create_chat(title, members or None))["chat"]
    repl.chats.add(chat)
    repl.usernames.update(chat["members"])
    repl.current = chat["chat_id"]
    repl.announced.add(("added", chat["chat_id"], repl.me))
    repl.out(f"* created {repl.chats.label(chat['chat_id'])} with "
             f"{', '.join(chat['members'])}; you are in it now")


async def invite(repl: Session, arg: str) -> None:
    """Invite a user to the current chat."""
    user = needs(arg, "/invite USER").lstrip("@")
    await repl.client.invite(repl.current, user)
    repl.announced.add(("added", repl.current, user))
    repl.out(f"* invited {user} to {repl.chats.label(repl.current)}")


async def link(repl: Session, arg: str) -> None:
    """Make a join link."""
    link = (await repl.client.link(repl.current))["link"]
    repl.out(f"* join link for {repl.chats.label(repl.current)}: {link}  "
             f"(others type /join {link})")


async def join(repl: Session, arg: str) -> None:
    """Ask to join through a link."""
    result = await repl.client.join(needs(arg, "/join LINK"))
    if result["status"] == "member":
        await repl.refresh_chats()
        repl.out("* you are already a member: /chats lists your chats")
    else:
        repl.out("* asked to join: waiting for the owner's answer")


def _request_chat(repl: Session, user: str) -> str:
    """The chat of `user`'s join request: the current chat, else their only request."""
    pending = repl.join_requests.get(user, [])
    if repl.current in pending or not pending:
        return repl.current
    if len(pending) == 1:
        return pending[0]
    raise CommandError(f"{user} asked to join several chats: /chat one of them first")


async def _decide(repl: Session, arg: str, approve: bool) -> None:
    usage = "/approve USER" if approve else "/decline USER"
    user = needs(arg, usage).lstrip("@")
    chat_id = _request_chat(repl, user)
    if approve:
        await repl.client.approve(chat_id, user)
        repl.announced.add(("joined", chat_id, user))
    else:
        await repl.client.decline(chat_id, user)
    pending = repl.join_requests.get(user, [])
    if chat_id in pending:
        pending.remove(chat_id)
    repl.out(f"* {'approved' if approve else 'declined'} {user} "
             f"for {repl.chats.label(chat_id)}")


async def approve(repl: Session, arg: str) -> None:
    """Accept a join request."""
    await _decide(repl, arg, True)


async def decline(repl: Session, arg: str) -> None:
    """Refuse a join request."""
    await _decide(repl, arg, False)


async def leave(repl: Session, arg: str) -> None:
    """Leave the current chat."""
    chat_id = repl.current
    label = repl.chats.label(chat_id)
    await repl.client.leave(chat_id)
    repl.announced.add(("left", chat_id, repl.me))
    repl.chats.remove(chat_id)
    repl.current = "general"
    repl.out(f"* you left {label}; now in #general")


# This area's part of the REPL's command table, in /help order.
COMMANDS: list[Command] = [
    Command("/chat", "ID", "switch the current chat (id, title, @user or general)", chat),
    Command("/chats", "", "list your chats with unread counts", chats),
    Command("/create", "TITLE [user ...]", "create a group chat (quote a TITLE with spaces)",
            create, True),
    Command("/invite", "USER", "add USER to the current chat (owner only)", invite, True),
    Command("/link", "", "make a join link for the current chat (owner only)", link),
    Command("/join", "LINK", "ask to join a chat through its link", join),
    Command("/approve", "USER", "accept USER's request to join", approve, True),
    Command("/decline", "USER", "refuse USER's request to join", decline, True),
    Command("/leave", "", "leave the current chat", leave),
]
