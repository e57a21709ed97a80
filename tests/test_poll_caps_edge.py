"""Parked-poll caps at their smallest: the poll that pushes out the only other one of its
user is itself parked and woken like any other (in-process server, real HTTP)."""
from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import InProcFactory
from tests.support import Api, unique_name
from tests.test_resources import park, timed_poll


async def test_a_poll_that_pushes_out_the_only_other_is_still_woken(
        inproc_factory: InProcFactory, http: aiohttp.ClientSession) -> None:
    server = await inproc_factory("--polls-per-session", "1", "--polls-per-user", "1")
    user, sender = Api(http, server.url), Api(http, server.url)
    name = unique_name("one")
    await user.connect(name)
    await sender.connect(unique_name("snd"))
    cursor = (await user.poll(timeout=0))["cursor"]
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
