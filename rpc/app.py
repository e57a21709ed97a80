"""HTTP wiring: the aiohttp app factory, its routes and its managed resources."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import AsyncIterator
from urllib.parse import quote

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

import schemas
from methods import errors
from methods.auth import authenticate
from methods.background import run_purger, run_scheduler
from methods.base import discover_methods
from methods.context import Caller, Request, Services, SessionCache
from methods.files import file_for_download, file_path, new_file_id, register_upload
from methods.poll import clamp_timeout, poll
from rpc.docs import render_docs
from rpc.openrpc import build_openrpc
from rpc.protocol import Dispatcher
from rpc.settings import Settings
from store.base import Store
from store.sqlite import SqliteStore

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
STOPPING = web.AppKey("stopping", asyncio.Event)
STATIC = web.AppKey("static", dict[str, bytes])

JSON = "application/json"
MAX_SEQ = 2 ** 63 - 1  # event seqs are 64-bit signed integers in both databases


def json_response(body: object, status: int = 200) -> web.Response:
    """A response with an orjson-encoded body."""
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def http_error(code: int, message: str, status: int | None = None) -> web.Response:
    """The JSON error body of /poll and /files: `{"error": {"code", "message"}}`."""
    return json_response({"error": {"code": code, "message": message}}, status or code)


def bearer(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def request_info(request: web.Request) -> Request:
    """Transport facts methods may use."""
    return Request(remote=request.remote or "unknown")


async def caller_of(request: web.Request) -> Caller:
    """The authenticated caller, or an HTTP 401 JSON error."""
    try:
        return await authenticate(request.app[SERVICES], bearer(request))
    except errors.RpcError as err:
        raise web.HTTPUnauthorized(body=orjson.dumps({"error": err.to_dict()}),
                                   content_type=JSON) from None


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    """POST /rpc: read the body, let the dispatcher answer, write the answer."""
    limit = request.app[SETTINGS].max_body
    if request.content_length is not None and request.content_length > limit:
        return _too_large_rpc(limit)
    body = await read_body(request, limit)
    if body is None:
        return _too_large_rpc(limit)
    answer = await request.app[DISPATCHER].handle(body, bearer(request), request_info(request))
    if answer is None:
        return web.Response(status=204)
    return json_response(answer)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large_rpc(limit: int) -> web.Response:
    log.warning("rejected /rpc body over %d bytes", limit)
    err = errors.too_large(f"request body larger than {limit} bytes", max_body=limit)
    resp = json_response({"jsonrpc": "2.0", "error": err.to_dict(), "id": None}, 413)
    resp.force_close()
    return resp


def _query_number(request: web.Request, name: str, kind: type[int] | type[float],
                  low: float, high: float | None) -> int | float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise web.HTTPBadRequest(body=orjson.dumps({"error": {
            "code": -32602, "message": f"{name} must be a number"}}), content_type=JSON)
    if value < low or (high is not None and value > high) or value != value:
        raise web.HTTPBadRequest(body=orjson.dumps({"error": {
            "code": -32602, "message": f"{name} out of range"}}), content_type=JSON)
    return value


async def handle_poll(request: web.Request) -> web.StreamResponse:
    """GET /poll: the caller's events after the cursor, long-polling when there are none."""
    caller = await caller_of(request)
    services = request.app[SERVICES]
    cursor = _query_number(request, "cursor", int, 0, MAX_SEQ)
    timeout = _query_number(request, "timeout", float, 0, None)
    limit = _query_number(request, "limit", int, 1, 1000)
    answer = await poll(services, caller, None if cursor is None else int(cursor),
                        clamp_timeout(services, timeout), int(limit or 100),
                        request.app[STOPPING])
    # Each event was serialized once when it was stored; only its seq is spliced in here.
    events = b",".join(b'{"seq":%d,%s' % (e.seq, e.body[1:]) for e in answer.events)
    body = b'{"events":[%s],"cursor":%d,"more":%s}' % (
        events, answer.cursor, b"true" if answer.more else b"false")
    return web.Response(body=body, content_type=JSON)


