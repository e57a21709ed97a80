"""One REPL slash command: its name, usage, help and handler.

Each `client/commands_*.py` module lists its commands in `COMMANDS`, next to their handlers;
client/repl_commands.py joins those lists into the REPL's one table.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .repl_session import Session

Handler = Callable[[Session, str], Awaitable[bool | None]]


@dataclass(frozen=True)
class Command:
    """One slash command.

    A handler is `async def handler(repl: Session, arg: str)`, where `arg` is the rest of
    the line; it returns False to end the REPL (anything else goes on) and raises
    CommandError for a usage mistake.
    """

    name: str
    args: str
    help: str
    handler: Handler
    completes_users: bool = False
    aliases: tuple[str, ...] = ()
