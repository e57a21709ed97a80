"""REPL commands on the account: reports, blocks and the session's status.
Each is listed, with its usage and help, in COMMANDS at the end (client/repl_commands.py
joins the areas' lists into the REPL's one table)."""
from __future__ import annotations

from .render import clock
from .repl_books import needs, split_first
from .command import Command
from .repl_session import Session


async def report(repl: Session, arg: str) -> None:
    """Report a user."""
    user, reason = split_first(needs(arg, "/report USER [reason]"))
    result = await repl.client.report(user.lstrip("@"), reason or None)
    banned = result.get("banned_until")
    if not result["reports"]:
        repl.out(f"* reported {user} (recorded, but not counted toward a ban: your account "
                 "is too new, or they are banned already"
                 + (f" until {clock(banned)})" if banned else ")"))
        return
    repl.out(f"* reported {user} ({result['reports']} report"
             f"{'s' if result['reports'] != 1 else ''} so far"
             + (f"; banned until {clock(banned)})" if banned else ")"))


async def block(repl: Session, arg: str) -> None:
    """Block a user."""
    user = needs(arg, "/block USER").split()[0].lstrip("@")
    await repl.client.block(user)
    repl.out(f"* blocked {user}: they can no longer message you 1-to-1, invite or add you "
             f"(/unblock {user} to undo)")


async def unblock(repl: Session, arg: str) -> None:
    """Lift a block."""
    user = needs(arg, "/unblock USER").split()[0].lstrip("@")
    await repl.client.unblock(user)
    repl.out(f"* unblocked {user}")


async def blocked(repl: Session, arg: str) -> None:
    """List the users you block."""
    names = (await repl.client.blocked())["usernames"]
    repl.out("* you block: " + ", ".join(names) if names else "* you block nobody")


async def status(repl: Session, arg: str) -> None:
    """Show session.status."""
    status = await repl.client.status()
    repl.chats.replace(status["chats"])
    quota, server = status["quota"], status["server"]
    unread = sum(chat["unread"] for chat in status["chats"])
    repl.out(f"* {status['username']} on {repl.client.server_url} "
             f"(server {server['version']}, {server['users_online']} online)")
    repl.out(f"  chats: {len(status['chats'])}, unread: {unread}, "
             f"sessions: {len(status['sessions'])}")
    repl.out(f"  general quota: {quota['remaining']}/{quota['limit']} left, "
             f"resets at {clock(quota['resets_at'])}")
    banned = status.get("banned_until")
    repl.out(f"  banned until {clock(banned)}" if banned else "  not banned")


# This area's part of the REPL's command table, in /help order.
COMMANDS: list[Command] = [
    Command("/report", "USER [reason]", "report a user for abuse", report, True),
    Command("/block", "USER", "stop USER from messaging you, inviting or adding you",
            block, True),
    Command("/unblock", "USER", "lift a block", unblock, True),
    Command("/blocked", "", "list the users you block", blocked),
    Command("/status", "", "your account, quota, sessions and the server", status),
]
