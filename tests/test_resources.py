"""Bounded resources: parked polls per session and user, poll timeouts, idle sessions."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import aiohttp

from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess, unique_name

ServerFactory = Callable[..., ServerProcess]
InProcFactory = Callable[..., Awaitable[InProcessServer]]


async def timed_poll(api: Api, cursor: int, timeout: float) -> tuple[float, Any]:
    """A long poll; when it was answered (monotonic) and its body."""
    body = await api.poll(cursor, timeout=timeout, advance=False)
    return time.monotonic(), body


async def park(api: Api, cursor: int, timeout: float = 10) -> asyncio.Task[tuple[float, Any]]:
    """Start a long poll and give the server a moment to park it."""
    task = asyncio.create_task(timed_poll(api, cursor, timeout))
    await asyncio.sleep(0.25)
    assert not task.done(), "the poll was answered instead of parked"
    return task


async def poller_and_sender(http: aiohttp.ClientSession, url: str,
                            prefix: str) -> tuple[Api, Api, str, int]:
    """A connected user who polls (their name and current cursor) and another who sends."""
    user, sender = Api(http, url), Api(http, url)
    name = unique_name(prefix)
    await user.connect(name)
    await sender.connect(unique_name("snd"))
    return user, sender, name, (await user.poll(timeout=0))["cursor"]


async def test_parked_poll_caps(server_factory: ServerFactory,
                                http: aiohttp.ClientSession) -> None:
    server = server_factory("--polls-per-session", "2", "--polls-per-user", "3")
    user, sender, name, cursor = await poller_and_sender(http, server.url, "cap")

    # Per session: the third poll of one token pushes out the first, at once.
    p1 = await park(user, cursor)
    p2 = await park(user, cursor)
    pushed = time.monotonic()
    p3 = asyncio.create_task(timed_poll(user, cursor, 10))
    answered_at, body = await asyncio.wait_for(p1, 2)
    assert answered_at - pushed < 0.5
    assert body == {"events": [], "cursor": cursor, "more": False}
    await asyncio.sleep(0.3)
    assert not p2.done() and not p3.done()
    await sender.call("messages.send", to=name, text="for both")
    for task in (p2, p3):
        _, body = await asyncio.wait_for(task, 3)
        assert [e["message"]["text"] for e in body["events"]] == ["for both"]
    cursor = body["cursor"]

    # Per user: three sessions hold one poll each; a fourth poll pushes out the oldest.
    second, third = Api(http, server.url), Api(http, server.url)
    await second.connect(name)
    await third.connect(name)
    q1 = await park(user, cursor)
    q2 = await park(second, cursor)
    q3 = await park(third, cursor)
    pushed = time.monotonic()
    q4 = asyncio.create_task(timed_poll(second, cursor, 10))
    answered_at, body = await asyncio.wait_for(q1, 2)
    assert answered_at - pushed < 0.5 and body["events"] == [] and body["cursor"] == cursor
    await asyncio.sleep(0.3)
    assert not any(t.done() for t in (q2, q3, q4))
    await sender.call("messages.send", to=name, text="for the rest")
    for task in (q2, q3, q4):
        _, body = await asyncio.wait_for(task, 3)
        assert [e["message"]["text"] for e in body["events"]] == ["for the rest"]
    # Nothing is left parked: a new poll waits its own time and is not pushed out.
    started = time.monotonic()
    _, body = await timed_poll(user, body["cursor"], 0.5)
    assert body["events"] == [] and time.monotonic() - started >= 0.45


async def test_poll_timeout_is_cut_to_the_maximum(server_factory: ServerFactory,
                                                  http: aiohttp.ClientSession) -> None:
    server = server_factory("--poll-timeout-max", "1", "--poll-timeout", "3")
    user = Api(http, server.url)
    await user.connect(unique_name("max"))
    cursor = (await user.poll(timeout=0))["cursor"]
    for timeout in (30, 1e9):
        started = time.monotonic()
        body = await user.poll(cursor, timeout=timeout)
        took = time.monotonic() - started
        assert 0.8 <= took <= 1.2 and body["events"] == [] and body["cursor"] == cursor, took
    # The default wait (--poll-timeout 3) is cut to the maximum as well.
    started = time.monotonic()
    async with http.get(server.url + "/poll", params={"cursor": str(cursor)},
                        headers=user.headers()) as r:
        body = await r.json()
    took = time.monotonic() - started
    assert r.status == 200 and body["events"] == [] and 0.8 <= took <= 1.2, took


async def test_idle_sessions_expire_and_used_ones_do_not(inproc_factory: InProcFactory,
                                                         http: aiohttp.ClientSession) -> None:
    """(In-process with a FakeClock: a day's --session-idle, moved through instead of slept;
    the background purger's passes are run by the test.)"""
    day = 86400.0
    server = await inproc_factory("--session-idle", str(day))
    idle, busy = Api(http, server.url), Api(http, server.url)
    name = unique_name("idle")
    await idle.connect(name)
    await busy.connect(name)
    await idle.call("session.status")
    for _ in range(5):  # 1.25 days in steps of 0.25
        await server.advance(day / 4)
        await server.purge()
        status = await busy.call("session.status")  # a session in use stays
        assert status["username"] == name
    assert (await idle.error("session.status")).code == 401
    async with http.get(server.url + "/poll", params={"timeout": "0"},
                        headers=idle.headers()) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == 401
    assert len((await busy.call("session.status"))["sessions"]) == 1
    # The user and their password remain: logging in again makes a new session.
    await idle.connect(name)
    assert (await idle.call("session.status"))["username"] == name


async def test_a_poll_that_pushes_out_the_only_other_is_still_woken(
        inproc_factory: InProcFactory, http: aiohttp.ClientSession) -> None:
    server = await inproc_factory("--polls-per-session", "1", "--polls-per-user", "1")
    user, sender, name, cursor = await poller_and_sender(http, server.url, "one")
    first = await park(user, cursor)
    second = asyncio.create_task(timed_poll(user, cursor, 10))
    _, body = await asyncio.wait_for(first, 3)  # pushed out, empty
    assert body["events"] == []
    await asyncio.sleep(0.2)
    assert not second.done()
    await sender.call("messages.send", to=name, text="still heard")
    _, body = await asyncio.wait_for(second, 3)
    assert [e["message"]["text"] for e in body["events"]] == ["still heard"]

    # Ending the session answers its parked poll at once (401), and only that one.
    other = Api(http, server.url)
    await other.connect(name)
    cursor = body["cursor"]
    mine = await park(user, cursor)
    await other.call("session.disconnect")
    await asyncio.sleep(0.3)
    assert not mine.done()
    mine.cancel()
