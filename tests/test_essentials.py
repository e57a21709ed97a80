"""Messenger essentials on real servers: edit, delete, search, read positions, retry-safe sends."""
from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import orjson
import pexpect

from client import MessengerClient
from client.repl import Repl
from tests.inproc import InProcessServer
from tests.support import ROOT, Api, ServerProcess, run_module, unique_name, wait_until
from tests.test_repl import Peer, Terminal

Factory = Callable[..., ServerProcess]


async def users(http: aiohttp.ClientSession, server: ServerProcess | InProcessServer,
                n: int) -> list[Api]:
    """`n` freshly registered, logged-in users."""
    apis = []
    for _ in range(n):
        api = Api(http, server.url)
        await api.connect(unique_name("es"))
        apis.append(api)
    return apis


async def events_of(api: Api, type_: str) -> list[Any]:
    """Every event of a type in the user's stream (nothing acknowledged)."""
    body = await api.poll(timeout=0, limit=1000, advance=False)
    return [e for e in body["events"] if e["type"] == type_]


async def test_edit_rules_event_history_and_expiry(
        http: aiohttp.ClientSession, server_factory: Factory, store_flags: tuple[str, ...]) -> None:
    server = server_factory("--max-text", "20", *store_flags)
    alice, bob, carol = await users(http, server, 3)
    group = (await alice.call("chats.create", title="t", members=[bob.username]))["chat"]
    sent = (await alice.call("messages.send", chat_id=group["chat_id"], text="helo"))["message"]
    assert sent["edited_at"] is None
    edited = (await alice.call("messages.edit", message_id=sent["message_id"],
                               text="hello"))["message"]
    assert edited["text"] == "hello" and edited["edited_at"] is not None
    assert edited["expires_at"] == sent["expires_at"]
    assert edited["sent_at"] == sent["sent_at"]
    [event] = await events_of(bob, "message_edited")
    assert event["message"] == edited
    history = await bob.call("messages.history", chat_id=group["chat_id"])
    assert history["messages"] == [edited]
    # Refusals: not the author (403), not a member (404), unknown (404), too long (413).
    assert (await bob.error("messages.edit", message_id=sent["message_id"], text="x")).code == 403
    assert (await carol.error("messages.edit", message_id=sent["message_id"],
                              text="x")).code == 404
    assert (await alice.error("messages.edit", message_id="m_nope", text="x")).code == 404
    assert (await alice.error("messages.edit", message_id=sent["message_id"],
                              text="x" * 21)).code == 413
    assert (await alice.error("messages.edit", message_id=sent["message_id"],
                              text="")).code == -32602
    assert (await bob.call("messages.history", chat_id=group["chat_id"]))["messages"] == [edited]


async def test_edit_and_delete_of_an_expired_message_are_404(
        http: aiohttp.ClientSession, inproc_factory: Callable[..., Awaitable[InProcessServer]],
) -> None:
    """(In-process with a FakeClock: an hour's TTL, moved through instead of slept.)"""
    server = await inproc_factory("--message-ttl", "3600")
    [alice] = await users(http, server, 1)
    sent = (await alice.call("messages.send", chat_id="general", text="brief"))["message"]
    await server.advance(3600.2)
    assert (await alice.error("messages.edit", message_id=sent["message_id"],
                              text="x")).code == 404
    assert (await alice.error("messages.delete", message_id=sent["message_id"])).code == 404
    assert (await alice.error("chats.read", chat_id="general",
                              message_id=sent["message_id"])).code == 404