async def handle_upload(request: web.Request) -> web.StreamResponse:
    """POST /files?name=N: stream the body to disk, refusing it past the size limit."""
    caller = await caller_of(request)
    services = request.app[SERVICES]
    limit = services.limits.max_file_size
    if request.content_length is not None and request.content_length > limit:
        return _upload_too_large(limit)
    file_id = new_file_id()
    final = file_path(services, file_id)
    partial = final.with_name(f".{file_id}.part")
    size = 0
    try:
        with open(partial, "wb") as out:
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    break
                out.write(chunk)
        if size > limit:
            partial.unlink()
            return _upload_too_large(limit)
        os.replace(partial, final)
        content_type = request.headers.get("Content-Type") or "application/octet-stream"
        stored = await register_upload(services, caller, file_id,
                                       request.query.get("name", ""), size, content_type)
    except BaseException:
        for path in (partial, final):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    return json_response({"file_id": stored.file_id, "name": stored.name, "size": stored.size,
                          "content_type": stored.content_type})


def _upload_too_large(limit: int) -> web.Response:
    log.warning("rejected upload over %d bytes", limit)
    resp = http_error(413, f"file larger than {limit} bytes")
    resp.force_close()
    return resp


async def handle_download(request: web.Request) -> web.StreamResponse:
    """GET /files/{file_id}: the bytes, for the uploader and members of chats it was sent to."""
    caller = await caller_of(request)
    try:
        f = await file_for_download(request.app[SERVICES], caller, request.match_info["file_id"])
    except errors.RpcError as err:
        return http_error(int(err.code), err.message)
    return web.FileResponse(f.path, headers={
        "Content-Type": f.content_type,
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(f.name)}",
        "X-Content-Type-Options": "nosniff",
    })


async def handle_openrpc(request: web.Request) -> web.StreamResponse:
    """GET /openrpc.json."""
    return web.Response(body=request.app[STATIC]["openrpc"], content_type=JSON)


async def handle_docs(request: web.Request) -> web.StreamResponse:
    """GET /docs: the HTML reference."""
    return web.Response(body=request.app[STATIC]["docs"], content_type="text/html",
                        charset="utf-8")


async def handle_root(request: web.Request) -> web.StreamResponse:
    """GET /: point people at the docs."""
    raise web.HTTPFound("/docs")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors keep their status; a bug becomes a bare 500 (traceback only in the log)."""
    try:
        return await handler(request)
    except (web.HTTPException, asyncio.CancelledError, ConnectionError):
        raise  # aiohttp answers these itself; a client that went away is not our bug
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return http_error(500, "internal error")


def make_store(settings: Settings) -> Store:
    """The configured backend."""
    if settings.store == "postgres":
        from store.postgres import PostgresStore  # asyncpg is loaded only when used
        assert settings.database_url
        return PostgresStore(settings.database_url)
    return SqliteStore(settings.db_path, power_safe=settings.durability == "power")


def create_app(settings: Settings) -> web.Application:
    """The app factory: routes plus resources opened and closed with the app."""
    app = web.Application(client_max_size=settings.max_body, middlewares=[errors_as_json])
    app[SETTINGS] = settings
    app[STOPPING] = asyncio.Event()
    methods = discover_methods()
    method_schemas = schemas.method_schemas()
    missing = set(methods) ^ set(method_schemas)
    if missing:
        raise RuntimeError(f"methods and schemas/ disagree on: {sorted(missing)}")
    openrpc = build_openrpc(methods)
    app[STATIC] = {"openrpc": orjson.dumps(openrpc), "docs": render_docs(openrpc).encode()}

    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        store = make_store(settings)
        await store.open()
        services = Services(store=store, limits=settings.limits, files_dir=settings.files_dir,
                            openrpc=openrpc,
                            # Another process may end a session on a shared database.
                            session_cache=SessionCache() if settings.store == "sqlite" else None)
        app[SERVICES] = services
        app[DISPATCHER] = Dispatcher(methods, {n: s.params for n, s in method_schemas.items()},
                                     services, settings.max_batch)
        tasks = [asyncio.create_task(run_scheduler(services), name="scheduler"),
                 asyncio.create_task(run_purger(services), name="purger")]
        log.info("store open: %s", settings.store)
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        log.info("store closed")

    async def on_shutdown(app: web.Application) -> None:
        # Parked polls answer empty at once so shutdown does not wait for their timeouts.
        app[STOPPING].set()
        if SERVICES in app:
            app[SERVICES].store.notifier.wake_everyone()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/rpc", handle_rpc)
    app.router.add_get("/poll", handle_poll)
    app.router.add_post("/files", handle_upload)
    app.router.add_get("/files/{file_id}", handle_download)
    app.router.add_get("/openrpc.json", handle_openrpc)
    app.router.add_get("/docs", handle_docs)
    app.router.add_get("/", handle_root)
    return app
