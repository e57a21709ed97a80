"""`messenger call` / `messenger poll` as subprocesses: output, exit codes, stored tokens."""
from __future__ import annotations

import asyncio
import os
import select
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from client import MessengerClient
from tests.support import ROOT, ServerProcess, free_port, run_module, unique_name


class Cli:
    """Runs `messenger` (as `python -m client`) with a private config directory."""

    def __init__(self, url: str, config: Path) -> None:
        self.url = url
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("MESSENGER_")}
        self.env.update(XDG_CONFIG_HOME=str(config), MESSENGER_SERVER=url)
        self.tokens_path = config / "messenger" / "tokens.json"

    def command(self, *args: str) -> list[str]:
        """The argv of one invocation."""
        return [sys.executable, "-m", "client", *args]

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run to completion (a process of its own, forked: see tests.support.run_module)."""
        return run_module("client", list(args), self.env, ROOT, stdin, timeout=30)

    def ok(self, *args: str) -> Any:
        """Run, expect exit 0, return the JSON printed on stdout."""
        done = self.run(*args)
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return orjson.loads(done.stdout)

    def fails(self, code: int, *args: str) -> dict[str, Any]:
        """Run, expect exit `code`, return the JSON error printed on stderr."""
        done = self.run(*args)
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        assert done.stdout == ""
        error: dict[str, Any] = orjson.loads(done.stderr.strip().splitlines()[-1])
        return error

    def tokens(self) -> Any:
        """The stored token file."""
        return orjson.loads(self.tokens_path.read_bytes())


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Cli:
    """A CLI runner for the test's server with an empty config directory."""
    return Cli(server.url, tmp_path / "config")


def send_as_new_user(url: str, to: str, text: str) -> str:
    """Register a user and send `text` to `to`; the sender's name."""
    name = unique_name("snd")

    async def go() -> None:
        async with MessengerClient(url) as client:
            await client.connect(name, "pw")
            await client.send(to=to, text=text)

    asyncio.run(go())
    return name


def test_connect_stores_a_private_token_that_later_calls_use(cli: Cli) -> None:
    alice = unique_name("ca")
    result = cli.ok("--user", alice, "call", "session.connect", "password=secret")
    assert result["username"] == alice and result["token"]
    mode = stat.S_IMODE(cli.tokens_path.stat().st_mode)
    assert mode == 0o600
    assert cli.tokens()[cli.url]["tokens"][alice] == result["token"]

    status = cli.ok("--user", alice, "call", "session.status")
    assert status["username"] == alice
    # Without --user the only stored user is used.
    assert cli.ok("call", "session.status")["username"] == alice

    # A second user becomes the default (the last one that logged in).
    bob = unique_name("cb")
    cli.ok("call", "session.connect", f"username={bob}", "password=pw")
    assert cli.ok("call", "session.status")["username"] == bob
    assert cli.ok("--user", alice, "call", "session.status")["username"] == alice

    assert cli.ok("--user", bob, "call", "session.disconnect") == {}
    assert bob not in cli.tokens()[cli.url]["tokens"]
    assert cli.ok("call", "session.status")["username"] == alice

    # The password may come from stdin; a wrong one is a 401 and stores nothing.
    carol = unique_name("cc")
    done = cli.run("--user", carol, "--password-stdin", "call", "session.connect",
                   stdin="s3cret pass\n")
    assert done.returncode == 0, done.stderr
    again = cli.run("--user", carol, "--password-stdin", "call", "session.connect",
                    stdin="wrong\n")
    assert again.returncode == 1 and orjson.loads(again.stderr)["code"] == 401
    assert cli.ok("call", "session.status")["username"] == carol


def test_values_are_json_when_they_parse(cli: Cli) -> None:
    alice, bob = unique_name("va"), unique_name("vb")
    cli.ok("call", "session.connect", f"username={bob}", "password=pw")
    cli.ok("call", "session.connect", f"username={alice}", "password=pw")
    sent = cli.ok("call", "messages.send", f"to={bob}", "text=hi there")
    assert sent["message"]["text"] == "hi there" and sent["message"]["author"] == alice
    number = cli.ok("call", "messages.send", "chat_id=general", 'text="42"')
    assert number["message"]["text"] == "42"
    cli.ok("call", "messages.send", "chat_id=general", "text=last")
    page = cli.ok("call", "messages.history", "chat_id=general", "limit=1")
    assert [m["text"] for m in page["messages"]] == ["last"] and page["more"] is True
    chat = cli.ok("call", "chats.create", "title=Team", f'members=["{bob}"]')["chat"]
    assert sorted(chat["members"]) == sorted([alice, bob])


