"""Leaving a chat and coming back: no event of the old membership is lost to a client that
has not polled it yet, and none from the time in between is shown (both stores)."""
from __future__ import annotations

from typing import Callable

import aiohttp
import orjson

from store.sql_chats import PAST_MEMBERSHIPS
from tests.conftest import InProcFactory
from tests.helpers import all_events_since, connect_users, message_texts
from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess

Factory = Callable[..., ServerProcess]


def chat_actions(events: list[dict[str, object]], chat_id: str) -> list[tuple[object, object]]:
    """(action, username) of the `chat` events of one chat."""
    return [(e["action"], e["username"]) for e in events
            if e["type"] == "chat" and e["chat_id"] == chat_id]


async def test_a_quick_comeback_loses_nothing_and_shows_nothing_in_between(
        http: aiohttp.ClientSession, server_factory: Factory,
        store_flags: tuple[str, ...]) -> None:
    server = server_factory(*store_flags)
    owner, ann = await connect_users(http, server, 2)
    gid = (await owner.call("chats.create", title="club", members=[ann.username]))["chat"][
        "chat_id"]
    # Ann's phone is offline from here on; it has polled nothing since.
    phone = Api(http, server.url)
    phone_cursor = (await phone.connect(ann.username))["cursor"]

    await owner.call("messages.send", chat_id=gid, text="while ann is in")
    await ann.call("chats.leave", chat_id=gid)
    await owner.call("messages.send", chat_id=gid, text="after ann left")
    await owner.call("chats.invite", chat_id=gid, username=ann.username)
    await owner.call("messages.send", chat_id=gid, text="ann is back")

    # The phone comes back: it gets the old membership's message and the new one's, and
    # not what was said while Ann was out.
    seen = await all_events_since(phone, phone_cursor)
    assert message_texts(seen, gid) == ["while ann is in", "ann is back"]
    assert ("left", ann.username) in chat_actions(seen, gid)
    assert chat_actions(seen, gid)[-1][1] == ann.username  # back in (added/joined)
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # A client that reconnects without a cursor gets the same (nothing was acknowledged).
    laptop = Api(http, server.url)
    await laptop.connect(ann.username)
    fresh = await laptop.poll(None, timeout=0, advance=False)
    assert message_texts(fresh["events"], gid) == ["while ann is in", "ann is back"]

    # Leaving and coming back with nothing said in between.
    await ann.call("chats.leave", chat_id=gid)
    await owner.call("chats.invite", chat_id=gid, username=ann.username)
    await owner.call("messages.send", chat_id=gid, text="once more")
    again = await all_events_since(phone, phone_cursor)
    assert message_texts(again, gid) == ["while ann is in", "ann is back", "once more"]


async def test_messages_of_the_gap_stay_hidden_from_the_one_who_left(
        http: aiohttp.ClientSession, server_factory: Factory) -> None:
    server = server_factory()
    owner, ann = await connect_users(http, server, 2)
    gid = (await owner.call("chats.create", title="club", members=[ann.username]))["chat"][
        "chat_id"]
    start = ann.cursor
    assert start is not None
    await ann.call("chats.leave", chat_id=gid)
    for i in range(3):
        await owner.call("messages.send", chat_id=gid, text=f"secret {i}")
    await owner.call("chats.invite", chat_id=gid, username=ann.username)
    seen = await all_events_since(ann, start)
    assert not [t for t in message_texts(seen, gid) if t and t.startswith("secret")]
    # ... though the history, as for any newcomer, shows the chat's live messages.
    history = await ann.call("messages.history", chat_id=gid)
    assert [m["text"] for m in history["messages"]] == ["secret 0", "secret 1", "secret 2"]


async def test_past_memberships_are_forgotten_after_the_message_lifetime(
        http: aiohttp.ClientSession, inproc_factory: InProcFactory,
        store_flags: tuple[str, ...]) -> None:
    server = await inproc_factory("--message-ttl", "60", *store_flags)
    owner, ann = await connect_users(http, server, 2)
    gid = (await owner.call("chats.create", title="club", members=[ann.username]))["chat"][
        "chat_id"]
    await owner.call("messages.send", chat_id=gid, text="before")
    await ann.call("chats.leave", chat_id=gid)
    await owner.call("messages.send", chat_id=gid, text="between")
    await owner.call("chats.invite", chat_id=gid, username=ann.username)
    assert await past_chats(server) == [gid]
    await server.purge()
    assert await past_chats(server) == [gid]  # still within the message lifetime
    await server.advance(61)
    await server.purge()
    assert await past_chats(server) == []


async def past_chats(server: InProcessServer) -> list[str]:
    """The chats of the stored past memberships."""
    rows = await server.services.store.read(
        lambda tx: tx.db.fetchall("SELECT chat_id FROM past_members"))
    return [str(r[0]) for r in rows]


async def test_past_memberships_stay_few(http: aiohttp.ClientSession,
                                         inproc_factory: InProcFactory,
                                         store_flags: tuple[str, ...]) -> None:
    """Leaving and coming back in a loop keeps one past membership (nothing happened in
    between); with others writing in between, a user keeps at most PAST_MEMBERSHIPS."""
    server = await inproc_factory(*store_flags)
    owner, ann = await connect_users(http, server, 2)
    gid = (await owner.call("chats.create", title="club", members=[ann.username]))["chat"][
        "chat_id"]
    phone = Api(http, server.url)
    phone_cursor = (await phone.connect(ann.username))["cursor"]

    for i in range(5):
        await ann.call("messages.send", chat_id=gid, text=f"loop {i}")
        await ann.call("chats.leave", chat_id=gid)
        await owner.call("chats.invite", chat_id=gid, username=ann.username)
    assert len(await past_chats(server)) == 1
    seen = await all_events_since(phone, phone_cursor)
    assert message_texts(seen, gid) == [f"loop {i}" for i in range(5)]
    assert [a for a, _ in chat_actions(seen, gid)].count("left") == 5

    for i in range(PAST_MEMBERSHIPS + 2):
        await ann.call("messages.send", chat_id=gid, text=f"mine {i}")
        await ann.call("chats.leave", chat_id=gid)
        await owner.call("messages.send", chat_id=gid, text=f"not for ann {i}")
        await owner.call("chats.invite", chat_id=gid, username=ann.username)
    assert len(await past_chats(server)) == PAST_MEMBERSHIPS
    texts = message_texts(await all_events_since(phone, phone_cursor), gid)
    assert not [t for t in texts if t and t.startswith("not for ann")]
    assert texts[-PAST_MEMBERSHIPS:] == [f"mine {i}" for i in range(2, PAST_MEMBERSHIPS + 2)]
    # The store's one-user read (what SQLite polls use; PostgreSQL polls read many users at
    # once) gives the same stream.
    user = await server.services.store.read(lambda tx: tx.find_user(ann.username))
    assert user is not None
    direct = await server.services.store.read(
        lambda tx: tx.read_events(user.user_id, phone_cursor, 1000, server.now()))
    direct_texts = [orjson.loads(e.body)["message"]["text"] for e in direct
                    if orjson.loads(e.body)["type"] == "message"]
    assert direct_texts == texts
