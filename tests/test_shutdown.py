"""Graceful shutdown: SIGTERM answers parked polls, lets calls in flight finish, exits 0."""
from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import orjson

from tests.support import Api, ServerProcess, unique_name, wait_until


async def history_ids(api: Api, chat_id: str) -> set[str]:
    """Every live message id of a chat."""
    return {m["message_id"] for m in await api.all_messages(chat_id)}


async def test_sigterm_answers_polls_finishes_calls_and_exits_0(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    listeners = [Api(http, server.url) for _ in range(4)]
    for a in listeners:
        await a.connect(unique_name("park"))
    # Senders on keep-alive connections as well as fresh ones.
    async with aiohttp.ClientSession() as keep_alive:
        senders = [Api(keep_alive if i % 2 else http, server.url) for i in range(6)]
        for s in senders:
            await s.connect(unique_name("snd"))
        chat = (await senders[0].call("chats.create", title="shutdown",
                                      members=[s.username for s in senders[1:]]))["chat"]
        chat_id = chat["chat_id"]
        cursors = [(await a.poll(timeout=0))["cursor"] for a in listeners]

        async def parked(a: Api, cursor: int) -> tuple[float, int, Any]:
            async with http.get(server.url + "/poll", headers=a.headers(),
                                params={"cursor": str(cursor), "timeout": "30"}) as r:
                return time.monotonic(), r.status, await r.json()

        polls = [asyncio.create_task(parked(a, c)) for a, c in zip(listeners, cursors)]
        acknowledged: list[str] = []
        refused: list[str] = []
        stop = asyncio.Event()

        async def send_loop(s: Api) -> None:
            i = 0
            while not stop.is_set():
                body = orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "messages.send",
                                     "params": {"chat_id": chat_id, "text": f"{s.username} {i}"}})
                try:
                    status, answer = await s.raw(body)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    return  # the server stopped accepting: never acknowledged
                if status == 200 and "result" in answer:
                    acknowledged.append(answer["result"]["message"]["message_id"])
                else:
                    refused.append(f"{status} {answer}")
                i += 1

        await asyncio.sleep(0.3)
        assert not any(p.done() for p in polls)
        loops = [asyncio.create_task(send_loop(s)) for s in senders]

        async def sending() -> bool:  # sends in flight when the signal comes
            return len(acknowledged) > 5

        await wait_until(sending, timeout=10)  # not a fixed sleep: the machine may be busy
        signalled = time.monotonic()
        code = await asyncio.to_thread(server.stop, signal.SIGTERM, 10)
        exited = time.monotonic() - signalled
        stop.set()
        await asyncio.gather(*loops)

    assert code == 0, server.log()[-3000:]
    assert exited < 3.0, (exited, server.log()[-3000:])  # 5 s: something held the shutdown
    for poll in polls:
        answered, status, body = await poll
        assert status == 200 and body["events"] == [] and body["more"] is False
        assert answered - signalled < 1.0
    assert refused == [], refused[:3]
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]

    server.start()
    stored = await history_ids(senders[0], chat_id)
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged sends lost"
    # The restarted server works as before.
    for a, cursor in zip(listeners, cursors):
        assert (await a.poll(cursor, timeout=0))["cursor"] == cursor


async def test_an_idle_keep_alive_connection_does_not_hold_the_shutdown(
        server: ServerProcess) -> None:
    """A client that keeps its connection open between requests (as browsers and
    connection pools do) does not make SIGTERM wait for the shutdown timeout (5 s)."""
    async with aiohttp.ClientSession() as keep_alive:  # its connection stays open, idle
        api = Api(keep_alive, server.url)
        await api.connect(unique_name("idle"))
        assert (await api.call("session.status"))["username"] == api.username
        signalled = time.monotonic()
        code = await asyncio.to_thread(server.stop, signal.SIGTERM, 10)
        exited = time.monotonic() - signalled
    assert code == 0, server.log()[-3000:]
    print(f"exited in {exited:.2f} s")
    assert exited < 2.0, exited
