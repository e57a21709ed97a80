"""Crash safety: mixed writes against a server SIGKILLed at random moments lose nothing acked."""
from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import aiohttp
import orjson

from tests.support import Api, RpcFailure, ServerProcess, unique_name

ROUNDS = 4
USERS = 6


def rfc3339(when: float) -> str:
    """An RFC 3339 UTC timestamp."""
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Acked:
    """Every write the server acknowledged, by kind."""

    messages: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # chat, text, author
    scheduled: dict[str, tuple[str, str]] = field(default_factory=dict)  # author, text
    chats: dict[str, str] = field(default_factory=dict)  # chat_id -> owner
    members: set[tuple[str, str]] = field(default_factory=set)  # (chat_id, username)
    reports: set[tuple[str, str]] = field(default_factory=set)  # (reporter, reported)


async def settle(call: Any) -> Any:
    """A call's result, or None when the server went away (or said no) before answering."""
    try:
        return await call
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
        return None
    except RpcFailure as failure:
        assert failure.code == 409, failure  # reporting someone twice; nothing else may fail
        return None


async def worker(me: Api, others: list[Api], acked: Acked, rng: random.Random,
                 stop: asyncio.Event, tag: str) -> None:
    """Random writes until the server dies."""
    i = 0
    group: str | None = None
    while not stop.is_set():
        i += 1
        text = f"{tag} {me.username} {i}"
        op = rng.choice(["general", "direct", "group", "schedule", "create", "invite", "report"])
        peer = rng.choice(others)
        if op == "general":
            r = await settle(me.call("messages.send", chat_id="general", text=text))
            if r:
                acked.messages[r["message"]["message_id"]] = ("general", text, me.username)
        elif op == "direct":
            r = await settle(me.call("messages.send", to=peer.username, text=text))
            if r:
                acked.messages[r["message"]["message_id"]] = (r["message"]["chat_id"], text,
                                                              me.username)
        elif op == "group" and group is not None:
            r = await settle(me.call("messages.send", chat_id=group, text=text))
            if r:
                acked.messages[r["message"]["message_id"]] = (group, text, me.username)
        elif op == "schedule":
            target: dict[str, str] = rng.choice([{"chat_id": "general"}, {"to": peer.username}])
            when = time.time() + rng.choice([0.3, 3600])
            r = await settle(me.call("messages.send", text=text, send_at=rfc3339(when),
                                     **target))
            if r:
                acked.scheduled[r["scheduled"]["scheduled_id"]] = (me.username, text)
        elif op in ("create", "group"):
            r = await settle(me.call("chats.create", title=text, members=[peer.username]))
            if r:
                group = r["chat"]["chat_id"]
                acked.chats[group] = me.username
                acked.members.update({(group, me.username), (group, peer.username)})
        elif op == "invite" and group is not None:
            r = await settle(me.call("chats.invite", chat_id=group, username=peer.username))
            if r is not None:
                acked.members.add((group, peer.username))
        elif op == "report" and (me.username, peer.username) not in acked.reports:
            r = await settle(me.call("users.report", username=peer.username, reason=text))
            if r:
                acked.reports.add((me.username, peer.username))


async def all_history(api: Api, chat_id: str) -> dict[str, str]:
    """message_id -> text of every live message of a chat."""
    return {m["message_id"]: m["text"] for m in await api.all_messages(chat_id)}


async def verify(users: dict[str, Api], acked: Acked) -> None:
    """Every acknowledged write is there after the restart."""
    # Read pending schedules first: one that fires later is then in the histories read below.
    pending = {name: {s["scheduled_id"] for s in (await api.call("messages.scheduled"))[
        "scheduled"]} for name, api in users.items()}
    readers = {chat: author for chat, _, author in acked.messages.values()}  # all members
    histories = {chat: await all_history(users[reader], chat)
                 for chat, reader in readers.items()}
    for message_id, (chat, text, _) in acked.messages.items():
        assert histories[chat].get(message_id) == text, f"lost message {message_id} in {chat}"

    statuses = {name: await api.call("session.status") for name, api in users.items()}
    for chat_id, owner in acked.chats.items():
        chats = {c["chat_id"]: c for c in statuses[owner]["chats"]}
        assert chat_id in chats, f"lost chat {chat_id}"
    for chat_id, username in acked.members:
        chats = {c["chat_id"]: c for c in statuses[username]["chats"]}
        assert chat_id in chats and username in chats[chat_id]["members"], (chat_id, username)

    delivered: dict[str, set[str]] = {}  # author -> every text in the chats they are in
    for scheduled_id, (author, text) in acked.scheduled.items():
        if scheduled_id in pending[author]:
            continue
        # Not pending any more: it must have been delivered (its text is in a chat).
        if author not in delivered:
            delivered[author] = set()
            for chat in (await users[author].call("session.status"))["chats"]:
                if chat["chat_id"] not in histories:
                    histories[chat["chat_id"]] = await all_history(users[author],
                                                                   chat["chat_id"])
                delivered[author].update(histories[chat["chat_id"]].values())
        assert text in delivered[author], f"scheduled {scheduled_id} neither pending nor sent"

    for reporter, reported in acked.reports:
        failure = await users[reporter].error("users.report", username=reported)
        assert failure.code == 409, (reporter, reported, failure)


def integrity(server: ServerProcess) -> None:
    """The SQLite file opens and passes PRAGMA integrity_check."""
    conn = sqlite3.connect(server.data_dir / "messenger.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


async def test_sigkill_at_random_moments_loses_no_acknowledged_write(
        server_factory: Callable[..., ServerProcess], http: aiohttp.ClientSession) -> None:
    seed = random.randrange(2 ** 32)
    rng = random.Random(seed)
    server = server_factory("--rate-limit", "100000", "--ban-threshold", "1000")
    apis = [Api(http, server.url) for _ in range(USERS)]
    for a in apis:
        await a.connect(unique_name("crash"))
    users = {a.username: a for a in apis}
    acked = Acked()
    started = time.monotonic()
    for round_ in range(ROUNDS):
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker(a, [b for b in apis if b is not a], acked, rng,
                                            stop, f"r{round_}")) for a in apis]
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        server.kill()
        stop.set()
        await asyncio.gather(*tasks)
        integrity(server)
        server.start()
        try:
            await verify(users, acked)  # tokens survive the crash; every acked write is there
        except AssertionError as exc:
            raise AssertionError(f"round {round_}, seed {seed}: {exc}") from exc
    assert len(acked.messages) > 20 and acked.chats and acked.reports and acked.scheduled, (
        seed, len(acked.messages), len(acked.chats), len(acked.reports), len(acked.scheduled))
    assert server.stop() == 0
    integrity(server)
    assert time.monotonic() - started < 25, f"seed {seed}"
