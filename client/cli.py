"""`messenger`: one JSON-RPC call from a shell, the event stream as JSON lines, or the REPL."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import Any, NoReturn

import orjson

from .api import MessengerClient
from .errors import MessengerError, RpcError, ServerUnavailable
from .models import Event
from .poll import PollLoop
from .tokens import DEFAULT_SERVER, TokenStore, resolve_server
from .transport import poll_read_timeout

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

CALL_HELP = """\
values are JSON when they parse as JSON, else strings:
  messenger call messages.send to=bob text=hi
  messenger call messages.history chat_id=general limit=5
  messenger call chats.create title=Team members='["bob","carol"]'
  messenger call messages.send chat_id=general text='"42"'   (a JSON string)
client-side pseudo-methods:
  messenger call files.upload path=./report.pdf [name=N] [content_type=T]
  messenger call files.download file_id=ID [path=DEST]
"""


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


def parse_params(items: list[str]) -> dict[str, Any]:
    """`key=value` words as params; a value is JSON when it parses as JSON, else a string."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        try:
            params[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[key] = raw
    return params


def dumps(value: Any, pretty: bool = False) -> str:
    """JSON text (UTF-8, not ASCII-escaped)."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, option=option).decode()


def print_error(error: dict[str, Any]) -> None:
    """Write an error object as JSON to stderr."""
    print(dumps(error), file=sys.stderr, flush=True)


def read_password(args: argparse.Namespace, prompt: str = "password: ") -> str:
    """The password from stdin (--password-stdin), $MESSENGER_PASSWORD, or a no-echo prompt."""
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    env = os.environ.get("MESSENGER_PASSWORD")
    if env is not None:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    raise UsageError("no password: use --password-stdin, MESSENGER_PASSWORD or a terminal")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `messenger`."""
    parser = argparse.ArgumentParser(
        prog="messenger",
        description="Messenger client: an interactive REPL (no command), one JSON-RPC call "
                    "(`call`) or the event stream as JSON lines (`poll`).")
    parser.add_argument("--server", metavar="URL",
                        help=f"server URL (default: $MESSENGER_SERVER, then {DEFAULT_SERVER})")
    parser.add_argument("--user", metavar="NAME",
                        help="user name (default for call/poll: the only or last stored user)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    commands = parser.add_subparsers(dest="command", metavar="{call,poll}")
    call = commands.add_parser(
        "call", help="one JSON-RPC call; JSON result on stdout",
        epilog=CALL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    call.add_argument("method", help="e.g. session.connect, messages.send, files.upload")
    # default=[]: argparse would otherwise call an empty `*` list required.
    call.add_argument("params", nargs="*", metavar="key=value", default=[],
                      help="params by name (optional)")
    poll = commands.add_parser("poll", help="print events as JSON lines, forever")
    poll.add_argument("--cursor", type=int, default=None,
                      help="start after this seq (default: the server's read marker)")
    poll.add_argument("--timeout", type=float, default=None, help="long-poll wait in seconds")
    return parser


def _stored_login(args: argparse.Namespace, server: str,
                  store: TokenStore) -> tuple[str | None, str | None]:
    """The (user, token) to use: --user's token, else the only/last stored user's."""
    user = args.user if args.user else store.default_user(server)
    return user, (store.get(server, user) if user else None)


async def _files_upload(client: MessengerClient, params: dict[str, Any]) -> dict[str, Any]:
    path = params.get("path")
    if not isinstance(path, str):
        raise UsageError("files.upload needs path=FILE")
    if not os.path.isfile(path):
        raise UsageError(f"files.upload: {path}: "
                         + ("is a directory" if os.path.isdir(path) else "no such file"))
    result = await client.upload(path, name=params.get("name"),
                                 content_type=params.get("content_type"))
    return dict(result)


async def _files_download(client: MessengerClient, params: dict[str, Any]) -> dict[str, Any]:
    file_id = params.get("file_id")
    if not isinstance(file_id, str):
        raise UsageError("files.download needs file_id=ID")
    dest = params.get("path", ".")
    if not isinstance(dest, str):
        raise UsageError("files.download: path must be a string")
    return dict(await client.download(file_id, dest))


async def run_call(args: argparse.Namespace) -> int:
    """`messenger call`: one call, result JSON on stdout; tokens kept per (server, user)."""
    server = resolve_server(args.server)
    store = TokenStore()
    params = parse_params(args.params)
    method: str = args.method
    user: str | None
    if method == "session.connect":
        if args.user and "username" not in params:
            params["username"] = args.user
        if "password" not in params:
            params["password"] = read_password(args)
        user, token = None, None
    else:
        user, token = _stored_login(args, server, store)
    try:
        async with MessengerClient(server, token=token) as client:
            result = await _call(client, method, params)
    except RpcError as exc:
        if exc.code == 401 and method != "session.connect":
            print(login_hint(server, user, token is not None), file=sys.stderr)
        raise
    if method == "session.connect":
        store.put(server, str(result["username"]), str(result["token"]))
    elif method == "session.disconnect" and user is not None:
        store.remove(server, user)
    print(dumps(result, pretty=True), flush=True)
    return EXIT_OK


async def _call(client: MessengerClient, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One call of `messenger call`, the client-side pseudo-methods included."""
    if method == "files.upload":
        return await _files_upload(client, params)
    if method == "files.download":
        return await _files_download(client, params)
    if method == "events.poll":  # a long poll: wait longer than an ordinary call
        return await client.call(method, params,
                                 timeout=poll_read_timeout(params.get("timeout")))
    if method == "messages.send":  # through the library: a client_msg_id, safe retries
        return dict(await client.send_params(params))
    return await client.call(method, params)


def login_hint(server: str, user: str | None, had_token: bool) -> str:
    """What to run when a call needs a session (the line before a 401's JSON error)."""
    name = user or "NAME"
    how = f"messenger --user {name} call session.connect username={name} password=..."
    if had_token:
        return f"messenger: the stored session of {name} on {server} has ended; log in " \
               f"again: {how}"
    return f"messenger: no stored session for {user or 'any user'} on {server}; log in " \
           f"first: {how}"


def _write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def run_poll(args: argparse.Namespace) -> int:
    """`messenger poll`: every event as one JSON line, forever, reconnecting as needed."""
    server = resolve_server(args.server)
    user, token = _stored_login(args, server, TokenStore())

    def lost(exc: MessengerError) -> None:
        print(f"messenger: {exc}; reconnecting…", file=sys.stderr, flush=True)

    def restored() -> None:
        print("messenger: reconnected", file=sys.stderr, flush=True)

    def emit(event: Event) -> None:
        _write_line(dumps(event))

    async with MessengerClient(server, token=token) as client:
        # One quick call first, so a wrong URL or token fails at once instead of retrying.
        try:
            await client.status()
        except RpcError as exc:
            if exc.code == 401:
                print(login_hint(server, user, token is not None), file=sys.stderr)
            raise
        loop = PollLoop(client, emit, cursor=args.cursor, timeout=args.timeout,
                        on_connection_lost=lost, on_connection_restored=restored)
        await loop.run()
    return EXIT_OK  # pragma: no cover - run() only ends by an exception


def run(argv: list[str] | None = None) -> int:
    """Run `messenger` with these arguments; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "call":
            return asyncio.run(run_call(args))
        if args.command == "poll":
            return asyncio.run(run_poll(args))
        from .repl import run_repl
        return run_repl(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"messenger: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RpcError as exc:
        print_error(exc.to_dict())
        return EXIT_ERROR
    except ServerUnavailable as exc:
        print_error({"code": None, "message": str(exc), "data": {"server": exc.url}})
        return EXIT_UNAVAILABLE
    except ValueError as exc:  # e.g. a malformed server URL
        print(f"messenger: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except OSError as exc:  # local files of files.upload / files.download
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"messenger: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main() -> NoReturn:
    """Console entry point of `messenger`."""
    try:
        status = run()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of `messenger poll | head` went away: exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_OK
    sys.exit(status)