async def test_delete_rules_event_and_undelivered_polls(
        http: aiohttp.ClientSession, server_factory: Factory, store_flags: tuple[str, ...]) -> None:
    server = server_factory(*store_flags)
    alice, bob, carol = await users(http, server, 3)
    group = (await alice.call("chats.create", title="t", members=[bob.username]))["chat"]
    gid = group["chat_id"]
    by_bob = (await bob.call("messages.send", chat_id=gid, text="bob's"))["message"]
    by_alice = (await alice.call("messages.send", chat_id=gid, text="alice's"))["message"]
    in_general = (await alice.call("messages.send", chat_id="general", text="hi"))["message"]
    # A member may not delete another's message; the general chat has no owner.
    assert (await bob.error("messages.delete", message_id=by_alice["message_id"])).code == 403
    assert (await bob.error("messages.delete", message_id=in_general["message_id"])).code == 403
    assert (await carol.error("messages.delete", message_id=by_bob["message_id"])).code == 404
    assert (await bob.error("messages.delete", message_id="m_nope")).code == 404
    # The owner may delete bob's; bob may delete his own... which is gone already.
    assert await alice.call("messages.delete", message_id=by_bob["message_id"]) == {}
    assert (await bob.error("messages.delete", message_id=by_bob["message_id"])).code == 404
    assert await alice.call("messages.delete", message_id=in_general["message_id"]) == {}
    history = await bob.call("messages.history", chat_id=gid)
    assert [m["message_id"] for m in history["messages"]] == [by_alice["message_id"]]
    # bob never polled: the deleted message's own event is not delivered at all.
    body = await bob.poll(timeout=0, limit=1000, advance=False)
    delivered = [e["message"]["message_id"] for e in body["events"] if e["type"] == "message"]
    assert by_bob["message_id"] not in delivered and by_alice["message_id"] in delivered
    gone = [e for e in body["events"] if e["type"] == "message_deleted"]
    assert {"chat_id": gid, "message_id": by_bob["message_id"]} in [
        {"chat_id": e["chat_id"], "message_id": e["message_id"]} for e in gone]
    # carol sees the general chat's deletion too.
    assert [e["message_id"] for e in await events_of(carol, "message_deleted")] == [
        in_general["message_id"]]


async def test_deleted_attachment_is_not_downloadable_unless_sent_elsewhere(
        http: aiohttp.ClientSession, server: ServerProcess) -> None:
    alice, bob = await users(http, server, 2)

    async def upload(name: str) -> str:
        async with http.post(server.url + "/files", params={"name": name}, data=b"data",
                             headers=alice.headers()) as r:
            assert r.status == 200
            file_id: str = (await r.json())["file_id"]
            return file_id

    async def download_status(api: Api, file_id: str) -> int:
        async with http.get(server.url + f"/files/{file_id}", headers=api.headers()) as r:
            return r.status

    only = await upload("only.txt")
    twice = await upload("twice.txt")
    m1 = (await alice.call("messages.send", to=bob.username, attachments=[only, twice]))
    await alice.call("messages.send", chat_id="general", attachments=[twice])
    assert await download_status(bob, only) == 200
    await alice.call("messages.delete", message_id=m1["message"]["message_id"])
    assert await download_status(bob, only) == 404
    assert await download_status(bob, twice) == 200  # still in a live general message
    assert await download_status(alice, only) == 200  # the uploader keeps her file


async def test_search_words_scripts_membership_and_paging(
        http: aiohttp.ClientSession, server_factory: Factory, store_flags: tuple[str, ...]) -> None:
    server = server_factory(*store_flags)
    alice, bob, carol = await users(http, server, 3)
    tag = unique_name("w").lower()  # a word no other test's message has
    texts = [f"{tag} I like banana, really", f"Bananas and {tag.upper()} apples",
             f"Привет, МИР {tag}", f"мир во всём мире {tag}", f"{tag}-banana!split"]
    sent = [(await alice.call("messages.send", chat_id="general", text=t))["message"]
            for t in texts]
    group = (await alice.call("chats.create", title="t", members=[bob.username]))["chat"]
    secret = (await alice.call("messages.send", chat_id=group["chat_id"],
                               text=f"{tag} secret banana"))["message"]

    async def found(api: Api, query: str, **params: Any) -> list[str]:
        result = await api.call("messages.search", query=query, **params)
        return [m["text"] for m in result["messages"]]

    # Every word, case-insensitive, whole words, punctuation separates, newest first.
    assert await found(bob, f"BANANA {tag}") == [
        secret["text"], texts[4], texts[0]]
    assert await found(carol, f"banana {tag}") == [texts[4], texts[0]]  # not in the group
    assert await found(carol, f"мир {tag}") == [texts[3], texts[2]]
    assert await found(carol, f"привет {tag}") == [texts[2]]
    assert await found(carol, f"{tag} apples bananas") == [texts[1]]
    assert await found(carol, f"{tag} banan") == []
    assert await found(bob, f"{tag} secret", chat_id="general") == []
    assert await found(bob, f"{tag} secret", chat_id=group["chat_id"]) == [secret["text"]]
    # Paging with before and limit.
    page = await bob.call("messages.search", query=tag, limit=2)
    assert page["more"] is True and len(page["messages"]) == 2
    rest = await bob.call("messages.search", query=tag, limit=100,
                          before=page["messages"][-1]["message_id"])
    assert rest["more"] is False
    assert [m["message_id"] for m in page["messages"] + rest["messages"]] == [
        m["message_id"] for m in reversed([*sent, secret])]
    # Edits and deletes show at once; leaving a chat hides it.
    await alice.call("messages.edit", message_id=sent[0]["message_id"], text=f"{tag} cherry")
    await alice.call("messages.delete", message_id=sent[4]["message_id"])
    assert await found(carol, f"banana {tag}") == []
    assert await found(carol, f"cherry {tag}") == [f"{tag} cherry"]
    await bob.call("chats.leave", chat_id=group["chat_id"])
    assert await found(bob, f"{tag} secret") == []
    # Refusals.
    assert (await bob.error("messages.search", query="?! ,")).code == -32602
    assert (await bob.error("messages.search", query=tag,
                            chat_id=group["chat_id"])).code == 403
    assert (await bob.error("messages.search", query=tag, chat_id="g_nope")).code == 404
    assert (await bob.error("messages.search", query=tag,
                            before=secret["message_id"])).code == 404
    assert (await bob.error("messages.search", query=tag, limit=101)).code == -32602


