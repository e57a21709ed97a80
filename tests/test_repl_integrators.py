"""`messenger` as a person meets it: the REPL's backlog, schedule, download and a dead
server, and `messenger call`'s hints and plain local errors."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator

import pexpect
import pytest

from client import MessengerClient
from client.render import day_and_clock, parse_when, rfc3339
from tests.support import ROOT, ServerProcess, free_port, run_module, unique_name
from tests.test_repl import Peer, Terminal


@pytest.fixture
def terminal() -> Iterator[Callable[[str, str], Terminal]]:
    """Start one REPL; it is closed at the end."""
    started: list[Terminal] = []

    def start(url: str, user: str) -> Terminal:
        started.append(Terminal(url, user))
        return started[-1]

    yield start
    for term in started:
        term.close()


def test_backlog_label_comes_first_and_counts_only_what_is_new(
        server: ServerProcess, terminal: Callable[[str, str], Terminal]) -> None:
    """The history shows bob's general message; the backlog (which also holds it) is
    announced above itself and counts only the direct message not shown yet."""
    me = unique_name("me")
    Peer(server.url, name=me).call("session.disconnect")
    bob = Peer(server.url, "bob")
    bob.call("messages.send", chat_id="general", text="hello general")
    bob.call("messages.send", to=me, text="backlog dm")
    term = terminal(server.url, me)
    label = "— 1 new event while you were away —"
    term.see(label)
    term.see("backlog dm")
    out = term.transcript.getvalue()
    assert out.index("hello general") < out.index(label) < out.index("backlog dm")
    assert out.count("hello general") == 1


def test_clock_times_that_passed_today_mean_tomorrow_and_say_so() -> None:
    """At 13:45, `13:00` is tomorrow's 13:00, shown with its day; today's is just HH:MM."""
    now = datetime(2026, 12, 1, 13, 45).astimezone()
    at = parse_when("13:00", now)
    assert at.date() == (now + timedelta(days=1)).date() and at.hour == 13
    assert day_and_clock(rfc3339(at), now) == "13:00 tomorrow (Wed 2 Dec)"
    assert day_and_clock(rfc3339(parse_when("14:00", now)), now) == "14:00"
    assert day_and_clock(rfc3339(now + timedelta(days=3)), now) == "13:45 on Fri 4 Dec"
    assert day_and_clock(rfc3339(now + timedelta(days=40)), now).endswith("Jan 2027")


def test_repl_schedule_for_a_past_clock_time_says_tomorrow(
        server: ServerProcess, terminal: Callable[[str, str], Terminal]) -> None:
    """`/schedule HH:MM` a minute ago answers with tomorrow's date, not a bare time."""
    now = datetime.now().astimezone()
    earlier = now - timedelta(minutes=1)
    if earlier.date() != now.date():
        pytest.skip("a minute ago was yesterday")
    term = terminal(server.url, unique_name("sch"))
    term.see("#general>")
    term.line(f"/schedule {earlier:%H:%M} see you")
    tomorrow = now + timedelta(days=1)
    term.see(f"at {earlier:%H:%M} tomorrow ({tomorrow:%a} {tomorrow.day} {tomorrow:%b})")


def test_repl_download_never_overwrites(server: ServerProcess, tmp_path: Path,
                                        terminal: Callable[[str, str], Terminal]) -> None:
    """A file of the same name stays as it was; the download gets `name (1).ext`."""
    me = unique_name("dl")
    Peer(server.url, name=me).call("session.disconnect")
    bob = Peer(server.url, "bob")

    async def send() -> None:
        async with MessengerClient(server.url, token=bob.token) as client:
            info = await client.upload(b"new bytes", name="report.pdf")
            await client.send(to=me, attachments=[info["file_id"]])

    asyncio.run(send())
    (tmp_path / "report.pdf").write_bytes(b"mine")
    term = terminal(server.url, me)
    short = term.expect(r"\[file report\.pdf \(9 B\) id=(\S+)\]")[1]
    term.see("#general>")
    term.line(f"/download {short} {tmp_path}")
    term.see(f"saved {tmp_path / 'report (1).pdf'}")
    term.see("report.pdf exists, kept as is")
    assert (tmp_path / "report.pdf").read_bytes() == b"mine"
    assert (tmp_path / "report (1).pdf").read_bytes() == b"new bytes"


def test_repl_says_the_server_is_down_before_asking_a_password() -> None:
    """No password prompt for a server that is not there: one line, exit status 3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env.update(PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    url = f"http://127.0.0.1:{free_port()}"
    child = pexpect.spawn(sys.executable, ["-m", "client", "--server", url, "--user", "bob"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=20)
    try:
        index = child.expect([re.escape(f"cannot reach the server at {url}"), "password"])
        assert index == 0, child.before
        child.expect(pexpect.EOF)
        assert "password" not in (child.before or "")
    finally:
        child.close(force=True)
    assert child.exitstatus == 3


# --- messenger call ------------------------------------------------------------------------

def cli(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`messenger ARGS` with a private config directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env.update(XDG_CONFIG_HOME=str(config), MESSENGER_SERVER=url)
    return run_module("client", list(args), env, ROOT, timeout=30)  # a forked process


def test_call_without_a_session_says_how_to_log_in(server: ServerProcess,
                                                   tmp_path: Path) -> None:
    """A 401 with no stored session: a hint line naming the command, then the JSON error."""
    done = cli(server.url, tmp_path, "call", "session.status")
    assert done.returncode == 1
    hint, error = done.stderr.strip().splitlines()[-2:]
    assert '"code":401' in error
    assert "no stored session" in hint
    assert "messenger --user NAME call session.connect username=NAME password=..." in hint
    named = cli(server.url, tmp_path, "--user", "zed", "poll")
    assert "messenger --user zed call session.connect username=zed" in named.stderr


def test_call_usage_and_local_errors_read_plainly(tmp_path: Path) -> None:
    """params are optional in the usage; a missing file is exit 2 with a plain line; a dead
    server is named without aiohttp internals."""
    down = f"http://127.0.0.1:{free_port()}"
    usage = cli(down, tmp_path, "call")
    assert usage.returncode == 2
    assert "[key=value ...]" in usage.stderr and "required: method\n" in usage.stderr
    nope = cli(down, tmp_path, "call", "files.upload", "path=/nope")
    assert nope.returncode == 2 and "/nope: no such file" in nope.stderr
    assert '"code"' not in nope.stderr and "Traceback" not in nope.stderr
    unreachable = cli(down, tmp_path, "call", "rpc.discover")
    assert unreachable.returncode == 3
    assert f"cannot reach the server at {down}: connection refused" in unreachable.stderr
    assert "ssl:" not in unreachable.stderr and "Connect call" not in unreachable.stderr
