"""events.poll inside a batch fits its events into what the batch's earlier answers left of
--max-response, instead of answering 413 (real server, real HTTP)."""
from __future__ import annotations

from typing import Callable

import aiohttp
import orjson

from tests.support import Api, ServerProcess, unique_name
from tests.test_open_network import huge_chat, post_raw, rpc


async def test_a_poll_in_a_batch_takes_what_is_left_of_the_budget(
        server_factory: Callable[..., ServerProcess], http: aiohttp.ClientSession) -> None:
    budget = 130_000  # five 24 KB events would fit alone; beside three in history, two do
    server = server_factory("--max-response", str(budget))
    api = Api(http, server.url)
    first = await api.connect(unique_name("bp"))
    chat_id = await huge_chat(api, 10)
    batch = [rpc("messages.history", {"chat_id": chat_id, "limit": 3}, 1),
             rpc("events.poll", {"cursor": first["cursor"], "timeout": 0, "limit": 1000}, 2)]
    status, raw = await post_raw(api, orjson.dumps(batch))
    assert status == 200 and len(raw) <= budget, (status, len(raw))
    history, polled = orjson.loads(raw)
    assert len(history["result"]["messages"]) == 3
    answer = polled["result"]  # not a 413: the poll took fewer events
    assert 0 < len(answer["events"]) < 5 and answer["more"] is True
    # What it left out comes with the next poll: nothing is lost.
    texts = sum(1 for e in answer["events"] if e["type"] == "message")
    cursor = answer["cursor"]
    while True:
        body = await api.poll(cursor, timeout=0, limit=1000)
        texts += sum(1 for e in body["events"] if e["type"] == "message")
        cursor = body["cursor"]
        if not body["more"]:
            break
    assert texts == 10
