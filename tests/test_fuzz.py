"""Property tests through the real HTTP path: whatever comes in, no 5xx, no -32603, no hang."""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from rpc.validation import inline_refs
from tests.support import ServerProcess, unique_name

CLIENT_TIMEOUT = 10.0
# Examples per property: a third of the full count by default (every run draws new ones:
# no seed, no example database), the full count with MESSENGER_HYPOTHESIS=deep.
DEEP = os.environ.get("MESSENGER_HYPOTHESIS") == "deep"


def examples(full: int) -> int:
    """How many examples a property with `full` examples in a deep run gets in this run."""
    return full if DEEP else max(20, full // 3)


FUZZ = settings(max_examples=examples(100), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The decoded body."""
        return orjson.loads(self.body) if self.body else None


def request(port: int, method: str, path: str, body: bytes | None = None,
            token: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    """One request on its own connection; a hang fails the test through the client timeout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        all_headers = {"Connection": "close", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.read())
    finally:
        conn.close()


def rpc(port: int, method: str, token: str | None = None, **params: Any) -> Any:
    """A call that must succeed; its result."""
    reply = request(port, "POST", "/rpc", orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}), token)
    answer = reply.json()
    assert reply.status == 200 and "result" in answer, (method, answer)
    return answer["result"]


def rfc3339(when: float) -> str:
    """An RFC 3339 UTC time."""
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class World:
    """A running server with a logged-in user and real ids to aim near."""

    server: ServerProcess
    name: str
    token: str
    known: dict[str, list[Any]]
    valid: dict[str, list[Any]]

    @property
    def port(self) -> int:
        """The server's port."""
        return self.server.port

    def relogin(self) -> None:
        """A fresh token (after a fuzzed session.disconnect succeeded)."""
        self.token = rpc(self.port, "session.connect", username=self.name,
                         password="fuzz pw")["token"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server for every property in this module."""
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data",
                           "--rate-limit", "100000", "--login-max-failures", "100000",
                           "--ban-threshold", "100000", "--poll-timeout", "0.05",
                           "--poll-timeout-max", "0.1").start()
    port = server.port
    me, peer = unique_name("fz"), unique_name("peer")
    token = rpc(port, "session.connect", username=me, password="fuzz pw")["token"]
    peer_token = rpc(port, "session.connect", username=peer, password="pw")["token"]
    group = rpc(port, "chats.create", token, title="fuzz", members=[peer])["chat"]["chat_id"]
    direct = rpc(port, "messages.send", token, to=peer, text="hi")["message"]
    in_group = rpc(port, "messages.send", peer_token, chat_id=group, text="in group")["message"]
    general = rpc(port, "messages.send", token, chat_id="general", text="hello")["message"]
    scheduled = rpc(port, "messages.send", token, chat_id=group, text="later",
                    send_at=rfc3339(time.time() + 3600))["scheduled"]["scheduled_id"]
    link = rpc(port, "chats.link", token, chat_id=group)["link"]
    upload = request(port, "POST", "/files?name=f.txt", b"file body", token)
    assert upload.status == 200, upload
    file_id = upload.json()["file_id"]
    message_ids = [direct["message_id"], in_group["message_id"], general["message_id"]]
    known: dict[str, list[Any]] = {
        "chat_id": ["general", group, direct["chat_id"], "g_nonexistent", "General"],
        "username": [me, peer, me.upper(), "nobody_at_all"],
        "to": [me, peer, "nobody_at_all"],
        "members": [[peer], [me, peer], [peer, peer.upper()], ["nobody_at_all"]],
        "message_id": message_ids, "before": message_ids, "comment_to": message_ids,
        "scheduled_id": [scheduled, "s_nonexistent"],
        "link": [link, link + "x", link[:-1]],
        "attachments": [[file_id], [file_id, file_id], ["f_nonexistent"]],
        "send_at": [rfc3339(time.time() + 60), rfc3339(time.time() - 60), "2024-02-30T00:00:00Z",
                    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "today",
                    "2030-01-01T00:00:00", "2030-01-01T00:00:00.123456789+05:30",
                    rfc3339(time.time() + 2 * 366 * 86400)],
        "password": ["fuzz pw", "pw", "wrong"],
        "limit": [1, 100, 0, 101, 2.0, 1e300, -1, 2 ** 64 - 1, "5"],
    }
    valid: dict[str, list[Any]] = {
        "chat_id": ["general", group, direct["chat_id"]], "username": [peer], "to": [peer],
        "members": [[peer]], "message_id": message_ids, "before": message_ids,
        "comment_to": message_ids, "scheduled_id": [scheduled], "link": [link],
        "attachments": [[file_id]], "send_at": [rfc3339(time.time() + 60)],
        "password": ["fuzz pw"], "limit": [1, 50, 100], "text": ["hello", "\U0001F600"],
        "title": ["a group"], "reason": ["spam"], "client": ["fuzz"]}
    yield World(server, me, token, known, valid)
    if server.proc is not None:
        server.proc.poll()
        assert server.proc.returncode is None, "the server died during fuzzing"
        server.stop()


# -- strategies ------------------------------------------------------------------------------

# Text without lone surrogates (JSON cannot carry them; orjson refuses them on both ends).
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
# orjson (like most JSON libraries) writes integers of at most 64 bits.
INTS = st.integers(-2 ** 63, 2 ** 64 - 1)
SCALARS = (st.none() | st.booleans() | INTS
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(TEXT, inner, max_size=5), max_leaves=20)
ODD_STRINGS = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\n", "abc\n", "\u202e", "\U0001F600" * 3, "e\u0301",
    "'); DROP TABLE users;--", "%s%n", "../../etc/passwd", "x" * 5000, "null", "-1", "1e999",
    "\ufeff", "\ud7ff\ue000", "ab", "a" * 32, "a" * 33, "_" * 3])


# Integers at the edges of common widths (as AFL and friends try them), within orjson's range.
EDGE_INTS = sorted({v for k in (0, 8, 16, 31, 32, 53, 63, 64) for d in (-1, 0, 1)
                    for v in (2 ** k + d, -(2 ** k) + d) if -2 ** 63 <= v < 2 ** 64})


def near(schema: Any, name: str, known: dict[str, list[Any]], depth: int = 0) -> Any:
    """Values near what a (sub)schema accepts: real ids, boundaries, wrong types."""
    typed: list[Any] = []
    if name in known:
        typed.append(st.sampled_from(known[name]))
    if isinstance(schema, dict) and depth <= 4:
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "string" in types:
            low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
            typed.append(st.text(st.characters(blacklist_categories=["Cs"]),
                                 min_size=max(0, low - 1), max_size=min(high + 1, 300)))
            typed.append(st.sampled_from(["a" * max(0, low - 1), "a" * low, "b" * high,
                                          "c" * (high + 1)]))
        if "integer" in types or "number" in types:
            low, high = schema.get("minimum", -10), schema.get("maximum", 10 ** 6)
            typed.append(st.sampled_from([low - 1, low, high, high + 1, float(low),
                                          float(high), float((low + high) // 2), low + 0.5]))
            typed.append(st.sampled_from(EDGE_INTS))
        if "array" in types:
            typed.append(st.lists(near(schema.get("items"), name, known, depth + 1),
                                  max_size=schema.get("maxItems", 5) + 1))
        if "properties" in schema:
            typed.append(params_near(schema, known, depth + 1))
        for key in ("allOf", "oneOf", "anyOf"):
            typed.extend(near(sub, name, known, depth + 1) for sub in schema.get(key, []))
    # Schema-shaped values three times as often as arbitrary ones.
    return st.one_of(typed * 3 + [JSON_VALUES, ODD_STRINGS])


def params_near(schema: dict[str, Any], known: dict[str, list[Any]], depth: int = 0) -> Any:
    """Objects with some of the schema's properties (each near its schema), maybe one extra."""
    props = {k: near(v, k, known, depth) for k, v in schema.get("properties", {}).items()}
    base = st.fixed_dictionaries({}, optional=props)
    extra = st.dictionaries(TEXT, JSON_VALUES, max_size=1)
    return st.one_of(base, st.builds(lambda a, b: {**b, **a}, base, extra))


def one_mutation(schema: dict[str, Any], valid: dict[str, list[Any]],
                 known: dict[str, list[Any]]) -> Any:
    """Plausible params (real ids for every property) with at most one property gone wrong.

    Random objects rarely get past the first check; this reaches the method code itself.
    """
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    plausible = {k: st.sampled_from(valid[k]) for k in props if k in valid}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        params = draw(st.fixed_dictionaries(
            {k: v for k, v in plausible.items() if k in required},
            optional={k: v for k, v in plausible.items() if k not in required}))
        if props and draw(st.sampled_from([True, True, True, False])):
            key = draw(st.sampled_from(sorted(props)))
            params[key] = draw(near(props[key], key, known))
        return params

    return build()


def assert_sane_rpc(reply: Reply) -> None:
    """No 5xx, no internal error, a JSON-RPC shaped answer."""
    assert reply.status < 500, reply
    assert reply.status in (200, 204, 413), reply
    if reply.status == 204:
        assert reply.body == b""
        return
    answer = reply.json()
    for item in answer if isinstance(answer, list) else [answer]:
        assert item["jsonrpc"] == "2.0" and ("result" in item) != ("error" in item), item
        if "error" in item:
            assert item["error"]["code"] != -32603, item
            assert "Traceback" not in json.dumps(item)


# -- properties ------------------------------------------------------------------------------

ENVELOPE_KEYS = st.sampled_from(["jsonrpc", "method", "params", "id", "extra"])
METHOD_NAMES = st.sampled_from(sorted(schemas.method_schemas())
                               + ["", "rpc.", "x.y", "Session.Status"])
ENVELOPE = st.fixed_dictionaries({}, optional={
    "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0, None]) | JSON_VALUES,
    "method": METHOD_NAMES | JSON_VALUES,
    "params": st.dictionaries(TEXT, JSON_VALUES, max_size=4) | JSON_VALUES,
    "id": INTS | TEXT | st.none() | JSON_VALUES,
}) | st.dictionaries(ENVELOPE_KEYS | TEXT, JSON_VALUES, max_size=5)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), JSON_VALUES.map(orjson.dumps),
                      ENVELOPE.map(orjson.dumps),
                      st.lists(ENVELOPE, min_size=0, max_size=5).map(orjson.dumps)),
       logged_in=st.booleans())
