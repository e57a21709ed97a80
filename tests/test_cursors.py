"""Cursor rules of the long poll: refused cursors, HEAD, disconnect, and events.poll."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import aiohttp
import pytest

import schemas
from client import MessengerClient
from rpc.docs import render_docs
from rpc.openrpc import build_openrpc
from methods.registry import build_registry
from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess, unique_name

Factory = Callable[..., ServerProcess]
InProcFactory = Callable[..., Awaitable[InProcessServer]]


def start(server_factory: Factory, backend: str, pg_url: str | None) -> ServerProcess:
    """One server on the backend a test is parametrized with."""
    if backend == "postgres":
        assert pg_url is not None
        return server_factory("--store", "postgres", "--database-url", pg_url)
    return server_factory()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_server(request: pytest.FixtureRequest, server_factory: Factory) -> ServerProcess:
    """A server on SQLite, then on PostgreSQL (skipped when none is reachable)."""
    if request.param == "postgres":
        pg_url: str = request.getfixturevalue("pg_url")
        return start(server_factory, "postgres", pg_url)
    return start(server_factory, "sqlite", None)


async def raw_poll(http: aiohttp.ClientSession, api: Api, method: str = "GET",
                   **query: Any) -> tuple[int, Any]:
    """GET (or HEAD) /poll with any query; HTTP status and decoded body (None if empty)."""
    params = {k: str(v) for k, v in query.items()}
    async with http.request(method, api.url + "/poll", params=params,
                            headers=api.headers()) as r:
        body = await r.read()
        return r.status, (await r.json() if body else None)


async def marker(api: Api) -> int:
    """The user's read marker."""
    cursor: int = (await api.call("session.status"))["cursor"]
    return cursor


async def two_users(url: str, http: aiohttp.ClientSession) -> tuple[Api, Api]:
    alice, bob = Api(http, url), Api(http, url)
    await alice.connect(unique_name("ca"))
    await bob.connect(unique_name("cb"))
    return alice, bob


async def test_cursor_beyond_the_newest_event_is_refused_and_moves_nothing(
        backend_server: ServerProcess, http: aiohttp.ClientSession) -> None:
    alice, bob = await two_users(backend_server.url, http)
    for i in range(3):
        await bob.call("messages.send", to=alice.username, text=f"m{i}")
    before = await marker(alice)
    newest = (await alice.poll(timeout=0, advance=False))["cursor"]
    assert newest > before
    for cursor in (newest + 1, newest + 1000, 2 ** 63 - 1, 10 ** 30):
        status, body = await raw_poll(http, alice, cursor=cursor, timeout=0)
        assert status == 400, (cursor, status, body)
        assert body["error"]["code"] == -32602
        assert "beyond" in body["error"]["data"]["detail"]
        _, answer = await alice.raw('{"jsonrpc":"2.0","id":1,"method":"events.poll",'
                                    f'"params":{{"cursor":{cursor},"timeout":0}}}}')
        assert answer["error"]["code"] == -32602, answer
        if cursor < 2 ** 63:
            assert answer["error"]["data"]["path"] == "/cursor"
    assert await marker(alice) == before
    # Nothing was acknowledged: a poll without a cursor still gets all three.
    texts = [e["message"]["text"] for e in (await alice.poll(timeout=0))["events"]]
    assert texts == ["m0", "m1", "m2"]
    # The newest seq itself is fine, and acknowledges.
    assert (await alice.poll(newest, timeout=0))["events"] == []
    assert await marker(alice) == newest