async def test_sqlite_indexes_for_search_apart_from_sends(
        http: aiohttp.ClientSession, server: ServerProcess) -> None:
    """SQLite adds new messages to the search index in the background, many per write, not
    in each send: the index catches up with nobody searching; a search still finds every
    message acknowledged before it, an edit made before indexing, and messages that a kill -9
    left unindexed."""
    alice, bob = await users(http, server, 2)
    tag = unique_name("ix").lower()
    db = server.data_dir / "messenger.db"

    def seqs() -> tuple[int, int]:
        """(newest message's seq, seq the search index reaches) in the database file."""
        with sqlite3.connect(db) as conn:
            newest = conn.execute("SELECT MAX(seq) FROM messages").fetchone()[0]
            return newest, conn.execute("SELECT seq FROM search_index").fetchone()[0]

    async def caught_up() -> bool:
        newest, indexed = seqs()
        return bool(indexed >= newest)

    await alice.call("messages.send", chat_id="general", text=f"{tag} idle")
    await wait_until(caught_up)
    found = await bob.call("messages.search", query=f"{tag} idle")
    assert [m["text"] for m in found["messages"]] == [f"{tag} idle"]
    # Sent and edited at once, then searched: the edited words, never the first ones.
    sent = (await alice.call("messages.send", chat_id="general", text=f"{tag} before"))
    await alice.call("messages.edit", message_id=sent["message"]["message_id"],
                     text=f"{tag} after")
    assert (await bob.call("messages.search", query=f"{tag} before"))["messages"] == []
    found = await bob.call("messages.search", query=f"{tag} after")
    assert [m["text"] for m in found["messages"]] == [f"{tag} after"]
    # Many sends, then kill -9 (most of them not indexed yet): found after the restart.
    group = (await alice.call("chats.create", title="t", members=[bob.username]))["chat"]
    texts = [f"{tag} burst {i}" for i in range(50)]
    await asyncio.gather(*(alice.call("messages.send", chat_id=group["chat_id"], text=t)
                           for t in texts))
    server.kill()
    server.start()
    found = await bob.call("messages.search", query=f"{tag} burst", limit=100)
    assert sorted(m["text"] for m in found["messages"]) == sorted(texts)
    await wait_until(caught_up)