def test_arbitrary_rpc_bodies(world: World, body: bytes, logged_in: bool) -> None:
    reply = request(world.port, "POST", "/rpc", body, world.token if logged_in else None)
    assert_sane_rpc(reply)
    if logged_in and b"session.disconnect" in body and reply.status == 200:
        world.relogin()


@FUZZ
@given(token=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                   blacklist_characters="\x7f"), max_size=80),
       scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]))
def test_arbitrary_tokens(world: World, token: str, scheme: str) -> None:
    header = {"Authorization": scheme + token}
    reply = request(world.port, "POST", "/rpc", orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "session.status"}), headers=header)
    assert_sane_rpc(reply)
    assert reply.json()["error"]["code"] == 401
    reply = request(world.port, "GET", "/poll?timeout=0", headers=header)
    assert reply.status == 401 and reply.json()["error"]["code"] == 401


METHODS = sorted(schemas.method_schemas())


@pytest.mark.parametrize("method", METHODS)
def test_arbitrary_params_to_every_method(world: World, method: str) -> None:
    schema = inline_refs(schemas.method_schemas()[method].params, schemas.defs())

    mutated = one_mutation(schema, world.valid, world.known)

    @settings(FUZZ, max_examples=examples(60))
    @given(params=st.one_of(mutated, mutated, mutated, params_near(schema, world.known),
                            st.dictionaries(TEXT, JSON_VALUES, max_size=4)),
           as_batch=st.booleans())
    def prop(params: dict[str, Any], as_batch: bool) -> None:
        call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        body = orjson.dumps([call, call] if as_batch else call)
        reply = request(world.port, "POST", "/rpc", body, world.token)
        assert_sane_rpc(reply)
        answers = reply.json()
        for answer in answers if isinstance(answers, list) else [answers]:
            if "result" in answer:
                assert isinstance(answer["result"], dict)
                if method == "session.disconnect":
                    world.relogin()

    prop()
    rpc(world.port, "session.status", world.token)


