"""The REPL's one command table: each slash command's name, usage, help and handler.

Each area's commands (client.command.Command entries) are listed in its
`client/commands_*.py` module beside their handlers; this table joins them, area by area.
/help lists it in its order; Tab completes its names (and usernames after the commands
marked `completes_users`).
"""
from __future__ import annotations

from . import commands_account as account
from . import commands_chats as chats
from . import commands_files as files
from . import commands_messages as messages
from .command import Command
from .repl_session import Session


async def show_help(repl: Session, arg: str) -> None:
    """List commands."""
    repl.out("plain text goes to the current chat (start with // to send a leading /)")
    for spec in COMMANDS:
        repl.out(f"  {spec.name + ' ' + spec.args:<28} {spec.help}")


async def quit_repl(repl: Session, arg: str) -> bool:
    """Leave the REPL."""
    return False


COMMANDS: list[Command] = [
    *messages.COMMANDS, *files.COMMANDS, *chats.COMMANDS, *account.COMMANDS,
    Command("/help", "", "this list", show_help),
    Command("/quit", "", "disconnect and exit", quit_repl, aliases=("/exit",)),
]
COMMAND_NAMES = [spec.name for spec in COMMANDS]
BY_NAME = {name: spec for spec in COMMANDS for name in (spec.name, *spec.aliases)}


def find(name: str) -> Command | None:
    """The command called `name` (any case, aliases included), if any."""
    return BY_NAME.get(name.lower())