async def test_read_positions_receipts_and_unread(
        http: aiohttp.ClientSession, server_factory: Factory, store_flags: tuple[str, ...]) -> None:
    server = server_factory(*store_flags)
    alice, bob, carol = await users(http, server, 3)
    first = (await alice.call("messages.send", to=bob.username, text="one"))["message"]
    second = (await alice.call("messages.send", to=bob.username, text="two"))["message"]
    direct = first["chat_id"]

    async def chat_state(api: Api, chat_id: str) -> tuple[int, str | None]:
        status = await api.call("session.status")
        [chat] = [c for c in status["chats"] if c["chat_id"] == chat_id]
        return chat["unread"], chat["read_up_to"]

    assert await chat_state(bob, direct) == (2, None)
    assert await bob.call("chats.read", chat_id=direct, message_id=first["message_id"]) == {}
    assert await chat_state(bob, direct) == (1, first["message_id"])
    # Both get the read event: bob's clients, and alice as a receipt.
    expected = {"chat_id": direct, "username": bob.username, "message_id": first["message_id"]}
    for api in (alice, bob):
        assert [{k: e[k] for k in expected} for e in await events_of(api, "read")] == [expected]
    # Default: the newest; never backwards.
    await bob.call("chats.read", chat_id=direct)
    assert await chat_state(bob, direct) == (0, second["message_id"])
    await bob.call("chats.read", chat_id=direct, message_id=first["message_id"])
    assert await chat_state(bob, direct) == (0, second["message_id"])
    assert len(await events_of(alice, "read")) == 2
    # The stream marker still counts: general messages acknowledged by a poll are read.
    await carol.call("messages.send", chat_id="general", text="hey")
    assert (await chat_state(bob, "general"))[0] == 1
    body = await bob.poll(timeout=0, limit=1000)
    await bob.poll(cursor=body["cursor"], timeout=0)
    assert (await chat_state(bob, "general"))[0] == 0
    # A group read goes to the reader only.
    group = (await alice.call("chats.create", title="t", members=[bob.username]))["chat"]
    await alice.call("messages.send", chat_id=group["chat_id"], text="g")
    await bob.call("chats.read", chat_id=group["chat_id"])
    assert [e["chat_id"] for e in await events_of(alice, "read")] == [direct, direct]
    # Refusals.
    assert (await carol.error("chats.read", chat_id=direct)).code == 403
    assert (await bob.error("chats.read", chat_id="g_nope")).code == 404
    assert (await bob.error("chats.read", chat_id=direct, message_id="m_nope")).code == 404
    assert (await bob.error("chats.read", chat_id=group["chat_id"],
                            message_id=first["message_id"])).code == 404
    # An empty chat has nothing to read: fine, nothing happens.
    empty = (await carol.call("chats.create", title="empty"))["chat"]
    assert await carol.call("chats.read", chat_id=empty["chat_id"]) == {}
    assert await events_of(carol, "read") == []


async def test_client_msg_id_dedups_across_restarts(
        http: aiohttp.ClientSession, server: ServerProcess) -> None:
    alice, bob = await users(http, server, 2)
    first = await alice.call("messages.send", chat_id="general", text="once",
                             client_msg_id="retry-1")
    again = await alice.call("messages.send", chat_id="general", text="once",
                             client_msg_id="retry-1")
    assert again == first
    server.restart()
    after = await alice.call("messages.send", chat_id="general", text="once",
                             client_msg_id="retry-1")
    assert after == first
    texts = [e["message"]["text"] for e in await events_of(bob, "message")]
    assert texts.count("once") == 1
    # Another user's key is their own; a deleted message frees the key.
    mine = await bob.call("messages.send", chat_id="general", text="once",
                          client_msg_id="retry-1")
    assert mine["message"]["message_id"] != first["message"]["message_id"]
    await alice.call("messages.delete", message_id=first["message"]["message_id"])
    new = await alice.call("messages.send", chat_id="general", text="anew",
                           client_msg_id="retry-1")
    assert new["message"]["message_id"] != first["message"]["message_id"]
    assert (await alice.error("messages.send", chat_id="general", text="x",
                              client_msg_id="")).code == -32602
    assert (await alice.error("messages.send", chat_id="general", text="x",
                              client_msg_id="x" * 65)).code == -32602


async def test_client_msg_id_dedups_across_processes(
        http: aiohttp.ClientSession, server_factory: Factory, pg_url: str) -> None:
    args = ("--store", "postgres", "--database-url", pg_url)
    one, two = server_factory(*args), server_factory(*args)
    a1 = Api(http, one.url)
    await a1.connect(unique_name("px"))
    a2 = Api(http, two.url, a1.token)
    results = await asyncio.gather(*[
        api.call("messages.send", chat_id="general", text="x", client_msg_id="k")
        for api in (a1, a2, a1, a2)])
    assert len({r["message"]["message_id"] for r in results}) == 1
    history = await a2.call("messages.history", chat_id="general")
    assert [m["text"] for m in history["messages"]] == ["x"]


