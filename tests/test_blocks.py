"""Users cannot silence or pester each other: block lists, report rules, what members see,
and a REPL that prints others' text without control characters."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest

from client import MessengerClient
from client.render import printable
from client.repl import Repl
from tests.helpers import ts
from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess, unique_name
from tests.test_client_cli import Cli

Factory = Callable[..., ServerProcess]
InProcFactory = Callable[..., Awaitable[InProcessServer]]
PASSWORD = "long enough pw"


@pytest.fixture
def any_server(server_factory: Factory, store_flags: tuple[str, ...]) -> ServerProcess:
    """A server on SQLite, then on PostgreSQL."""
    return server_factory(*store_flags)


async def users(http: aiohttp.ClientSession, url: str, n: int, prefix: str = "bk") -> list[Api]:
    out = []
    for _ in range(n):
        api = Api(http, url)
        await api.connect(unique_name(prefix), PASSWORD)
        out.append(api)
    return out


async def chat_ids(api: Api) -> list[str]:
    return [c["chat_id"] for c in (await api.call("session.status"))["chats"]]


def rfc3339(ts: float) -> str:
    """A UTC RFC 3339 time with milliseconds."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


async def blocked_reason(api: Api, method: str, **params: Any) -> str:
    failure = await api.error(method, **params)
    assert failure.code == 403, failure
    reason: str = failure.data["reason"]
    return reason


# -- block lists ---------------------------------------------------------------------------

async def test_block_list_calls_and_refusals(any_server: ServerProcess,
                                             http: aiohttp.ClientSession) -> None:
    alice, bob, carol = await users(http, any_server.url, 3)
    assert await alice.call("users.blocked") == {"usernames": []}
    assert await alice.call("users.block", username=bob.username) == {}
    assert await alice.call("users.block", username=bob.username.upper()) == {}  # no-op
    await alice.call("users.block", username=carol.username)
    assert await alice.call("users.blocked") == {"usernames": [bob.username, carol.username]}
    assert await bob.call("users.blocked") == {"usernames": []}  # one-way
    for method in ("users.block", "users.unblock"):
        failure = await alice.error(method, username=alice.username)
        assert failure.code == -32602 and failure.data["path"] == "/username"
        assert (await alice.error(method, username="nobody_here_at_all")).code == 404
    assert await alice.call("users.unblock", username=carol.username) == {}
    assert await alice.call("users.unblock", username=carol.username) == {}  # no-op
    assert await alice.call("users.blocked") == {"usernames": [bob.username]}


async def test_blocked_user_cannot_write_invite_or_add(any_server: ServerProcess,
                                                       http: aiohttp.ClientSession) -> None:
    alice, bob, carol = await users(http, any_server.url, 3)
    direct = (await bob.call("messages.send", to=alice.username, text="hi"))["message"]
    group = (await alice.call("chats.create", title="shared",
                              members=[bob.username]))["chat"]["chat_id"]
    await alice.call("users.block", username=bob.username)

    # 1-to-1: by name and into the existing direct chat, now and scheduled.
    assert await blocked_reason(bob, "messages.send", to=alice.username, text="x") == "blocked"
    assert await blocked_reason(bob, "messages.send", chat_id=direct["chat_id"],
                                text="x") == "blocked"
    assert await blocked_reason(bob, "messages.send", to=alice.username, text="later",
                                send_at=rfc3339(time.time() + 3600)) == "blocked"
    # One-way: alice may still write to bob, and both still read their direct chat.
    await alice.call("messages.send", to=bob.username, text="I can still talk")
    texts = [m["text"] for m in await alice.all_messages(direct["chat_id"])]
    assert texts == ["hi", "I can still talk"]
    # Shared group chats are unaffected.
    await bob.call("messages.send", chat_id=group, text="group is fine")
    # Invite and add: refused / left out.
    bobs = (await bob.call("chats.create", title="bob's"))["chat"]["chat_id"]
    assert await blocked_reason(bob, "chats.invite", chat_id=bobs,
                                username=alice.username) == "blocked"
    made = (await bob.call("chats.create", title="trap",
                           members=[alice.username, carol.username]))["chat"]
    assert made["members"] == [bob.username, carol.username]
    assert made["chat_id"] not in await chat_ids(alice)
    # A join request through a link of hers: refused the same way.
    hers = (await alice.call("chats.create", title="hers"))["chat"]["chat_id"]
    link = (await alice.call("chats.link", chat_id=hers))["link"]
    assert await blocked_reason(bob, "chats.join", link=link) == "blocked"
    # Nothing of it reached alice's stream (only what bob wrote before the block, and in
    # the shared group).
    events = (await alice.poll(timeout=0, limit=1000))["events"]
    assert [e["message"]["text"] for e in events if e["type"] == "message"
            and e["message"]["author"] == bob.username] == ["hi", "group is fine"]
    assert not [e for e in events if e["type"] == "chat" and e["chat_id"] in (bobs, made[
        "chat_id"])]
    assert not [e for e in events if e["type"] == "join_request"]

    # Unblocking lets everything through again.
    await alice.call("users.unblock", username=bob.username)
    await bob.call("messages.send", to=alice.username, text="thanks")
    await bob.call("chats.invite", chat_id=bobs, username=alice.username)
    assert bobs in await chat_ids(alice)
    assert (await bob.call("chats.join", link=link))["status"] == "pending"