async def test_cursor_of_another_users_newer_event_is_accepted(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    """"Beyond the newest" is server-wide: a seq issued to anyone is not refused."""
    alice, bob = await two_users(server.url, http)
    carol = Api(http, server.url)
    await carol.connect(unique_name("cc"))
    await bob.call("messages.send", to=carol.username, text="not for alice")
    newest = (await carol.poll(timeout=0, advance=False))["cursor"]
    assert (await alice.poll(newest, timeout=0))["events"] == []


async def test_cursor_of_an_expired_and_purged_event_is_still_accepted(
        inproc_factory: InProcFactory, http: aiohttp.ClientSession) -> None:
    """(In-process with a FakeClock: an hour's TTL, moved through instead of slept.)"""
    server = await inproc_factory("--message-ttl", "3600")
    alice, bob = await two_users(server.url, http)
    await bob.call("messages.send", to=alice.username, text="short-lived")
    newest = (await alice.poll(timeout=0, advance=False))["cursor"]
    assert (await alice.poll(timeout=0, advance=False))["events"]
    await server.advance(3600.1)
    assert not (await bob.call("messages.history", chat_id="general"))["messages"]
    assert not (await alice.poll(timeout=0, advance=False))["events"]
    await server.purge()
    assert not (await alice.poll(timeout=0, advance=False))["events"]
    assert (await alice.poll(newest, timeout=0))["cursor"] == newest


async def test_head_poll_moves_nothing(server: ServerProcess,
                                       http: aiohttp.ClientSession) -> None:
    alice, bob = await two_users(server.url, http)
    await bob.call("messages.send", to=alice.username, text="unseen")
    newest = (await alice.poll(timeout=0, advance=False))["cursor"]
    before = await marker(alice)
    status, _ = await raw_poll(http, alice, "HEAD", cursor=newest, timeout=0)
    assert status == 200
    assert (await raw_poll(http, Api(http, server.url, "bad"), "HEAD"))[0] == 401
    assert await marker(alice) == before
    texts = [e["message"]["text"] for e in (await alice.poll(timeout=0))["events"]]
    assert texts == ["unseen"]


async def test_disconnect_answers_the_sessions_parked_polls_with_401(
        backend_server: ServerProcess, http: aiohttp.ClientSession) -> None:
    alice, bob = await two_users(backend_server.url, http)
    other = Api(http, backend_server.url)
    await other.connect(alice.username)  # a second session of alice's: not ended
    cursor = (await alice.poll(timeout=0))["cursor"]
    parked_get = asyncio.create_task(raw_poll(http, alice, cursor=cursor, timeout=20))
    parked_rpc = asyncio.create_task(alice.raw(
        '{"jsonrpc":"2.0","id":7,"method":"events.poll","params":{"timeout":20}}'))
    parked_other = asyncio.create_task(other.poll(cursor, timeout=20))
    await asyncio.sleep(0.5)
    assert not parked_get.done() and not parked_rpc.done()
    ended = time.monotonic()
    await alice.call("session.disconnect")
    status, body = await asyncio.wait_for(parked_get, 5)
    assert time.monotonic() - ended < 2
    assert status == 401 and body["error"]["code"] == 401
    status, answer = await asyncio.wait_for(parked_rpc, 5)
    assert answer["error"]["code"] == 401 and answer["id"] == 7
    # The other session keeps polling and gets what comes next.
    assert not parked_other.done()
    await bob.call("messages.send", to=alice.username, text="still here")
    events = (await asyncio.wait_for(parked_other, 5))["events"]
    assert [e["message"]["text"] for e in events] == ["still here"]
    status, _ = await raw_poll(http, alice, timeout=0)
    assert status == 401


async def test_disconnect_on_another_process_answers_parked_polls(
        server_factory: Factory, pg_url: str, http: aiohttp.ClientSession) -> None:
    one = start(server_factory, "postgres", pg_url)
    two = start(server_factory, "postgres", pg_url)
    alice = Api(http, one.url)
    await alice.connect(unique_name("cp"))
    alice_on_two = Api(http, two.url, alice.token)
    cursor = (await alice.poll(timeout=0))["cursor"]
    parked = asyncio.create_task(raw_poll(http, alice, cursor=cursor, timeout=20))
    await asyncio.sleep(0.5)
    ended = time.monotonic()
    await alice_on_two.call("session.disconnect")
    status, body = await asyncio.wait_for(parked, 5)
    assert time.monotonic() - ended < 2
    assert status == 401 and body["error"]["code"] == 401


async def test_events_poll_answers_like_get_poll(server: ServerProcess,
                                                 http: aiohttp.ClientSession) -> None:
    alice, bob = await two_users(server.url, http)
    chat = (await alice.call("chats.create", title="twins", members=[bob.username]))["chat"]
    await bob.call("messages.send", chat_id=chat["chat_id"], text="one")
    await bob.call("messages.send", to=alice.username, text="two")
    start_at = await marker(alice)
    by_get = await alice.poll(start_at, timeout=0, limit=2, advance=False)
    by_rpc = await alice.call("events.poll", cursor=start_at, timeout=0, limit=2)
    assert by_rpc == by_get and by_rpc["more"] is True
    rest = await alice.call("events.poll", cursor=by_rpc["cursor"], timeout=0)
    assert rest == await alice.poll(by_rpc["cursor"], timeout=0, advance=False)
    assert rest["more"] is False and rest["events"]
    # Both acknowledge the same way: the marker moved to the cursor sent.
    assert await marker(alice) == by_rpc["cursor"]
    # A long poll through JSON-RPC wakes on news.
    parked = asyncio.create_task(alice.call("events.poll", cursor=rest["cursor"], timeout=10))
    await asyncio.sleep(0.3)
    await bob.call("messages.send", to=alice.username, text="three")
    woke = await asyncio.wait_for(parked, 5)
    assert [e["message"]["text"] for e in woke["events"]] == ["three"]


@pytest.mark.parametrize("query", [
    {"limit": 0}, {"limit": 1001}, {"limit": "abc"}, {"limit": 1.5}, {"cursor": -1},
    {"cursor": "x"}, {"cursor": 1.5}, {"timeout": -1}, {"timeout": "nan"},
    {"cursor": "inf"}, {"timeout": "-inf"}, {"cursor": "1" * 200},
])
async def test_bad_poll_query_is_400_with_the_params_error(
        server: ServerProcess, http: aiohttp.ClientSession, query: dict[str, Any]) -> None:
    alice = Api(http, server.url)
    await alice.connect(unique_name("cq"))
    status, body = await raw_poll(http, alice, **query)
    assert status == 400, body
    assert body["error"]["code"] == -32602
    assert body["error"]["data"]["path"] == "/" + next(iter(query))
    failure = await alice.error("events.poll", **{
        k: v for k, v in query.items() if not isinstance(v, str)} or {"cursor": "x"})
    assert failure.code == -32602


async def test_poll_query_numbers_and_unknown_keys(server: ServerProcess,
                                                   http: aiohttp.ClientSession) -> None:
    alice = Api(http, server.url)
    await alice.connect(unique_name("cn"))
    status, body = await raw_poll(http, alice, timeout="0.0", limit="1000", cache_buster="x")
    assert status == 200 and body["more"] is False
    status, body = await raw_poll(http, alice, timeout="1e-3", cursor=body["cursor"])
    assert status == 200


def test_events_poll_result_reaches_every_event_type() -> None:
    doc = build_openrpc(build_registry())
    components = doc["components"]["schemas"]
    method = next(m for m in doc["methods"] if m["name"] == "events.poll")

    def target(schema: dict[str, Any]) -> str:
        ref = schema.get("$ref") or schema["allOf"][0]["$ref"]
        name: str = ref.rpartition("/")[2]
        return name

    answer = components[target(method["result"]["schema"])]
    item = target(answer["properties"]["events"]["items"])
    reached = {target(alt) for alt in components[item]["oneOf"]}
    assert reached == {f"event.{t}" for t in schemas.event_schemas()}
    assert {p["name"] for p in method["params"]} == {"cursor", "timeout", "limit"}


def test_docs_show_poll_query_and_answer_from_the_schemas() -> None:
    page = render_docs(build_openrpc(build_registry()))
    poll = page[page.index("id=\"poll\""):page.index("id=\"files\"")]
    limit = schemas.defs()["$defs"]["poll_limit"]
    assert f"{limit['minimum']}–{limit['maximum']}" in poll
    assert limit["description"] in poll
    assert schemas.defs()["$defs"]["poll_answer"]["properties"]["more"]["description"] in poll


async def test_client_library_events_poll(server: ServerProcess,
                                          http: aiohttp.ClientSession) -> None:
    alice, bob = await two_users(server.url, http)
    await bob.call("messages.send", to=alice.username, text="via the library")
    async with MessengerClient(server.url, token=alice.token) as client:
        by_rpc = await client.events_poll(timeout=0)
        assert by_rpc == await client.poll(timeout=0)
        assert [e["message"]["text"] for e in by_rpc["events"]
                if e["type"] == "message"] == ["via the library"]
        parked = asyncio.create_task(client.events_poll(by_rpc["cursor"], timeout=5))
        await asyncio.sleep(0.3)
        await bob.call("messages.send", to=alice.username, text="woken")
        woke = await asyncio.wait_for(parked, 5)
        assert [e["message"]["text"] for e in woke["events"]
                if e["type"] == "message"] == ["woken"]
