"""The JSON-RPC 2.0 specification's own examples, run through the real dispatcher as strings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import orjson
import pytest

from methods.base import Method, PublicMethod, Result
from methods.context import Limits, Request, Services
from rpc.protocol import Dispatcher
from store.sqlite import SqliteStore

Params = dict[str, Any]


class Subtract(PublicMethod[Params]):
    """The spec's `subtract` (by-name only: this server takes params as an object)."""

    name = "subtract"

    async def call(self, services: Services, params: Params, request: Request) -> Result:
        return {"value": params["minuend"] - params["subtrahend"]}


class Update(PublicMethod[Params]):
    """The spec's `update` notification target."""

    name = "update"
    seen: list[Params] = []

    async def call(self, services: Services, params: Params, request: Request) -> Result:
        self.seen.append(params)
        return {}


class GetData(PublicMethod[Params]):
    """The spec's `get_data`."""

    name = "get_data"

    async def call(self, services: Services, params: Params, request: Request) -> Result:
        return {"data": ["hello", 5]}


class Broken(PublicMethod[Params]):
    """A method with a bug: must become -32603 without details."""

    name = "broken"

    async def call(self, services: Services, params: Params, request: Request) -> Result:
        raise ValueError("secret internal detail")


NUM = {"type": "object", "properties": {"minuend": {"type": "number"},
                                        "subtrahend": {"type": "number"}},
       "required": ["minuend", "subtrahend"], "additionalProperties": False}
ANY: dict[str, Any] = {"type": "object"}


@pytest.fixture
async def dispatcher(tmp_path: Path) -> AsyncIterator[Dispatcher]:
    store = SqliteStore(tmp_path / "m.db")
    await store.open()
    services = Services(store=store, limits=Limits(), files_dir=tmp_path)
    methods: dict[str, Method] = {m.name: m for m in (Subtract(), Update(), GetData(), Broken())}
    schemas = {"subtract": NUM, "update": ANY, "get_data": ANY, "broken": ANY}
    yield Dispatcher(methods, schemas, services, max_batch=10)
    await store.close()


async def run(d: Dispatcher, body: str) -> Any:
    return await d.handle(body.encode(), None, Request("test"))


async def test_call_with_named_params(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "subtract", '
                                '"params": {"subtrahend": 23, "minuend": 42}, "id": 3}')
    assert out == {"jsonrpc": "2.0", "result": {"value": 19}, "id": 3}


async def test_positional_params_are_refused_with_invalid_params(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "subtract", '
                                '"params": [42, 23], "id": 1}')
    assert out["error"]["code"] == -32602 and out["id"] == 1


async def test_notification_gets_no_answer(dispatcher: Dispatcher) -> None:
    Update.seen.clear()
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "update", "params": {"a": 1}}')
    assert out is None and Update.seen == [{"a": 1}]


async def test_notification_of_unknown_method_gets_no_answer(dispatcher: Dispatcher) -> None:
    assert await run(dispatcher, '{"jsonrpc": "2.0", "method": "foobar"}') is None


async def test_non_existent_method(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert out["error"]["code"] == -32601 and out["id"] == "1"


async def test_invalid_json(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert out["error"]["code"] == -32700 and out["id"] is None


async def test_invalid_request_object(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert out["error"]["code"] == -32600 and out["id"] is None


async def test_batch_invalid_json(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], '
                                '"id": "1"}, {"jsonrpc": "2.0", "method"]')
    assert out["error"]["code"] == -32700 and out["id"] is None


async def test_empty_array(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, "[]")
    assert isinstance(out, dict) and out["error"]["code"] == -32600 and out["id"] is None


async def test_invalid_batch_of_one(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, "[1]")
    assert out == [{"jsonrpc": "2.0", "error": out[0]["error"], "id": None}]
    assert out[0]["error"]["code"] == -32600


async def test_invalid_batch(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, "[1,2,3]")
    assert [o["error"]["code"] for o in out] == [-32600] * 3


async def test_mixed_batch(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, """[
        {"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23},
         "id": "1"},
        {"jsonrpc": "2.0", "method": "update", "params": {"b": 7}},
        {"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23},
         "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]""")
    by_id = {o["id"]: o for o in out}
    assert len(out) == 5
    assert by_id["1"]["result"] == {"value": 19} and by_id["2"]["result"] == {"value": 19}
    assert by_id[None]["error"]["code"] == -32600
    assert by_id["5"]["error"]["code"] == -32601
    assert by_id["9"]["result"] == {"data": ["hello", 5]}


async def test_batch_of_notifications_gets_nothing(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '[{"jsonrpc": "2.0", "method": "update", "params": {}},'
                                ' {"jsonrpc": "2.0", "method": "update", "params": {}}]')
    assert out is None


async def test_wrong_version_and_bad_id_are_invalid(dispatcher: Dispatcher) -> None:
    for body in ('{"jsonrpc": "1.0", "method": "get_data", "id": 1}',
                 '{"jsonrpc": "2.0", "method": "get_data", "id": {"x": 1}}',
                 '{"jsonrpc": "2.0", "method": "get_data", "id": true}',
                 '{"jsonrpc": "2.0", "method": "get_data", "params": 3, "id": 1}'):
        out = await run(dispatcher, body)
        assert out["error"]["code"] == -32600, body


async def test_params_validation_names_the_path(dispatcher: Dispatcher) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "subtract", '
                                '"params": {"minuend": "x", "subtrahend": 1}, "id": 7}')
    assert out["error"]["code"] == -32602
    assert out["error"]["data"]["path"] == "/minuend"


async def test_batch_longer_than_limit(dispatcher: Dispatcher) -> None:
    body = orjson.dumps([{"jsonrpc": "2.0", "method": "get_data", "id": i} for i in range(11)])
    out = await dispatcher.handle(body, None, Request("test"))
    assert isinstance(out, dict) and out["error"]["code"] == 413


async def test_bug_becomes_internal_error_without_details(dispatcher: Dispatcher,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    out = await run(dispatcher, '{"jsonrpc": "2.0", "method": "broken", "id": 1}')
    assert out["error"] == {"code": -32603, "message": "Internal error"}
    assert "secret internal detail" not in orjson.dumps(out).decode()
    assert "secret internal detail" in caplog.text  # the traceback is in the server log