async def test_leaving_a_direct_chat_and_blocking(server: ServerProcess,
                                                  http: aiohttp.ClientSession) -> None:
    alice, bob, carol = await users(http, server.url, 3)
    chat = (await bob.call("messages.send", to=alice.username, text="one"))["message"]["chat_id"]
    # Without a block the next message brings the one who left back (documented).
    await alice.call("chats.leave", chat_id=chat)
    assert chat not in await chat_ids(alice)
    await bob.call("messages.send", to=alice.username, text="two")
    assert chat in await chat_ids(alice)
    # Leave and block: the writer is refused and the leaver stays away.
    await alice.call("chats.leave", chat_id=chat)
    await alice.call("users.block", username=bob.username)
    assert await blocked_reason(bob, "messages.send", chat_id=chat, text="three") == "blocked"
    assert await blocked_reason(bob, "messages.send", to=alice.username, text="3") == "blocked"
    assert chat not in await chat_ids(alice)
    # The blocker may write again, which brings both back; the history is still there.
    await alice.call("messages.send", to=bob.username, text="four")
    assert [m["text"] for m in await alice.all_messages(chat)] == ["one", "two", "four"]
    # Unrelated pairs are unaffected.
    await carol.call("messages.send", to=alice.username, text="hello")


async def test_scheduled_direct_message_to_a_new_blocker_is_cancelled(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    alice, bob = await users(http, server.url, 2)
    bob_start = (await bob.poll(timeout=0))["cursor"]
    entry = (await bob.call("messages.send", to=alice.username, text="surprise",
                            send_at=rfc3339(time.time() + 1.0)))["scheduled"]
    await alice.call("users.block", username=bob.username)
    deadline = time.monotonic() + 10
    cancelled: list[Any] = []
    cursor = bob_start
    while not cancelled:
        assert time.monotonic() < deadline, "the scheduled message never fired"
        body = await bob.poll(cursor, timeout=2)
        cursor = body["cursor"]
        cancelled = [e for e in body["events"] if e["type"] == "scheduled"
                     and e["action"] == "cancelled"]
    assert cancelled[0]["scheduled"]["scheduled_id"] == entry["scheduled_id"]
    assert cancelled[0]["reason"] == "blocked"
    assert not [e for e in (await alice.poll(timeout=0))["events"] if e["type"] == "message"]


async def test_banned_user_cannot_add_anyone(server_factory: Factory,
                                             http: aiohttp.ClientSession) -> None:
    server = server_factory("--ban-threshold", "1", "--report-min-age", "0")
    mallory, alice, bob = await users(http, server.url, 3)
    own = (await mallory.call("chats.create", title="before"))["chat"]["chat_id"]
    await bob.call("users.report", username=mallory.username)
    for method, params in (("chats.create", {"title": "spam", "members": [alice.username]}),
                           ("chats.invite", {"chat_id": own, "username": alice.username})):
        failure = await mallory.error(method, **params)
        assert failure.code == 403 and failure.data["reason"] == "banned", failure
    assert own not in await chat_ids(alice)
    assert len(await chat_ids(alice)) == 1  # only the general chat
    # A chat of one's own is harmless and still allowed.
    await mallory.call("chats.create", title="alone")


# -- reports -------------------------------------------------------------------------------

async def test_reports_count_only_from_old_accounts_and_never_during_a_ban(
        inproc_factory: InProcFactory, http: aiohttp.ClientSession) -> None:
    """(In-process with a FakeClock: hours-long settings, moved through instead of slept.)"""
    server = await inproc_factory("--ban-threshold", "2", "--ban-duration", "7200",
                                  "--report-min-age", "3600")
    target, r1, r2, r3 = await users(http, server.url, 4)
    await server.advance(3600.1)  # r1..r3 are old enough now
    [young] = await users(http, server.url, 1)
    assert await young.call("users.report", username=target.username) == {
        "reports": 0, "banned_until": None}  # recorded, but it does not count
    assert (await young.error("users.report", username=target.username)).code == 409
    assert (await r1.call("users.report", username=target.username))["reports"] == 1
    ban = await r2.call("users.report", username=target.username)
    assert ban["reports"] == 2 and ban["banned_until"] is not None
    # During the ban: recorded, not counted, the ban not extended.
    during = await r3.call("users.report", username=target.username)
    assert during == {"reports": 0, "banned_until": ban["banned_until"]}
    assert (await r3.error("users.report", username=target.username)).code == 409
    status = await target.call("session.status")
    assert status["banned_until"] == ban["banned_until"]
    # After the ban the reports behind it are used up, and r3's did not carry over.
    await server.advance(3600)
    assert (await target.call("session.status"))["banned_until"] == ban["banned_until"]
    await server.advance_to(ts(ban["banned_until"]) + 0.05)
    assert (await target.call("session.status"))["banned_until"] is None
    assert (await r3.call("users.report", username=target.username)) == {
        "reports": 1, "banned_until": None}
    # young is old enough now: its report counts, and with r3's it bans again.
    again = await young.call("users.report", username=target.username)
    assert again["reports"] == 2 and again["banned_until"] is not None
    assert again["banned_until"] != ban["banned_until"]


# -- what a new member sees -------------------------------------------------------------------

async def test_new_member_sees_earlier_history_and_files_until_leaving(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    owner, late = await users(http, server.url, 2)
    chat = (await owner.call("chats.create", title="history"))["chat"]["chat_id"]
    async with http.post(server.url + "/files", params={"name": "old.txt"}, data=b"old file",
                         headers=owner.headers()) as r:
        file_id = (await r.json())["file_id"]
    await owner.call("messages.send", chat_id=chat, text="before you came",
                     attachments=[file_id])

    async def download(api: Api) -> int:
        async with http.get(f"{server.url}/files/{file_id}", headers=api.headers()) as r:
            await r.read()
            return r.status

    assert await download(late) == 404
    assert (await late.error("messages.history", chat_id=chat)).code == 403
    await owner.call("chats.invite", chat_id=chat, username=late.username)
    texts = [m["text"] for m in (await late.call("messages.history", chat_id=chat))["messages"]]
    assert texts == ["before you came"]
    assert await download(late) == 200
    # The event stream starts at the join: the earlier message is not an event of theirs.
    events = (await late.poll(timeout=0, limit=1000))["events"]
    assert not [e for e in events if e["type"] == "message" and e["message"]["chat_id"] == chat]
    await late.call("chats.leave", chat_id=chat)
    assert (await late.error("messages.history", chat_id=chat)).code == 403
    assert await download(late) == 404


# -- REPL and messenger call ------------------------------------------------------------------

def test_printable_removes_control_characters_but_tabs_and_newlines() -> None:
    hostile = "ok\x08\x08\x08\x1b[2K\rfake: hi\x7f\x85\x9b\u202egnp.exe\u2066\x00\tend\n"
    shown = printable(hostile)
    assert shown == ("ok\ufffd\ufffd\ufffd\ufffd[2K\ufffdfake: hi\ufffd\ufffd\ufffd\ufffdgnp.exe"
                     "\ufffd\ufffd\tend\n")
    plain = "héllo мир مرحبا 👋 \u200d"
    assert printable(plain) == plain


async def test_repl_prints_others_text_and_names_without_controls_and_blocks(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    [bob] = await users(http, server.url, 1)
    lines: list[str] = []
    async with MessengerClient(server.url) as client:
        me = (await client.connect(unique_name("rp"), PASSWORD))["username"]
        repl = Repl(client, me, lines.append)
        sent = await bob.call("messages.send", to=me, text="\x08\x08\x1b[1;31mhi\u202eolleh\x07")
        await repl.on_event({"seq": 1, "type": "message", "message": sent["message"]})
        await repl.on_event({"seq": 2, "type": "join_request", "chat_id": "g_x",
                             "username": "evil\x1b[2J"})
        assert lines and all(printable(line) == line for line in lines), lines
        assert any("\ufffd\ufffd\ufffd[1;31mhi\ufffdolleh\ufffd" in line for line in lines)

        await repl.execute(f"/block {bob.username}")
        await repl.execute("/blocked")
        assert lines[-1] == f"* you block: {bob.username}"
        failure = await bob.error("messages.send", to=me, text="let me in")
        assert failure.data["reason"] == "blocked"
        await repl.execute(f"/unblock @{bob.username}")
        await repl.execute("/blocked")
        assert lines[-1] == "* you block nobody"
        await repl.execute(f"/block {me}")
        assert lines[-1].startswith("! invalid params"), lines[-1]


def test_messenger_call_block_unblock_blocked(server: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(server.url, tmp_path / "config")
    me, other = unique_name("cl"), unique_name("cm")
    cli.env["MESSENGER_PASSWORD"] = PASSWORD
    cli.ok("--user", other, "call", "session.connect")
    cli.ok("--user", me, "call", "session.connect")
    assert cli.ok("--user", me, "call", "users.block", f"username={other}") == {}
    assert cli.ok("--user", me, "call", "users.blocked") == {"usernames": [other]}
    assert cli.ok("--user", me, "call", "users.unblock", f"username={other}") == {}
    assert cli.ok("--user", me, "call", "users.blocked") == {"usernames": []}
    error = cli.fails(1, "--user", me, "call", "users.block", f"username={me}")
    assert error["code"] == -32602
    polled = cli.ok("--user", me, "call", "events.poll", "timeout=0")
    assert set(polled) == {"events", "cursor", "more"}