async def test_banned_author_may_delete_but_not_edit(
        http: aiohttp.ClientSession, server_factory: Factory) -> None:
    server = server_factory("--ban-threshold", "1", "--report-min-age", "0")
    alice, bob = await users(http, server, 2)
    one = (await alice.call("messages.send", chat_id="general", text="one"))["message"]
    two = (await alice.call("messages.send", chat_id="general", text="two"))["message"]
    assert (await bob.call("users.report", username=alice.username))["banned_until"]
    failure = await alice.error("messages.edit", message_id=one["message_id"], text="x")
    assert failure.code == 403 and failure.data["reason"] == "banned"
    assert await alice.call("messages.delete", message_id=two["message_id"]) == {}
    assert [m["text"] for m in await bob.all_messages("general")] == ["one"]


# -- clients: the library, the REPL and `messenger call` ------------------------------------
async def test_library_methods_and_retried_send(server: ServerProcess) -> None:
    async with MessengerClient(server.url) as alice, MessengerClient(server.url) as bob:
        await alice.connect(unique_name("la"), "pw")
        bob_name = unique_name("lb")
        await bob.connect(bob_name, "pw")
        sent = (await alice.send(to=bob_name, text="hello wrold"))["message"]
        edited = (await alice.edit(sent["message_id"], "hello world"))["message"]
        assert edited["edited_at"] is not None
        found = await bob.search("WORLD hello")
        assert [m["message_id"] for m in found["messages"]] == [sent["message_id"]]
        await bob.mark_read(sent["chat_id"])
        status = await bob.status()
        [chat] = [c for c in status["chats"] if c["chat_id"] == sent["chat_id"]]
        assert chat["read_up_to"] == sent["message_id"] and chat["unread"] == 0
        await alice.delete(sent["message_id"])
        assert (await bob.search("world"))["messages"] == []
        # The same client_msg_id twice: one message.
        one = await alice.send(chat_id="general", text="x", client_msg_id="same")
        two = await alice.send_params({"chat_id": "general", "text": "x",
                                       "client_msg_id": "same"})
        assert one == two

        # The server is down when the send starts and back a moment later: the library
        # repeats the send (same client_msg_id) and it arrives exactly once.
        def back_soon() -> None:
            time.sleep(0.3)
            server.start()

        server.stop()
        restarting = asyncio.get_running_loop().run_in_executor(None, back_soon)
        late = await alice.send(chat_id="general", text="through the outage")
        await restarting
        history = await bob.history("general")
        texts = [m["text"] for m in history["messages"]]
        assert texts.count("through the outage") == 1
        assert late["message"]["text"] == "through the outage"


async def test_repl_edit_delete_search_and_seen_receipts(server: ServerProcess) -> None:
    async with MessengerClient(server.url) as alice, MessengerClient(server.url) as bob:
        alice_name, bob_name = unique_name("ra"), unique_name("rb")
        await alice.connect(alice_name, "pw")
        await bob.connect(bob_name, "pw")
        alice_out: list[str] = []
        bob_out: list[str] = []
        a_repl, b_repl = Repl(alice, alice_name, alice_out.append), \
            Repl(bob, bob_name, bob_out.append)
        await a_repl.execute(f"/to {bob_name} see you at noon")
        sent = (await alice.history((await alice.status())["chats"][1]["chat_id"]))
        [msg] = sent["messages"]
        await a_repl.refresh_chats()
        await b_repl.refresh_chats()
        await b_repl.execute(f"/chat @{alice_name}")
        # bob's REPL shows the message in the chat he is in: it marks the chat read...
        for event in (await bob.poll(timeout=0))["events"]:
            await b_repl.on_event(event)
        await b_repl.reads.settle()
        status = await bob.status()
        [chat] = [c for c in status["chats"] if c["chat_id"] == msg["chat_id"]]
        assert chat["read_up_to"] == msg["message_id"]
        # ...and alice's REPL shows the receipt.
        for event in (await alice.poll(timeout=0))["events"]:
            await a_repl.on_event(event)
        assert any("seen by " + bob_name in line for line in alice_out), alice_out
        short = "m_" + msg["message_id"][-6:]
        await a_repl.execute(f"/edit {short} see you at one")
        assert any(line.startswith("* edited:") and "see you at one" in line
                   for line in alice_out), alice_out
        await b_repl.execute("/search ONE you")
        assert any("see you at one" in line for line in bob_out[-2:]), bob_out
        await a_repl.execute(f"/delete {short}")
        assert alice_out[-1].startswith("* deleted")
        for event in (await bob.poll(cursor=b_repl.cursor or 0, timeout=0))["events"]:
            await b_repl.on_event(event)
        assert any("a message was deleted" in line for line in bob_out), bob_out
        await b_repl.execute("/search one")
        assert bob_out[-1] == "* no message has all of these words"