def test_exit_codes_and_error_json(cli: Cli) -> None:
    alice = unique_name("ex")
    cli.ok("call", "session.connect", f"username={alice}", "password=pw")
    fresh = Cli(cli.url, cli.tokens_path.parent.parent / "empty")
    # Independent invocations, run side by side to keep the test quick.
    with ThreadPoolExecutor(8) as pool:
        runs = [pool.submit(runner.run, *args) for runner, args in [
            (cli, ("call", "messages.send", f"to={unique_name('nobody')}", "text=x")),
            (cli, ("call", "messages.history", "chat_id=general", "limit=500")),
            (cli, ("call", "no.such")),
            (cli, ("call", "messages.send", "not-a-pair")),
            (cli, ("call",)),
            (cli, ("--server", f"http://127.0.0.1:{free_port()}", "call", "session.status")),
            (fresh, ("call", "session.status")),
            (fresh, ("poll",)),
        ]]
        missing, invalid, unknown, pair, no_method, down, anonymous, anon_poll = [
            run.result() for run in runs]

    def error(done: subprocess.CompletedProcess[str], exit_code: int) -> Any:
        assert done.returncode == exit_code and done.stdout == "", done
        return orjson.loads(done.stderr.strip().splitlines()[-1])

    not_found = error(missing, 1)
    assert not_found["code"] == 404 and not_found["message"] and "data" in not_found
    bad_params = error(invalid, 1)
    assert bad_params["code"] == -32602 and bad_params["data"]["path"] == "/limit"
    assert error(unknown, 1)["code"] == -32601
    assert pair.returncode == 2 and "key=value" in pair.stderr
    assert no_method.returncode == 2 and "method" in no_method.stderr
    assert "cannot reach" in error(down, 3)["message"]
    assert error(anonymous, 1)["code"] == 401
    assert error(anon_poll, 1)["code"] == 401


def test_files_upload_and_download_pseudo_methods(cli: Cli, tmp_path: Path) -> None:
    alice = unique_name("fu")
    cli.ok("call", "session.connect", f"username={alice}", "password=pw")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"line\n" * 20000)
    info = cli.ok("call", "files.upload", f"path={source}")
    assert info["name"] == "notes.txt" and info["size"] == 100000
    assert info["content_type"].startswith("text/plain")
    cli.ok("call", "messages.send", "chat_id=general", f'attachments=["{info["file_id"]}"]')
    dest = tmp_path / "copy.txt"
    saved = cli.ok("call", "files.download", f"file_id={info['file_id']}", f"path={dest}")
    assert saved["size"] == 100000 and dest.read_bytes() == source.read_bytes()
    # A local mistake: exit 2 and a plain line, no JSON error with "code": null.
    missing = cli.run("call", "files.upload", f"path={tmp_path / 'absent.bin'}")
    assert missing.returncode == 2 and missing.stdout == ""
    assert "absent.bin: no such file" in missing.stderr and '"code"' not in missing.stderr
    assert cli.run("call", "files.upload").returncode == 2


def next_message(proc: subprocess.Popen[str], timeout: float = 10) -> Any:
    """The next `message` event line `messenger poll` prints (other events are skipped)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        assert line.endswith("\n"), f"poll ended: {line!r}"
        event = orjson.loads(line)
        assert isinstance(event["seq"], int)
        if event["type"] == "message":
            return event
    raise AssertionError("no message event printed in time")


def test_poll_prints_events_as_json_lines(cli: Cli) -> None:
    bob = unique_name("pl")
    cli.ok("call", "session.connect", f"username={bob}", "password=pw")
    sender = send_as_new_user(cli.url, bob, "waiting for you")
    proc = subprocess.Popen(cli.command("poll", "--timeout", "5"), cwd=ROOT, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = next_message(proc)  # the backlog, from the read marker
        assert first["message"]["text"] == "waiting for you"
        assert first["message"]["author"] == sender
        send_as_new_user(cli.url, bob, "live one")
        second = next_message(proc)
        assert second["message"]["text"] == "live one" and second["seq"] > first["seq"]
    finally:
        proc.terminate()
        proc.wait(10)
    # Polling on acknowledged the first event: a new `messenger poll` does not repeat it.
    send_as_new_user(cli.url, bob, "third")
    late = subprocess.Popen(cli.command("poll", "--timeout", "1"), cwd=ROOT, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert next_message(late)["message"]["text"] in ("live one", "third")
    finally:
        late.terminate()
        late.wait(10)


def test_repl_refuses_to_run_without_a_terminal(tmp_path: Path) -> None:
    cli = Cli(f"http://127.0.0.1:{free_port()}", tmp_path)
    done = cli.run("--user", unique_name("nt"))
    assert done.returncode == 2
    assert "terminal" in done.stderr and "messenger call" in done.stderr
