"""The REPL's one command table: each slash command's name, usage, help and handler.

A handler is `async def handler(repl: Session, arg: str)`, where `arg` is the rest of the
line; it returns False to end the REPL (anything else goes on) and raises CommandError for
a usage mistake. /help lists this table in its order; Tab completes its names (and
usernames after the commands marked `completes_users`).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import commands_account as account
from . import commands_chats as chats
from . import commands_files as files
from . import commands_messages as messages
from .repl_session import Session

Handler = Callable[[Session, str], Awaitable[bool | None]]


@dataclass(frozen=True)
class Command:
    """One slash command."""

    name: str
    args: str
    help: str
    handler: Handler
    completes_users: bool = False
    aliases: tuple[str, ...] = ()


async def show_help(repl: Session, arg: str) -> None:
    """List commands."""
    repl.out("plain text goes to the current chat (start with // to send a leading /)")
    for spec in COMMANDS:
        repl.out(f"  {spec.name + ' ' + spec.args:<28} {spec.help}")


async def quit_repl(repl: Session, arg: str) -> bool:
    """Leave the REPL."""
    return False


COMMANDS: list[Command] = [
    Command("/to", "USER text", "send a direct message to USER", messages.to, True),
    Command("/chat", "ID", "switch the current chat (id, title, @user or general)", chats.chat),
    Command("/chats", "", "list your chats with unread counts", chats.chats),
    Command("/history", "[N]", "show the last N messages of the current chat",
            messages.history),
    Command("/comment", "MSG_ID text", "comment on a message", messages.comment),
    Command("/edit", "MSG_ID text", "replace the text of a message you sent", messages.edit),
    Command("/delete", "MSG_ID", "delete a message (yours, or any in a group you own)",
            messages.delete),
    Command("/search", "WORDS", "find messages of your chats with all these words",
            messages.search),
    Command("/schedule", "WHEN text", "send later: 30s, 10m, 2h, 14:30 or an RFC 3339 time",
            messages.schedule),
    Command("/scheduled", "", "list your pending scheduled messages", messages.scheduled),
    Command("/cancel", "ID", "cancel a scheduled message", messages.cancel),
    Command("/report", "USER [reason]", "report a user for abuse", account.report, True),
    Command("/block", "USER", "stop USER from messaging you, inviting or adding you",
            account.block, True),
    Command("/unblock", "USER", "lift a block", account.unblock, True),
    Command("/blocked", "", "list the users you block", account.blocked),
    Command("/send", "--file PATH [text]", "send a file (and text) to the current chat",
            files.send),
    Command("/download", "ID [PATH]", "download an attachment", files.download),
    Command("/create", "TITLE [user ...]", "create a group chat (quote a TITLE with spaces)",
            chats.create, True),
    Command("/invite", "USER", "add USER to the current chat (owner only)", chats.invite, True),
    Command("/link", "", "make a join link for the current chat (owner only)", chats.link),
    Command("/join", "LINK", "ask to join a chat through its link", chats.join),
    Command("/approve", "USER", "accept USER's request to join", chats.approve, True),
    Command("/decline", "USER", "refuse USER's request to join", chats.decline, True),
    Command("/leave", "", "leave the current chat", chats.leave),
    Command("/status", "", "your account, quota, sessions and the server", account.status),
    Command("/help", "", "this list", show_help),
    Command("/quit", "", "disconnect and exit", quit_repl, aliases=("/exit",)),
]
COMMAND_NAMES = [spec.name for spec in COMMANDS]
BY_NAME = {name: spec for spec in COMMANDS for name in (spec.name, *spec.aliases)}


def find(name: str) -> Command | None:
    """The command called `name` (any case, aliases included), if any."""
    return BY_NAME.get(name.lower())
