"""The bare-aiohttp floor: parses each JSON body and answers a constant, nothing else.

It exists only so `messenger-bench --floor` can measure what this stack costs on this
machine before any real work (no validation, storage or auth). A `messages.send` wakes
every parked /poll with one canned event, which is the floor of the fan-out scenario.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any, Iterator, Sequence

import orjson
from aiohttp import web

COUNTER = web.AppKey("counter", Iterator[int])
WAKE = web.AppKey("wake", list[asyncio.Future[bytes]])


def _result(app: web.Application, method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "session.connect":
        return {"token": "floor", "username": params.get("username", "x"), "cursor": 0,
                "general_chat_id": "general", "history": []}
    if method == "chats.create":
        return {"chat": {"chat_id": "floor", "kind": "group", "title": "floor", "owner": None,
                         "members": []}}
    if method == "messages.send":
        counter: Iterator[int] = app[COUNTER]
        seq = next(counter)
        message = {"message_id": f"m{seq}", "chat_id": params.get("chat_id", "floor"),
                   "author": "floor", "text": params.get("text"), "attachments": [],
                   "comment_to": None, "sent_at": "", "expires_at": ""}
        event = orjson.dumps({"events": [{"seq": seq, "type": "message", "message": message}],
                              "cursor": seq, "more": False})
        waiters, app[WAKE] = app[WAKE], []
        for fut in waiters:
            if not fut.done():
                fut.set_result(event)
        return {"message": message}
    return {}


async def rpc(request: web.Request) -> web.Response:
    """Parse the body; answer a constant."""
    body = orjson.loads(await request.read())
    result = _result(request.app, body.get("method", ""), body.get("params") or {})
    return web.Response(body=orjson.dumps({"jsonrpc": "2.0", "result": result,
                                           "id": body.get("id")}),
                        content_type="application/json")


async def poll(request: web.Request) -> web.Response:
    """Park until the next send (or the timeout)."""
    fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    request.app[WAKE].append(fut)
    timeout = float(request.query.get("timeout", "30"))
    try:
        body = await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        body = b'{"events":[],"cursor":0,"more":false}'
    return web.Response(body=body, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    """Liveness (the benchmark waits on /openrpc.json like on the real server)."""
    return web.Response(body=b"{}", content_type="application/json")


def make_app() -> web.Application:
    """The floor app."""
    app = web.Application()
    app[COUNTER] = itertools.count(1)
    app[WAKE] = []
    app.router.add_post("/rpc", rpc)
    app.router.add_get("/poll", poll)
    app.router.add_get("/openrpc.json", ready)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the floor app."""
    p = argparse.ArgumentParser(prog="messenger-floor")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    args = p.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
