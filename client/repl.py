"""The interactive client: live events printed above a prompt that is never garbled.

This module is the loop (log in, backlog, prompt, Ctrl-C, exit) and completion; a session's
state and rendering are in repl_session.py, the slash commands in repl_commands.py (the one
table) and commands_*.py (their handlers, by area).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.input import Input, create_input
from prompt_toolkit.patch_stdout import patch_stdout

from .api import MessengerClient
from .errors import MessengerError, RpcError, ServerUnavailable
from .models import Event, Message
from .poll import PollLoop
from .render import describe_error
from .command import Command
from .repl_books import ChatBook, CommandError, IdBook, split_first
from .repl_commands import COMMAND_NAMES, COMMANDS, find
from .repl_session import Session
from .tokens import resolve_server

log = logging.getLogger(__name__)

CLIENT_LABEL = "messenger-repl"


class ReplCompleter(Completer):
    """Completes commands, then usernames seen so far (or chat labels after /chat)."""

    def __init__(self, usernames: Callable[[], Iterable[str]],
                 chat_labels: Callable[[], Iterable[str]]) -> None:
        self.usernames = usernames
        self.chat_labels = chat_labels

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterator[Completion]:
        """Yield the completions of the word before the cursor."""
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            for name in COMMAND_NAMES:
                if name.startswith(before):
                    yield Completion(name, start_position=-len(before))
            return
        command = before.split(" ", 1)[0]
        word = document.get_word_before_cursor(WORD=True)
        if command == "/chat":
            candidates: Iterable[str] = self.chat_labels()
        elif any(spec.completes_users and spec.name == command for spec in COMMANDS):
            candidates = self.usernames()
        else:
            return
        for candidate in sorted(set(candidates)):
            if candidate.lower().startswith(word.lower()) and candidate != word:
                yield Completion(candidate, start_position=-len(word))


class Repl(Session):
    """One logged-in REPL session: renders events and runs commands."""

    # -- commands --------------------------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            await self.send(chat_id=self.current, text=text)
            return True
        name, arg = split_first(line)
        command: Command | None = find(name)
        if command is None:
            self.out(f"! unknown command {name}: /help lists them")
            return True
        try:
            return await command.handler(self, arg) is not False
        except CommandError as exc:
            self.out(f"! {exc}")
        except RpcError as exc:
            self.out(f"! {describe_error(exc)}")
        except ServerUnavailable as exc:
            self.out(f"! {describe_error(exc)}")
        except OSError as exc:
            self.out(f"! {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except Exception as exc:  # a bug in one command must not end the session
            log.exception("command %s failed", name)
            self.out(f"! {name} failed: {exc!r}")
        return True

    # -- lifecycle -------------------------------------------------------------------------

    def already_shown(self, event: Event) -> bool:
        """Whether rendering this event would print nothing new (a message in the history)."""
        if event["type"] == "message":
            return event["message"]["message_id"] in self.shown_messages
        if event["type"] == "scheduled":
            return (event["scheduled"]["scheduled_id"], event["action"]) in self.shown_scheduled
        return False

    async def show_backlog(self) -> None:
        """Print a label, then the events after the read marker not shown yet; remember the
        cursor to go on from."""
        cursor: int | None = None
        backlog: list[Event] = []
        while True:
            result = await self.client.poll(cursor, timeout=0, limit=100)
            backlog.extend(e for e in result["events"] if not self.already_shown(e))
            cursor = result["cursor"]
            if not result["more"]:
                break
        self.cursor = cursor
        count = len(backlog)
        self.out(f"— {count} new event{'s' if count != 1 else ''} while you were away —"
                 if count else "— no unread events —")
        for event in backlog:
            await self.on_event(event)

    def start_polling(self, on_fatal: Callable[[BaseException], None]) -> PollLoop:
        """Start the live poll loop; `on_fatal` hears of an error that stops it."""
        loop = PollLoop(self.client, self.on_event, cursor=self.cursor,
                        on_connection_lost=lambda exc: self.out("* reconnecting…"),
                        on_connection_restored=lambda: self.out("* reconnected"))
        task = loop.start()

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                on_fatal(exc)

        task.add_done_callback(done)
        self.poll_loop = loop
        return loop


async def _session(server: str, username: str, password: str, tty_input: Input | None) -> int:
    """Log in, show history and backlog, then prompt until /quit or Ctrl-D."""

    def out(line: str) -> None:
        print(line, flush=True)

    async with MessengerClient(server) as client:
        try:
            connected = await client.connect(username, password, client=CLIENT_LABEL)
        except MessengerError as exc:
            out(f"messenger: {describe_error(exc)}")
            return 3 if isinstance(exc, ServerUnavailable) else 1
        me = connected["username"]
        if connected.get("created"):
            # A mistyped name would otherwise silently become a new user.
            out(f"* new account created for {me} (no account had this name; "
                "check the spelling if you meant an existing one)")
        repl = Repl(client, me, out)
        try:
            return await _interact(repl, connected["history"], tty_input)
        finally:
            if repl.poll_loop is not None:
                try:
                    await repl.poll_loop.stop()
                except Exception:  # its fatal error was already shown
                    pass
            try:  # chats.read calls under way finish before the token ends
                await asyncio.wait_for(repl.reads.settle(), 5)
            except asyncio.TimeoutError:
                pass
            if client.token is not None:
                try:
                    await asyncio.wait_for(client.disconnect(), 5)
                except (MessengerError, asyncio.TimeoutError):
                    pass


async def _interact(repl: Repl, history: list[Message], tty_input: Input | None) -> int:
    session: PromptSession[str] = PromptSession(
        completer=ReplCompleter(lambda: repl.usernames, repl.chats.labels),
        complete_while_typing=False, input=tty_input)
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        text = describe_error(exc) if isinstance(exc, MessengerError) else repr(exc)
        repl.out(f"! poll stopped: {text}")
        if session.app.is_running:
            session.app.exit(exception=EOFError())

    with patch_stdout():
        try:
            await repl.refresh_chats()
        except MessengerError as exc:
            repl.out(f"! {describe_error(exc)}")
        repl.out(f"* connected to {repl.client.server_url} as {repl.me} "
                 f"— /help lists commands, Tab completes")
        if history:
            repl.out(f"— last {len(history)} message{'s' if len(history) != 1 else ''} "
                     "in #general —")
        for msg in history:
            await repl.show_message(msg)
        try:
            await repl.show_backlog()
        except MessengerError as exc:
            repl.out(f"! {describe_error(exc)}")
        repl.start_polling(on_fatal)
        while not fatal:
            try:
                line = await session.prompt_async(repl.prompt)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not await _run_interruptibly(repl, line):
                break
    return 1 if fatal else 0


async def _run_interruptibly(repl: Repl, line: str) -> bool:
    """Run one input line; Ctrl-C cancels it (not the REPL). False means quit."""
    task = asyncio.create_task(repl.execute(line))
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (NotImplementedError, RuntimeError):  # not the main thread / no signals here
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        repl.out("! interrupted")
        return True
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _read_password(args: argparse.Namespace, tty_input: Input | None) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise SystemExit("messenger: --password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    env = os.environ.get("MESSENGER_PASSWORD")
    if env is not None:
        return env
    session: PromptSession[str] = PromptSession(input=tty_input)
    return session.prompt("password: ", is_password=True)


def _terminal_input(args: argparse.Namespace) -> tuple[Input | None, str | None]:
    """prompt_toolkit input: stdin if it is a terminal, else /dev/tty after --password-stdin."""
    if not sys.stdout.isatty():
        return None, "stdout is not a terminal"
    if sys.stdin.isatty():
        return None, None
    if not args.password_stdin:
        return None, "stdin is not a terminal"
    try:
        tty = open("/dev/tty")
    except OSError:
        return None, "no terminal to read commands from"
    return create_input(stdin=tty), None


async def _unreachable(server: str) -> str | None:
    """Why the server cannot be reached, or None when it answers (any answer will do)."""
    async with MessengerClient(server, request_timeout=10) as client:
        try:
            await client.call("rpc.discover")
        except ServerUnavailable as exc:
            return str(exc)
        except MessengerError:
            pass
    return None


def run_repl(args: argparse.Namespace) -> int:
    """Run the interactive client for `messenger [--server URL] [--user NAME]`."""
    # Log records (e.g. a failed command) must never print tracebacks over the REPL.
    logging.getLogger("client").addHandler(logging.NullHandler())
    tty_input, problem = _terminal_input(args)
    if problem is not None:
        print(f"messenger: the interactive client needs a terminal ({problem}); "
              "in scripts use `messenger call METHOD key=value ...` or `messenger poll`",
              file=sys.stderr)
        return 2
    server = resolve_server(args.server)
    down = asyncio.run(_unreachable(server))
    if down is not None:  # say so before asking for a password that could not be used
        print(f"messenger: {down}; is the server running? (--server URL or "
              f"$MESSENGER_SERVER chooses another)", file=sys.stderr)
        return 3
    try:
        username = args.user
        if not username:
            username = PromptSession[str](input=tty_input).prompt("username: ").strip()
        password = _read_password(args, tty_input)
    except (EOFError, KeyboardInterrupt):
        return 130
    if not username:
        print("messenger: a username is needed (--user NAME)", file=sys.stderr)
        return 2
    return asyncio.run(_session(server, username, password, tty_input))


__all__ = ["COMMANDS", "ChatBook", "IdBook", "Repl", "ReplCompleter", "run_repl"]
