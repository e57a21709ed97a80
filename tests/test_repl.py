"""The interactive client in a real pseudo-terminal (pexpect) against a real server."""
from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from client import MessengerClient
from client.repl_books import IdBook
from methods.rules import new_id
from tests.support import ROOT, ServerProcess, unique_name


class Peer:
    """Another user, driven through the client library from the (synchronous) test."""

    def __init__(self, url: str, prefix: str = "peer", name: str | None = None) -> None:
        self.url = url
        self.name = name or unique_name(prefix)
        self.token: str | None = None
        self.token = self.call("session.connect", username=self.name, password="pw")["token"]

    def call(self, method: str, **params: Any) -> Any:
        """One JSON-RPC call as this user."""
        async def go() -> dict[str, Any]:
            async with MessengerClient(self.url, token=self.token) as client:
                return await client.call(method, params)
        return asyncio.run(go())


class Terminal:
    """`messenger --user NAME` in a pseudo-terminal, with everything it printed kept."""

    def __init__(self, url: str, user: str, password: str = "pw") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
        env.update(MESSENGER_PASSWORD=password, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(sys.executable, ["-m", "client", "--server", url,
                                                    "--user", user],
                                   cwd=str(ROOT), env=env, encoding="utf-8", timeout=10,
                                   dimensions=(50, 220))
        self.child.logfile_read = self.transcript

    def expect(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """Wait for a regex in the output; its match."""
        self.child.expect(pattern, timeout=timeout)
        match: re.Match[str] = self.child.match
        return match

    def see(self, text: str, timeout: float = 10) -> None:
        """Wait for literal text in the output."""
        self.expect(re.escape(text), timeout)

    def line(self, text: str) -> None:
        """Type a line and press Enter."""
        self.child.send(text + "\r")

    def tab(self, text: str) -> None:
        """Type text and press Tab, leaving time for the completion to be inserted."""
        self.child.send(text + "\t")
        time.sleep(0.3)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def terminals() -> Iterator[Callable[[str, str], Terminal]]:
    """Start REPLs; all are closed at the end."""
    started: list[Terminal] = []

    def start(url: str, user: str) -> Terminal:
        term = Terminal(url, user)
        started.append(term)
        return term

    yield start
    for term in started:
        term.close()


def test_repl_session_runs_every_command(server: ServerProcess, tmp_path: Path,
                                         terminals: Callable[[str, str], Terminal]) -> None:
    url = server.url
    me = unique_name("me")
    registered = Peer(url, name=me)
    registered.call("session.disconnect")
    bob = Peer(url, "bob")
    hello = bob.call("messages.send", chat_id="general", text="hello general")["message"]
    bob.call("messages.send", to=me, text="backlog dm")

    term = terminals(url, me)
    # The general chat's history, then the unread backlog (without repeating the history).
    short = term.expect(re.escape(f"#general {bob.name}: hello general") + r"  \((\S+)\)")[1]
    assert short.startswith("m_") and hello["message_id"].endswith(short[2:])
    term.see("— 1 new event while you were away —")  # the label comes first
    term.see(f"@{bob.name} {bob.name}: backlog dm")
    term.see("#general>")
    assert term.transcript.getvalue().count("hello general") == 1

    # A live message arrives while a line is half typed; the line survives intact.
    term.child.send("partial typ")
    time.sleep(0.3)
    bob.call("messages.send", to=me, text="live ping")
    term.see(f"@{bob.name} {bob.name}: live ping")
    term.line("ed text")
    term.see(f"#general {me}: partial typed text")
    general = bob.call("messages.history", chat_id="general")["messages"]
    assert general[-1]["text"] == "partial typed text" and general[-1]["author"] == me

    term.tab("/hel")  # Tab completes the command
    term.line("")
    term.see("this list")
    term.line("/chats")
    term.expect(r"\* #general +general")
    term.see(f"@{bob.name}")
    term.line("/status")
    term.see(f"{me} on {url}")
    term.see("general quota: 19/20 left")
    term.line("/history 5")
    term.see(f"#general {bob.name}: hello general")

    term.line(f"/comment {short} nice one")
    term.see(f"#general {me}: ↳ re {short} nice one")
    last = bob.call("messages.history", chat_id="general", limit=1)["messages"][-1]
    assert last["comment_to"] == hello["message_id"] and last["text"] == "nice one"

    term.tab(f"/to {bob.name[:4]}")  # Tab completes a username seen so far
    term.line(" direct hi")
    term.see(f"@{bob.name} {me}: direct hi")

    # In the last hour of a day, an hour later is "00:30 tomorrow (Wed 2 Dec)".
    at = r" at \d\d:\d\d(?: tomorrow \([^)]*\))? → #general: "
    term.line("/schedule 1h later text")
    scheduled_id = term.expect(r"scheduled (\S+)" + at + "later text")[1]
    term.line("/scheduled")
    term.expect(re.escape(scheduled_id) + at + "later text")
    term.line(f"/cancel {scheduled_id}")
    term.see(f"cancelled scheduled {scheduled_id}")
    term.line("/schedule 1s soon text")
    term.expect(r"scheduled \S+" + at + "soon text")
    term.see(f"#general {me}: soon text", timeout=10)  # delivered by the server later

    term.line(f"/create Team {bob.name}")
    term.see(f"created #Team with {me}, {bob.name}")
    term.see("#Team>")
    attachment = tmp_path / "notes.txt"
    attachment.write_text("twelve bytes")
    term.line(f"/send --file {attachment} see attached")
    file_id = term.expect(re.escape(f"#Team {me}: see attached [file notes.txt (12 B) id=")
                          + r"(\S+)\]")[1]
    target = tmp_path / "got.txt"
    term.line(f"/download {file_id} {target}")
    term.see(f"saved {target}")
    assert target.read_text() == "twelve bytes"

    carol = Peer(url, "carol")
    term.line(f"/invite {carol.name}")
    term.see(f"invited {carol.name} to #Team")
    term.line("/link")
    link = term.expect(r"join link for #Team: (\S+)")[1]
    dave = Peer(url, "dave")
    assert dave.call("chats.join", link=link)["status"] == "pending"
    term.see(f"{dave.name} asks to join #Team: /approve {dave.name}")
    term.line(f"/approve {dave.name}")
    term.see(f"approved {dave.name} for #Team")
    erin = Peer(url, "erin")
    erin.call("chats.join", link=link)
    term.see(f"{erin.name} asks to join #Team")
    term.line(f"/decline {erin.name}")
    term.see(f"declined {erin.name} for #Team")
    members = next(c["members"] for c in dave.call("session.status")["chats"]
                   if c["title"] == "Team")
    assert dave.name in members and erin.name not in members and carol.name in members
    term.line(f"/join {link}")
    term.see("you are already a member")

    term.line("/chat general")
    term.see("now in #general")
    term.line("/chat Team")
    term.see("now in #Team")
    term.line(f"/report {bob.name} spam")
    term.see(f"reported {bob.name} (recorded, but not counted")  # a brand-new account
    term.line(f"/block {bob.name}")
    term.see(f"blocked {bob.name}: they can no longer message you")
    term.line("/blocked")
    term.see(f"you block: {bob.name}")
    term.line(f"/unblock {bob.name}")
    term.see(f"unblocked {bob.name}")
    term.line("/leave")
    term.see("you left #Team; now in #general")

    # Mistakes are one readable line each, never a traceback.
    term.line("/chat nowhere")
    term.see("no chat 'nowhere'")
    term.line(f"/to {unique_name('ghost')} hi")
    term.see("! no such user")
    term.line("/bogus")
    term.see("unknown command /bogus")

    term.line("/quit")
    term.child.expect(pexpect.EOF)
    term.child.close()
    assert term.child.exitstatus == 0
    assert "Traceback" not in term.transcript.getvalue()
    # /quit ended the session on the server.
    assert all(s["client"] != "messenger-repl"
               for s in registered_sessions(url, me))


def registered_sessions(url: str, name: str) -> list[dict[str, Any]]:
    """The sessions of `name`, seen from a fresh login of that user."""
    sessions: list[dict[str, Any]] = Peer(url, name=name).call("session.status")["sessions"]
    return sessions


def test_repl_shows_errors_and_reconnects(server_factory: Callable[..., ServerProcess],
                                          terminals: Callable[[str, str], Terminal]) -> None:
    server = server_factory("--rate-limit", "1", "--ban-threshold", "1", "--report-min-age", "0")
    me = unique_name("rc")
    bob = Peer(server.url, "bob")
    term = terminals(server.url, me)
    term.see("#general>")
    term.line("first post")
    term.see(f"#general {me}: first post")
    term.line("second post")
    # (the window ends at the next full hour: "1 h" in an hour's first minute)
    term.expect(r"! rate limit: try again in \d+ (s|min|h)")

    bob.call("users.report", username=me, reason="spam")
    term.expect(r"you are banned from sending until \d\d:\d\d")
    term.line(f"/to {bob.name} hello?")
    term.expect(r"! you are banned until \d\d:\d\d")

    # Ctrl-C cancels a command stuck on an unresponsive server, not the REPL.
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        term.line("/status")
        time.sleep(0.5)
        term.child.sendcontrol("c")
        term.see("! interrupted")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    term.line("/status")
    term.see(f"{me} on {server.url}")

    server.stop()
    term.see("reconnecting…")
    server.start()
    term.see("reconnected")
    bob.call("messages.send", to=me, text="welcome back")
    term.see(f"@{bob.name} {bob.name}: welcome back")
    assert term.transcript.getvalue().count("reconnecting…") == 1
    assert "Traceback" not in term.transcript.getvalue()
    term.child.sendeof()
    term.child.expect(pexpect.EOF)


def test_repl_wrong_password_is_one_line(server: ServerProcess,
                                         terminals: Callable[[str, str], Terminal]) -> None:
    name = unique_name("wp")
    Peer(server.url, name=name)
    term = Terminal(server.url, name, password="not the password")
    try:
        term.see("login failed: wrong password")
        term.child.expect(pexpect.EOF)
        term.child.close()
        assert term.child.exitstatus == 1
        assert "Traceback" not in term.transcript.getvalue()
    finally:
        term.close()


def test_ids_sort_by_creation_and_the_repl_tells_ids_made_together_apart() -> None:
    """Ids start with the millisecond they were made in (so a batch of sends writes one
    index page, not one per message); the REPL's short form keeps their random end."""
    made = []
    for _ in range(3):
        made.append(new_id("m"))
        time.sleep(0.002)
    assert made == sorted(made) and len(set(made)) == 3
    together = [new_id("m") for _ in range(200)]
    book = IdBook()
    shown = [book.short(i) for i in together]
    assert all(s.startswith("m_") and len(s) == 8 for s in shown)
    assert len(set(shown)) == len(together)
    assert [book.resolve(s) for s in shown] == together
    assert book.resolve(together[7][:20]) == together[7]  # a prefix still works
    assert book.short("general") == "general"
