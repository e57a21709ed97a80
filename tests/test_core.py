"""The core messenger end to end: a real server process, real HTTP, a real SQLite file."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp
import orjson

from tests.support import Api, ServerProcess, unique_name


async def test_first_connect_registers_then_password_is_checked(api: Callable[[], Api]) -> None:
    name = unique_name("reg")
    first = await api().connect(name, "right")
    assert first["username"] == name and first["general_chat_id"] == "general"
    again = await api().connect(name, "right")
    assert again["token"] != first["token"]
    failure = await api().error("session.connect", username=name, password="wrong")
    assert failure.code == 401
    # usernames are unique regardless of case
    failure = await api().error("session.connect", username=name.upper(), password="other")
    assert failure.code == 401


async def test_bad_usernames_are_invalid_params(api: Callable[[], Api]) -> None:
    for bad in ("ab", "x" * 33, "has space", "semi;colon", ""):
        failure = await api().error("session.connect", username=bad, password="pw")
        assert failure.code == -32602 and failure.data["path"] == "/username", bad


async def test_calls_need_a_valid_token(api: Callable[[], Api]) -> None:
    anon = api()
    assert (await anon.error("session.status")).code == 401
    anon.token = "not-a-token"
    assert (await anon.error("messages.send", chat_id="general", text="x")).code == 401


async def test_newcomer_sees_last_20_general_messages(api: Callable[[], Api]) -> None:
    writers = [api() for _ in range(5)]
    for w in writers:
        await w.connect(unique_name("w"))
    for i in range(25):  # the general chat takes 20 an hour from one user
        await writers[i % 5].call("messages.send", chat_id="general", text=f"msg {i}")
    newcomer = await api().connect(unique_name("new"))
    texts = [m["text"] for m in newcomer["history"]]
    assert texts == [f"msg {i}" for i in range(5, 25)]


async def test_history_pages_backwards(api: Callable[[], Api]) -> None:
    a = api()
    await a.connect(unique_name("h"))
    for i in range(7):
        await a.call("messages.send", chat_id="general", text=f"p{i}")
    page = await a.call("messages.history", chat_id="general", limit=3)
    assert [m["text"] for m in page["messages"]] == ["p4", "p5", "p6"] and page["more"]
    older = await a.call("messages.history", chat_id="general", limit=3,
                         before=page["messages"][0]["message_id"])
    assert [m["text"] for m in older["messages"]] == ["p1", "p2", "p3"] and older["more"]
    oldest = await a.call("messages.history", chat_id="general", limit=3,
                          before=older["messages"][0]["message_id"])
    assert [m["text"] for m in oldest["messages"]] == ["p0"] and not oldest["more"]
    assert (await a.error("messages.history", chat_id="nope")).code == 404


async def test_general_and_direct_delivery_and_privacy(api: Callable[[], Api]) -> None:
    a, b, c = api(), api(), api()
    for client, prefix in ((a, "a"), (b, "b"), (c, "c")):
        await client.connect(unique_name(prefix))
        await client.poll()  # start from "now"
    await a.call("messages.send", chat_id="general", text="hello everyone")
    sent = await a.call("messages.send", to=b.username, text="just for you")
    direct_id = sent["message"]["chat_id"]
    b_events = await b.next_events()
    assert [e["message"]["text"] for e in b_events] == ["hello everyone", "just for you"]
    c_events = await c.next_events()
    assert [e["message"]["text"] for e in c_events] == ["hello everyone"]
    # The third user can't read the direct chat, nor post to it.
    assert (await c.error("messages.history", chat_id=direct_id)).code == 403
    assert (await c.error("messages.send", chat_id=direct_id, text="hi")).code == 403
    # b answers in the same direct chat, by name or by id.
    reply = await b.call("messages.send", to=a.username, text="thanks")
    assert reply["message"]["chat_id"] == direct_id
    history = await a.call("messages.history", chat_id=direct_id)
    assert [m["text"] for m in history["messages"]] == ["just for you", "thanks"]
    assert (await a.error("messages.send", to="nobody_here_123", text="x")).code == 404


async def test_reconnect_without_cursor_gets_exactly_the_unacknowledged(
        api: Callable[[], Api]) -> None:
    a, b = api(), api()
    await a.connect(unique_name("ra"))
    b_name = unique_name("rb")
    await b.connect(b_name)
    await b.poll()
    await a.call("messages.send", chat_id="general", text="one")
    first = await b.poll(b.cursor)
    assert [e["message"]["text"] for e in first["events"]] == ["one"]
    await b.poll(first["cursor"])  # acknowledges "one"
    await a.call("messages.send", chat_id="general", text="two")
    await a.call("messages.send", to=b_name, text="three (private)")
    # b's client goes away and comes back knowing nothing.
    fresh = api()
    result = await fresh.connect(b_name)
    assert result["cursor"] == first["cursor"]
    body = await fresh.poll()
    assert [e["message"]["text"] for e in body["events"]] == ["two", "three (private)"]
    # Not acknowledged yet: polling without a cursor returns them again.
    again = await fresh.poll()
    assert again["events"] == body["events"]
    status = await fresh.call("session.status")
    assert sum(ch["unread"] for ch in status["chats"]) == 2
    await fresh.poll(body["cursor"])
    status = await fresh.call("session.status")
    assert status["cursor"] == body["cursor"]
    assert sum(ch["unread"] for ch in status["chats"]) == 0
    assert (await fresh.poll())["events"] == []


async def test_repolling_a_cursor_returns_the_same_events_and_limit_pages(
        api: Callable[[], Api]) -> None:
    a = api()
    await a.connect(unique_name("rp"))
    start = (await a.poll())["cursor"]
    for i in range(5):
        await a.call("messages.send", chat_id="general", text=f"e{i}")
    one = await a.poll(start, limit=3)
    two = await a.poll(start, limit=3)
    assert one == two and len(one["events"]) == 3 and one["more"] is True
    rest = await a.poll(one["cursor"], limit=3)
    assert [e["message"]["text"] for e in rest["events"]] == ["e3", "e4"]
    assert rest["more"] is False


async def test_parked_poll_wakes_quickly_on_send(api: Callable[[], Api]) -> None:
    a, b = api(), api()
    await a.connect(unique_name("wa"))
    await b.connect(unique_name("wb"))
    cursor = (await b.poll())["cursor"]
    parked = asyncio.create_task(b.poll(cursor, timeout=10))
    await asyncio.sleep(0.3)  # let it park
    assert not parked.done()
    await a.call("messages.send", chat_id="general", text="wake up")
    sent_at = time.monotonic()
    body = await parked
    latency = time.monotonic() - sent_at
    assert [e["message"]["text"] for e in body["events"]] == ["wake up"]
    assert latency < 0.1, latency


async def test_empty_poll_waits_for_its_timeout_and_keeps_the_cursor(
        api: Callable[[], Api]) -> None:
    a = api()
    await a.connect(unique_name("to"))
    cursor = (await a.poll())["cursor"]
    started = time.monotonic()
    body = await a.poll(cursor, timeout=0.5)
    assert body == {"events": [], "cursor": cursor, "more": False}
    assert time.monotonic() - started >= 0.45


async def test_two_sessions_of_one_user_see_the_same_stream(api: Callable[[], Api]) -> None:
    name = unique_name("two")
    laptop, phone, other = api(), api(), api()
    await laptop.connect(name)
    await phone.connect(name)
    await other.connect(unique_name("oth"))
    cursor = (await phone.poll())["cursor"]
    await laptop.call("messages.send", chat_id="general", text="from laptop")
    await other.call("messages.send", to=name, text="to both")
    seen_phone = await phone.poll(cursor, timeout=2)
    seen_laptop = await laptop.poll(cursor, timeout=2)
    texts = [e["message"]["text"] for e in seen_phone["events"]]
    assert texts == ["from laptop", "to both"]
    assert seen_laptop["events"] == seen_phone["events"]
    status = await laptop.call("session.status")
    assert len(status["sessions"]) == 2
    assert sum(1 for s in status["sessions"] if s["current"]) == 1


async def test_disconnect_invalidates_only_that_token(api: Callable[[], Api],
                                                      http: aiohttp.ClientSession,
                                                      server: ServerProcess) -> None:
    name = unique_name("dc")
    one, two = api(), api()
    await one.connect(name)
    await two.connect(name)
    assert await one.call("session.disconnect") == {}
    assert (await one.error("session.status")).code == 401
    async with http.get(server.url + "/poll", headers=one.headers()) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == 401
    assert (await two.call("session.status"))["username"] == name


async def test_restart_keeps_users_sessions_messages_and_markers(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    a, b = Api(http, server.url), Api(http, server.url)
    await a.connect(unique_name("sa"), "pw-a")
    await b.connect(unique_name("sb"))
    start = (await b.poll())["cursor"]
    await a.call("messages.send", chat_id="general", text="before restart")
    dm = await a.call("messages.send", to=b.username, text="private before restart")
    acked = (await b.poll(start))["cursor"]
    await b.poll(acked)
    await a.call("messages.send", chat_id="general", text="unread before restart")
    server.restart()
    # Sessions survive: the old tokens still work.
    status = await b.call("session.status")
    assert status["cursor"] == acked
    assert {c["chat_id"] for c in status["chats"]} == {"general", dm["message"]["chat_id"]}
    body = await b.poll()
    assert [e["message"]["text"] for e in body["events"]] == ["unread before restart"]
    history = await b.call("messages.history", chat_id=dm["message"]["chat_id"])
    assert [m["text"] for m in history["messages"]] == ["private before restart"]
    assert (await Api(http, server.url).error("session.connect", username=a.username,
                                              password="wrong")).code == 401


async def test_sigkill_during_a_burst_loses_no_acknowledged_message(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    senders = [Api(http, server.url) for _ in range(8)]
    group_owner = senders[0]
    for s in senders:
        await s.connect(unique_name("k"))
    chat = (await group_owner.call("chats.create", title="burst",
                                   members=[s.username for s in senders[1:]]))["chat"]
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def burst(s: Api) -> None:
        i = 0
        while not stop.is_set():
            try:
                r = await s.call("messages.send", chat_id=chat["chat_id"], text=f"{s.username}-{i}")
            except (aiohttp.ClientError, AssertionError, orjson.JSONDecodeError):
                return
            acknowledged.append(r["message"]["message_id"])
            i += 1

    tasks = [asyncio.create_task(burst(s)) for s in senders]
    await asyncio.sleep(0.8)
    server.kill()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(acknowledged) > 20
    server.start()
    stored = {m["message_id"] for m in await group_owner.all_messages(chat["chat_id"])}
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged messages lost"


async def test_unread_counts_only_other_peoples_messages(api: Callable[[], Api]) -> None:
    a, b = api(), api()
    await a.connect(unique_name("ua"))
    await b.connect(unique_name("ub"))
    await a.poll((await a.poll())["cursor"])
    await a.call("messages.send", chat_id="general", text="mine")
    await b.call("messages.send", chat_id="general", text="theirs")
    general = next(c for c in (await a.call("session.status"))["chats"]
                   if c["chat_id"] == "general")
    assert general["unread"] == 1


async def test_a_direct_chat_left_comes_back_with_the_next_message(
        api: Callable[[], Api]) -> None:
    a, b = api(), api()
    await a.connect(unique_name("la"))
    await b.connect(unique_name("lb"))
    chat_id = (await a.call("messages.send", to=b.username, text="first"))["message"]["chat_id"]
    await b.call("chats.leave", chat_id=chat_id)
    cursor = (await b.poll(limit=1000))["cursor"]
    while True:
        body = await b.poll(cursor, limit=1000)
        if not body["events"]:
            break
        cursor = body["cursor"]
    await a.call("messages.send", to=b.username, text="by name")
    await a.call("messages.send", chat_id=chat_id, text="by id")
    events = await b.poll(cursor, timeout=2)
    assert [e["message"]["text"] for e in events["events"] if e["type"] == "message"] == [
        "by name", "by id"]
    assert chat_id in {c["chat_id"] for c in (await b.call("session.status"))["chats"]}