def test_messenger_call_new_methods(server: ServerProcess, tmp_path: Path) -> None:
    def call(*args: str) -> Any:
        done = run_module("client", ["call", *args], env, ROOT, timeout=30)  # forked process
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), MESSENGER_SERVER=server.url)
    name = unique_name("cl")
    call("session.connect", f"username={name}", "password=pw")
    first = call("messages.send", "chat_id=general", "text=typo here", "client_msg_id=k1")
    again = call("messages.send", "chat_id=general", "text=typo here", "client_msg_id=k1")
    assert first == again
    mid = first["message"]["message_id"]
    assert call("messages.edit", f"message_id={mid}", "text=no typo")["message"]["edited_at"]
    found = call("messages.search", "query=TYPO")
    assert [m["message_id"] for m in found["messages"]] == [mid]
    assert call("chats.read", "chat_id=general") == {}
    assert call("messages.delete", f"message_id={mid}") == {}
    assert call("messages.search", "query=typo")["messages"] == []


def test_repl_in_a_terminal_edits_deletes_searches_and_shows_receipts(
        server: ServerProcess) -> None:
    me = unique_name("tm")
    Peer(server.url, name=me).call("session.disconnect")
    bob = Peer(server.url, "tb")
    term = Terminal(server.url, me)
    try:
        term.see("#general>")
        term.line(f"/to {bob.name} are you there, bob?")
        short = term.expect(re.escape(f"{me}: are you there, bob?") + r"  \((\S+)\)")[1]
        direct = bob.call("messages.history", chat_id=bob.call("session.status")["chats"][1][
            "chat_id"])["messages"][-1]
        assert short.startswith("m_") and direct["message_id"].endswith(short[2:])
        bob.call("chats.read", chat_id=direct["chat_id"])
        term.see(f"✓ seen by {bob.name}")
        term.line("/search BOB there")
        term.see("— 1 match, newest first —")
        term.line(f"/edit {short} are you still there?")
        term.see("* edited: ")
        term.see("are you still there?")
        assert bob.call("messages.history", chat_id=direct["chat_id"])["messages"][-1][
            "edited_at"]
        term.line(f"/delete {short}")
        term.see(f"* deleted {short}")
        assert bob.call("messages.history", chat_id=direct["chat_id"])["messages"] == []
        # A message bob sends to the chat I am in is marked read as it is shown.
        term.line(f"/chat @{bob.name}")
        term.see(f"@{bob.name}>")
        sent = bob.call("messages.send", to=me, text="yes, here")["message"]
        term.see("yes, here")
        deadline = time.monotonic() + 5
        receipts: list[str] = []
        while sent["message_id"] not in receipts:
            assert time.monotonic() < deadline, f"no receipt for {sent['message_id']}"
            time.sleep(0.1)
            receipts = [e["message_id"] for e in bob_events(bob)
                        if e["type"] == "read" and e["username"] == me]
        term.line("/quit")
        term.child.expect(pexpect.EOF, timeout=10)
    finally:
        term.close()


def bob_events(peer: Peer) -> list[Any]:
    """Every event in a peer's stream (nothing acknowledged)."""
    async def go() -> list[Any]:
        async with MessengerClient(peer.url, token=peer.token) as client:
            return list((await client.poll(timeout=0, limit=1000))["events"])
    return asyncio.run(go())
