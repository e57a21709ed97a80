"""Several server processes on one PostgreSQL database."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import aiohttp

from tests.support import Api, ServerProcess, unique_name


def two_servers(server_factory: Callable[..., ServerProcess], pg_url: str,
                *flags: str) -> tuple[ServerProcess, ServerProcess]:
    args = ("--store", "postgres", "--database-url", pg_url, *flags)
    return server_factory(*args), server_factory(*args)


async def test_message_through_one_process_wakes_polls_on_the_other(
        server_factory: Callable[..., ServerProcess], pg_url: str,
        http: aiohttp.ClientSession) -> None:
    one, two = two_servers(server_factory, pg_url)
    alice, bob = Api(http, one.url), Api(http, two.url)
    await alice.connect(unique_name("xa"))
    await bob.connect(unique_name("xb"))
    cursor = (await bob.poll())["cursor"]
    parked = asyncio.create_task(bob.poll(cursor, timeout=10))
    await asyncio.sleep(0.3)
    await alice.call("messages.send", to=bob.username, text="across processes")
    sent = time.monotonic()
    body = await parked
    assert time.monotonic() - sent < 0.1
    assert [e["message"]["text"] for e in body["events"]] == ["across processes"]
    # Sends made at once share a write batch, which sends NOTIFY with its COMMIT.
    parked = asyncio.create_task(bob.poll(body["cursor"], timeout=10))
    await asyncio.sleep(0.3)
    texts = [f"at once {i} 'quoted' \\ {'é' * i}" for i in range(8)]
    await asyncio.gather(*[alice.call("messages.send", to=bob.username, text=t)
                           for t in texts])
    sent = time.monotonic()
    body = await parked
    assert time.monotonic() - sent < 0.5
    got = [e["message"]["text"] for e in body["events"]]
    while len(got) < len(texts):
        body = await bob.poll(body["cursor"], timeout=2)
        assert body["events"]
        got += [e["message"]["text"] for e in body["events"]]
    assert sorted(got) == sorted(texts)
    # Any process serves any request: the token from process one works on process two.
    alice_on_two = Api(http, two.url, alice.token)
    assert (await alice_on_two.call("session.status"))["username"] == alice.username


async def test_no_event_skipped_under_concurrent_writers_on_both_processes(
        server_factory: Callable[..., ServerProcess], pg_url: str,
        http: aiohttp.ClientSession) -> None:
    one, two = two_servers(server_factory, pg_url)
    owner = Api(http, one.url)
    await owner.connect(unique_name("own"))
    writers = [Api(http, (one if i % 2 else two).url) for i in range(10)]
    for w in writers:
        await w.connect(unique_name("cw"))
    chat = (await owner.call("chats.create", title="load",
                             members=[w.username for w in writers]))["chat"]
    readers = [Api(http, one.url, owner.token), Api(http, two.url, owner.token)]
    start = (await readers[0].poll())["cursor"]
    acknowledged: set[str] = set()
    done = asyncio.Event()

    async def write(w: Api) -> None:
        for i in range(15):
            r = await w.call("messages.send", chat_id=chat["chat_id"], text=f"{w.username}:{i}")
            acknowledged.add(r["message"]["message_id"])

    async def read(reader: Api) -> list[int]:
        # Poll continuously while writers run; a cursor may never jump over an event.
        seen: list[int] = []
        ids: set[str] = set()
        cursor = start
        while True:
            body = await reader.poll(cursor, timeout=0.5, advance=False)
            for e in body["events"]:
                seen.append(e["seq"])
                if e["type"] == "message":
                    ids.add(e["message"]["message_id"])
            cursor = body["cursor"]
            if done.is_set() and acknowledged <= ids:
                return seen
            if done.is_set() and not body["events"]:
                raise AssertionError(f"missing {len(acknowledged - ids)} messages")

    readers_running = [asyncio.create_task(read(r)) for r in readers]
    await asyncio.gather(*[write(w) for w in writers])
    done.set()
    seqs = await asyncio.wait_for(asyncio.gather(*readers_running), 30)
    assert len(acknowledged) == 150
    for seen in seqs:
        assert seen == sorted(set(seen))  # strictly increasing, no duplicates
    assert seqs[0] == seqs[1]  # both processes give the same stream to the same cursor


async def test_scheduled_messages_fire_exactly_once_across_processes(
        server_factory: Callable[..., ServerProcess], pg_url: str,
        http: aiohttp.ClientSession) -> None:
    one, two = two_servers(server_factory, pg_url)
    a, b = Api(http, one.url), Api(http, two.url)
    await a.connect(unique_name("sa"))
    await b.connect(unique_name("sb"))
    due = (datetime.now(timezone.utc) + timedelta(seconds=1.5)).isoformat()
    for i in range(10):
        await (a if i % 2 else Api(http, two.url, a.token)).call(
            "messages.send", to=b.username, text=f"sched {i}", send_at=due)
    await asyncio.sleep(3)
    history = await b.call("messages.history", chat_id=(await b.call("session.status"))
                           ["chats"][-1]["chat_id"], limit=100)
    texts = sorted(m["text"] for m in history["messages"])
    assert texts == sorted(f"sched {i}" for i in range(10))
    assert (await a.call("messages.scheduled"))["scheduled"] == []


async def test_quota_and_login_throttle_hold_across_processes(
        server_factory: Callable[..., ServerProcess], pg_url: str,
        http: aiohttp.ClientSession) -> None:
    one, two = two_servers(server_factory, pg_url, "--rate-limit", "4",
                           "--login-max-failures", "3")
    name = unique_name("qa")
    a1 = Api(http, one.url)
    await a1.connect(name)
    a2 = Api(http, two.url, a1.token)
    for i in range(4):
        await (a1 if i % 2 else a2).call("messages.send", chat_id="general", text=f"q{i}")
    assert (await a1.error("messages.send", chat_id="general", text="x")).code == 429
    assert (await a2.error("messages.send", chat_id="general", text="x")).code == 429
    victim = unique_name("vi")
    await Api(http, one.url).connect(victim, "right")
    for i in range(3):
        server = one if i % 2 else two
        assert (await Api(http, server.url).error(
            "session.connect", username=victim, password="wrong")).code == 401
    failure = await Api(http, one.url).error("session.connect", username=victim,
                                             password="right")
    assert failure.code == 429 and failure.data["retry_after"] >= 1
