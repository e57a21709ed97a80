"""Bounded input everywhere: body, batch, text, names, titles, nesting; odd text kept exactly."""
from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.support import Api, ServerProcess, running_server, unique_name

MAX_BODY = 2000
MAX_BATCH = 5
MAX_TEXT = 50


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small body, batch and text limits."""
    with running_server(
            tmp_path_factory.mktemp("limits") / "data",
            "--max-body", str(MAX_BODY), "--max-batch", str(MAX_BATCH),
            "--max-text", str(MAX_TEXT)) as proc:
        yield proc


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with default limits (1 MiB bodies)."""
    with running_server(
            tmp_path_factory.mktemp("roomy") / "data") as proc:
        yield proc


@pytest.fixture
async def user(http: aiohttp.ClientSession, limited: ServerProcess) -> Api:
    """A logged-in user of the limited server."""
    a = Api(http, limited.url)
    await a.connect(unique_name("lim"))
    return a


async def post(http: aiohttp.ClientSession, url: str, body: bytes | AsyncIterator[bytes],
               token: str | None = None) -> tuple[int, object, float]:
    """POST /rpc; status, decoded body and seconds taken."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.monotonic()
    async with http.post(url + "/rpc", data=body, headers=headers) as r:
        content = await r.read()
        return r.status, orjson.loads(content) if content else None, time.monotonic() - started


def soon() -> str:
    """An RFC 3339 time an hour from now."""
    return datetime.fromtimestamp(time.time() + 3600, timezone.utc).isoformat()


def request(method: str, params: object, req_id: object = 1) -> dict[str, object]:
    """One JSON-RPC request object."""
    return {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}


# -- request size ------------------------------------------------------------------------------

async def test_body_over_max_body_is_413_fast_and_the_server_keeps_serving(
        http: aiohttp.ClientSession, limited: ServerProcess, user: Api) -> None:
    text = "x" * 40
    padding = b" " * (MAX_BODY * 3)
    big = orjson.dumps(request("messages.send", {"chat_id": "general", "text": text}))[:-1]
    status, answer, took = await post(http, limited.url, big + padding + b"}", user.token)
    assert status == 413 and took < 1.0, (status, answer, took)
    assert isinstance(answer, dict)
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    assert answer["error"]["code"] == 413 and answer["error"]["data"]["max_body"] == MAX_BODY

    # Without a Content-Length (chunked), the server stops reading at the limit too.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * 1000

    status, answer, took = await post(http, limited.url, chunks(), user.token)
    assert status == 413 and took < 1.0, (status, answer, took)
    assert isinstance(answer, dict) and answer["error"]["code"] == 413

    # A body of exactly the limit is read and answered; nothing was stored by the big one.
    body = orjson.dumps(request("messages.send", {"chat_id": "general", "text": text}))
    exact = body[:-1] + b" " * (MAX_BODY - len(body)) + b"}"
    assert len(exact) == MAX_BODY
    status, answer, _ = await post(http, limited.url, exact, user.token)
    assert status == 200 and isinstance(answer, dict) and "result" in answer, answer
    history = await user.call("messages.history", chat_id="general")
    mine = [m for m in history["messages"] if m["author"] == user.username]
    assert [m["text"] for m in mine] == [text]


async def test_batch_over_max_batch_is_413(http: aiohttp.ClientSession, limited: ServerProcess,
                                           user: Api) -> None:
    batch = [request("session.status", {}, i) for i in range(MAX_BATCH + 1)]
    status, answer, _ = await post(http, limited.url, orjson.dumps(batch), user.token)
    assert status == 200 and isinstance(answer, dict), answer
    assert answer["error"]["code"] == 413 and answer["id"] is None
    assert answer["error"]["data"]["max_batch"] == MAX_BATCH
    # A whole batch is refused: none of its sends happened.
    sends = [request("messages.send", {"chat_id": "general", "text": f"b{i}"}, i)
             for i in range(MAX_BATCH + 1)]
    status, answer, _ = await post(http, limited.url, orjson.dumps(sends), user.token)
    assert isinstance(answer, dict) and answer["error"]["code"] == 413
    history = await user.call("messages.history", chat_id="general")
    assert not [m for m in history["messages"] if m["author"] == user.username]
    # At the limit, every request is answered.
    status, answer, _ = await post(http, limited.url, orjson.dumps(batch[:MAX_BATCH]),
                                   user.token)
    assert status == 200 and isinstance(answer, list)
    assert sorted(r["id"] for r in answer) == list(range(MAX_BATCH))
    assert all("result" in r for r in answer)


async def test_text_over_max_text_is_413_counted_in_characters(user: Api) -> None:
    failure = await user.error("messages.send", chat_id="general", text="y" * (MAX_TEXT + 1))
    assert failure.code == 413 and failure.data["max_text"] == MAX_TEXT
    # Characters, not bytes or UTF-16 units: 50 emoji (200 bytes) fit.
    emoji = "\U0001F600" * MAX_TEXT
    sent = await user.call("messages.send", chat_id="general", text=emoji)
    assert sent["message"]["text"] == emoji
    # Scheduling checks the same rule up front.
    failure = await user.error("messages.send", chat_id="general", text="z" * (MAX_TEXT + 1),
                               send_at=soon())
    assert failure.code == 413
    assert (await user.call("messages.scheduled"))["scheduled"] == []


# -- names and titles --------------------------------------------------------------------------

async def test_username_rules(http: aiohttp.ClientSession, limited: ServerProcess) -> None:
    def anon() -> Api:
        return Api(http, limited.url)

    bad = ["ab", "x" * 33, "has space", "dash-ed", "dot.ted", "ålice", "ali\u0301ce",
           "bob\n", "\nbob", "bob\r\n", "bo\tb", "b\x00ob", "\U0001F600ab", "", "abc\u200b"]
    for name in bad:
        failure = await anon().error("session.connect", username=name, password="pw")
        assert failure.code == -32602 and failure.data["path"] == "/username", repr(name)
    # The boundaries are allowed.
    tag = unique_name("")[:6]
    for name in (f"a{tag}"[:3], ("Z_9" + tag) * 8):
        name = name[:32]
        result = await anon().connect(name)
        assert result["username"] == name
    # Unique regardless of case; the registered spelling is kept.
    name = unique_name("CaSe")
    await anon().connect(name, "pw-1")
    assert (await anon().error("session.connect", username=name.lower(),
                               password="pw-2")).code == 401
    again = await anon().connect(name.upper(), "pw-1")
    assert again["username"] == name
    # Usernames are checked wherever they are passed.
    a = anon()
    await a.connect(unique_name("nm"))
    cases: list[tuple[str, dict[str, Any]]] = [
        ("messages.send", {"to": "bob\n", "text": "hi"}),
        ("users.report", {"username": "x"}),
        ("chats.create", {"title": "t", "members": ["ok_name", "no way"]})]
    for method, params in cases:
        failure = await a.error(method, **params)
        assert failure.code == -32602, (method, failure)
        assert failure.data["path"] in ("/to", "/username", "/members/1"), failure.data


async def test_chat_title_rules(user: Api) -> None:
    failure = await user.error("chats.create", title="t" * 101)
    assert failure.code == -32602 and failure.data["path"] == "/title"
    failure = await user.error("chats.create", title=" \t ")
    assert failure.code == -32602 and failure.data["path"] == "/title"
    chat = (await user.call("chats.create", title="T" * 100))["chat"]
    assert chat["title"] == "T" * 100
    status = await user.call("session.status")
    assert sum(1 for c in status["chats"] if c["kind"] == "group") == 1


# -- structure ---------------------------------------------------------------------------------

def nested(depth: int) -> bytes:
    """A request whose params hold arrays so that the whole body is `depth` levels deep."""
    inner = b"[" * (depth - 2) + b"]" * (depth - 2)
    return (b'{"jsonrpc":"2.0","id":7,"method":"session.status","params":{"x":' + inner
            + b'}}')


async def test_nesting_limit(http: aiohttp.ClientSession, roomy: ServerProcess) -> None:
    status, answer, _ = await post(http, roomy.url, nested(33))
    assert status == 200 and isinstance(answer, dict)
    assert answer["error"]["code"] == -32600 and answer["id"] is None, answer
    # At 32 levels the envelope is read: the call is answered (401, it needs a token).
    status, answer, _ = await post(http, roomy.url, nested(32))
    assert isinstance(answer, dict) and answer["error"]["code"] == 401 and answer["id"] == 7
    # Deep nesting in a batch is refused as a whole.
    batch = b"[" + nested(32) + b"]"
    status, answer, _ = await post(http, roomy.url, batch)
    assert isinstance(answer, dict) and answer["error"]["code"] == -32600


@pytest.mark.parametrize("body", [
    b"[" * 100000,
    b"[" * 100000 + b"]" * 100000,
    b"{\"a\":" * 100000,
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":' + b"[" * 200000,
    b"[" * 400 + b"]" * 400,
], ids=["open-arrays", "closed-arrays", "open-objects", "deep-params", "depth-400"])
async def test_extremely_deep_nesting_is_refused_not_a_crash(
        http: aiohttp.ClientSession, roomy: ServerProcess, body: bytes) -> None:
    status, answer, took = await post(http, roomy.url, body)
    assert status == 200 and isinstance(answer, dict), (status, answer)
    assert answer["error"]["code"] in (-32700, -32600), answer
    assert took < 2.0
    assert "Traceback" not in orjson.dumps(answer).decode()
    # still serving
    status, answer, _ = await post(http, roomy.url, orjson.dumps(request("rpc.discover", {})))
    assert status == 200 and isinstance(answer, dict) and "result" in answer


async def test_wide_arrays_in_params_are_answered_quickly(
        http: aiohttp.ClientSession, roomy: ServerProcess) -> None:
    """Huge arrays of wrong items must not make validation quadratic (uniqueItems)."""
    a = Api(http, roomy.url)
    await a.connect(unique_name("wide"))
    for items in ([{"k": i} for i in range(60000)], [[i] for i in range(60000)],
                  [{"a": [i, {"b": None}]} for i in range(20000)]):
        for method, key in (("chats.create", "members"), ("messages.send", "attachments")):
            params: dict[str, object] = {key: items}
            params.update({"title": "w"} if method == "chats.create"
                          else {"chat_id": "general", "text": "w"})
            status, answer, took = await post(http, roomy.url,
                                              orjson.dumps(request(method, params)), a.token)
            assert status == 200 and isinstance(answer, dict), (status, answer)
            assert answer["error"]["code"] == -32602 and took < 2.0, (method, took)
            assert answer["error"]["data"]["path"].startswith(f"/{key}")


# -- text kept exactly -------------------------------------------------------------------------

ODD_TEXTS = [
    "emoji \U0001F600 family \U0001F469\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466"
    " flag \U0001F1FA\U0001F1E6 skin \U0001F44B\U0001F3FD",
    "RTL \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u202eoverride\u202c \u200f",
    "combining e\u0301 vs \u00e9, zalgo Z\u0351\u0352\u0353\u0354\u0355\u0356",
    "Hangul jamo \u1100\u1161\u11a8 vs \uac01, NFKC \ufb01 \u2126",
    "astral \U0001D573\U0001D574 \U00010348 cjk \u4e2d\u6587 \U00020000",
    "controls \t tab \r\n crlf \x1b[31m ansi \x7f del \u2028 ls \u2029 ps \ufeff bom \ufffd",
    "'); DROP TABLE messages;--",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "\" OR 1=1 -- ; /* */ %s %d {0} ${x} \\ \\\\ \\u0000",
    "<script>alert(1)</script> &amp; &lt;",
    "  leading and trailing spaces  ",
    "\U0010FFFF\uFFFE\uFFFF noncharacters",
]


async def check_round_trip(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    """Every odd text comes back exactly, in the result, in history and in the poll."""
    a, b = Api(http, server.url), Api(http, server.url)
    await a.connect(unique_name("odd"))
    start = (await b.connect(unique_name("odd")))["cursor"]
    chat = (await a.call("chats.create", title="'); DROP TABLE chats;-- \u05e9\U0001F600",
                         members=[b.username]))["chat"]
    assert chat["title"] == "'); DROP TABLE chats;-- \u05e9\U0001F600"
    sent_ids = []
    for text in ODD_TEXTS:
        for target in ({"chat_id": chat["chat_id"]}, {"to": b.username}):
            sent = await a.call("messages.send", text=text, **target)
            assert sent["message"]["text"] == text
            sent_ids.append(sent["message"]["message_id"])
    group = await b.call("messages.history", chat_id=chat["chat_id"], limit=100)
    assert [m["text"] for m in group["messages"]] == ODD_TEXTS
    events: list[dict[str, object]] = []
    cursor = start
    while True:
        body = await b.poll(cursor, timeout=0, advance=False)
        events.extend(body["events"])
        cursor = body["cursor"]
        if not body["more"]:
            break
    texts = [e["message"]["text"] for e in events if e["type"] == "message"]  # type: ignore
    assert texts == [t for t in ODD_TEXTS for _ in range(2)]
    # Byte for byte: no normalization or re-encoding on the way.
    assert [t.encode("utf-8") for t in texts[::2]] == [t.encode("utf-8") for t in ODD_TEXTS]
    assert (await b.call("chats.create", title="\u0645\u0631\u062d\u0628\u0627")
            )["chat"]["title"] == "\u0645\u0631\u062d\u0628\u0627"
    report = await b.call("users.report", username=a.username,
                          reason="'); DROP TABLE reports;-- \U0001F600\u202e")
    assert report["reports"] == 0  # recorded, but a brand-new account's report does not count
    assert (await b.error("users.report", username=a.username)).code == 409
    # SQL in ids is just an id that does not exist.
    for chat_id in ("general' OR '1'='1", "'; DROP TABLE chats;--", "general\"--"):
        failure = await a.error("messages.history", chat_id=chat_id)
        assert failure.code == 404
    assert len((await a.call("messages.history", chat_id="general"))["messages"]) >= 0


async def test_unicode_and_sql_looking_text_round_trip(http: aiohttp.ClientSession,
                                                       roomy: ServerProcess) -> None:
    await check_round_trip(http, roomy)


async def test_unicode_round_trip_on_postgres(
        http: aiohttp.ClientSession, pg_url: str,
        server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("--store", "postgres", "--database-url", pg_url)
    await check_round_trip(http, server)
    await check_nul_refused(http, server)


async def check_nul_refused(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    """U+0000 is refused in every string param (PostgreSQL text cannot hold it)."""
    a = Api(http, server.url)
    await a.connect(unique_name("nul"))
    cases: list[tuple[str, dict[str, object], str]] = [
        ("messages.send", {"chat_id": "general", "text": "a\x00b"}, "/text"),
        ("messages.send", {"chat_id": "gen\x00eral", "text": "ab"}, "/chat_id"),
        ("messages.history", {"chat_id": "general\x00"}, "/chat_id"),
        ("chats.create", {"title": "t\x00"}, "/title"),
        ("chats.join", {"link": "\x00"}, "/link"),
        ("users.report", {"username": a.username, "reason": "\x00"}, "/reason"),
        ("messages.cancel", {"scheduled_id": "s_\x00"}, "/scheduled_id"),
    ]
    for method, params, path in cases:
        failure = await a.error(method, **params)
        assert failure.code == -32602 and failure.data["path"] == path, (method, failure)
    logins: list[dict[str, str]] = [{"password": "p\x00w"}, {"password": "pw", "client": "c\x00"}]
    for login in logins:
        failure = await Api(http, server.url).error(
            "session.connect", username=unique_name("nul"), **login)
        assert failure.code == -32602, failure
    history = await a.call("messages.history", chat_id="general")
    assert not [m for m in history["messages"] if m["author"] == a.username]
    # Nor in a URL: a file id with %00 is just no file (was a 500 on PostgreSQL).
    async with http.get(URL(server.url + "/files/f_a%00b", encoded=True),
                        headers=a.headers()) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == 404


async def test_nul_characters_are_refused(http: aiohttp.ClientSession,
                                          limited: ServerProcess) -> None:
    await check_nul_refused(http, limited)


# -- numbers at the edges ----------------------------------------------------------------------

async def test_poll_query_numbers_out_of_range_are_400(http: aiohttp.ClientSession,
                                                       roomy: ServerProcess) -> None:
    a = Api(http, roomy.url)
    await a.connect(unique_name("q"))
    for query in ({"cursor": str(2 ** 63)}, {"cursor": str(10 ** 30)}, {"cursor": "-1"},
                  {"cursor": "1.5"}, {"cursor": "x"}, {"limit": "0"}, {"limit": "1001"},
                  {"timeout": "nan"}, {"timeout": "-1"}, {"cursor": "9" * 5000}):
        async with http.get(roomy.url + "/poll", params={"timeout": "0", **query},
                            headers=a.headers()) as r:
            body = await r.json()
            assert r.status == 400 and body["error"]["code"] == -32602, (query, r.status, body)
    # The largest cursor a 64-bit seq allows is a seq never issued: refused like any cursor
    # beyond the newest event (tests/test_cursors.py has the rest of the cursor rules).
    async with http.get(roomy.url + "/poll", params={"timeout": "0", "cursor": str(2 ** 63 - 1)},
                        headers=a.headers()) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == -32602
    # An infinite timeout is cut to the maximum, not an error: answered by a new event.
    b = Api(http, roomy.url)
    await b.connect(unique_name("q"))
    start = (await a.poll(timeout=0))["cursor"]

    async def forever() -> tuple[int, Any]:
        async with http.get(roomy.url + "/poll", headers=a.headers(),
                            params={"timeout": "inf", "cursor": str(start)}) as r:
            return r.status, await r.json()

    parked = asyncio.create_task(forever())
    await asyncio.sleep(0.3)
    await b.call("messages.send", to=a.username, text="wake")
    status, body = await asyncio.wait_for(parked, 5)
    assert status == 200 and [e["message"]["text"] for e in body["events"]] == ["wake"]


async def test_history_limit_given_as_a_float_integer(http: aiohttp.ClientSession,
                                                      roomy: ServerProcess) -> None:
    """JSON Schema calls 2.0 an integer, so the method must take it like 2 (was -32603)."""
    a = Api(http, roomy.url)
    await a.connect(unique_name("f"))
    chat = (await a.call("chats.create", title="floats"))["chat"]["chat_id"]
    for i in range(3):
        await a.call("messages.send", chat_id=chat, text=f"f{i}")
    page = await a.call("messages.history", chat_id=chat, limit=2.0)
    assert [m["text"] for m in page["messages"]] == ["f1", "f2"] and page["more"]
    assert (await a.error("messages.history", chat_id=chat, limit=2.5)).code == -32602


def raw_http(port: int, request_head: bytes) -> tuple[int, Any]:
    """Send raw request bytes (headers HTTP clients would not produce); status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request_head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


@pytest.mark.parametrize("token", [b"\xe9\xff", b"\xc3", "caf\u00e9".encode(),
                                   "\U0001F600".encode(), b"\x80abc"])
def test_non_ascii_bearer_tokens_are_401_not_500(roomy: ServerProcess, token: bytes) -> None:
    """Found by the fuzzer: undecodable header bytes reached the token hash (-32603 / 500)."""
    rpc_body = b'{"jsonrpc":"2.0","id":1,"method":"session.status"}'
    status, body = raw_http(roomy.port, b"POST /rpc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            b"Authorization: Bearer " + token + b"\r\nContent-Length: "
                            + str(len(rpc_body)).encode() + b"\r\n\r\n" + rpc_body)
    assert status == 200 and body["error"]["code"] == 401, body
    for path in (b"/poll?timeout=0", b"/files/f_x"):
        status, body = raw_http(roomy.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\nAuthorization: Bearer " + token
                                + b"\r\n\r\n")
        assert status == 401 and body["error"]["code"] == 401, (path, body)