EDGES = st.sampled_from(EDGE_INTS).map(str)
QUERY_VALUES = st.one_of(  # the numbers a query string carries, edges first
    EDGES, EDGES, EDGES, st.integers(-2 ** 70, 2 ** 70).map(str),
    st.floats().map(str), TEXT, st.sampled_from([
        "0", "-0", "1.5", "1e3", "inf", "-inf", "nan", "NaN", "1_000", "0x10", " 5", "5 ",
        "\u0663", "\uff15", "9" * 25, "9" * 5000, "", "%", "%zz", "%00", "1e-400", "0.3"]))
QUERIES = st.fixed_dictionaries(
    {}, optional={k: QUERY_VALUES for k in ("cursor", "timeout", "limit")})
EXTRA_PAIRS = st.lists(st.tuples(st.sampled_from(["Cursor", "cursor[]", "", "cursor "]) | TEXT,
                                 QUERY_VALUES), max_size=2)


@settings(FUZZ, max_examples=examples(150))
@given(query=QUERIES, extra=EXTRA_PAIRS,
       raw=st.sampled_from([False, False, True]).flatmap(
           lambda raw: st.text(max_size=60) if raw else st.none()),
       logged_in=st.sampled_from([True, True, True, False]))
def test_arbitrary_poll_queries(world: World, query: dict[str, str],
                                extra: list[tuple[str, str]], raw: str | None,
                                logged_in: bool) -> None:
    if raw is not None:  # whatever bytes, with %-escapes left as they are
        qs = urllib.parse.quote(raw, safe="=&%+;,/?:@!$'()*~")
    else:
        qs = "&".join(f"{urllib.parse.quote(k, safe='%')}={urllib.parse.quote(v, safe='%')}"
                      for k, v in [*query.items(), *extra])
    started = time.monotonic()
    reply = request(world.port, "GET", "/poll?" + qs, token=world.token if logged_in else None)
    assert time.monotonic() - started < 3.0  # --poll-timeout-max is 0.1
    assert reply.status in (200, 400, 401), reply
    body = reply.json()
    if reply.status == 200:
        assert set(body) == {"events", "cursor", "more"}
    else:
        assert body["error"]["code"] in (-32602, 401), body


def test_the_server_survived(world: World) -> None:
    reply = request(world.port, "POST", "/rpc", orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}))
    assert reply.status == 200 and "result" in reply.json()
    assert rpc(world.port, "session.status", world.token)["username"] == world.name
    log = world.server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:3000]
