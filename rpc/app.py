"""HTTP wiring: the aiohttp app factory, its routes and its managed resources."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import AsyncIterator, Callable, cast
from urllib.parse import quote

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

import schemas
from methods import errors
from methods.auth import authenticate
from methods.background import run_purger, run_scheduler
from methods.context import Caller, Request, Services, SessionCache
from methods.discover import document_for
from methods.files import (
    UPLOAD_CHUNK, Upload, UploadRefused, file_for_download, in_database,
)
from methods.logsafe import RateLimitedLog, clean
from methods.poll import PollParams, poll_params
from methods.registry import build_registry
from rpc.address import client_address
from rpc import cors
from rpc.docs import render_docs
from rpc.filestream import database_download
from rpc.budget import BodyBudget
from rpc.guard import body_complete
from rpc.openrpc import build_openrpc, server_url
from rpc.protocol import Dispatcher
from rpc.settings import Settings
from rpc.webclient import add_client_routes
from store.base import Store, StoreError
from store.sqlite import SqliteStore

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
STOPPING = web.AppKey("stopping", asyncio.Event)
STATIC = web.AppKey("static", dict[str, bytes])
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
WARN = web.AppKey("warn", RateLimitedLog)  # warnings about rejected input, flood-proof
SMALL_BODY = 64 * 1024  # aiohttp holds this much of a body per connection before pausing it

JSON = "application/json"


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
    """Transport facts methods may use; `remote` is the client address (`--trusted-proxies`)."""
    return Request(
        remote=lambda: client_address(request, request.app[SETTINGS].trusted_proxies),
        rpc_url=lambda: public_rpc_url(request))


def public_rpc_url(request: web.Request) -> str:
    """The absolute URL of POST /rpc as this client reached it (or --public-url)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        local = f"[{sockname[0]}]:{sockname[1]}" if ":" in sockname[0] else \
            f"{sockname[0]}:{sockname[1]}"
    else:
        local = "localhost"
    # Not request.host: without a Host header it asks socket.getfqdn(), a blocking lookup.
    host = request.headers.get("Host", "")
    return server_url(request.app[SETTINGS].public_url, request.scheme, host, local)


async def caller_of(request: web.Request) -> Caller:
    """The authenticated caller, or an HTTP 401 JSON error."""
    try:
        return await authenticate(request.app[SERVICES], bearer(request))
    except errors.RpcError as err:
        raise web.HTTPUnauthorized(text=orjson.dumps({"error": err.to_dict()}).decode(),
                                   content_type=JSON) from None


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    """POST /rpc: read the body, let the dispatcher answer, write the answer."""
    settings = request.app[SETTINGS]
    limit = settings.max_body
    if request.content_length is not None and request.content_length > limit:
        return _too_large_rpc(request, limit)
    # Bodies held in memory at once are bounded process-wide: a body larger than what
    # aiohttp buffers per connection anyway reserves its size before it is read. (Small
    # ones are not counted: bodies held unfinished would fill the budget and make every
    # small request wait; they are bounded by the connection caps instead.)
    budget = request.app[BODY_BUDGET]
    size = limit if request.content_length is None else request.content_length
    size = 0 if size <= SMALL_BODY else size
    if not await budget.acquire(size, settings.read_timeout):
        resp = http_error(503, "server busy receiving other requests; try again")
        resp.force_close()
        return resp
    try:
        body = await read_body(request, limit)
        if body is None:
            return _too_large_rpc(request, limit)
        body_complete(request)  # the read deadline is over: the request is being handled
        answer = await request.app[DISPATCHER].answer(body, bearer(request),
                                                      request_info(request))
    finally:
        budget.release(size)
    if answer is None:
        return web.Response(status=204)
    return web.Response(body=answer, content_type=JSON)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `limit` bytes."""
    content = request.content
    if content.is_eof():  # it all came in with the headers (most bodies): take it at once
        data = content.read_nowait()
        return data if len(data) <= limit else None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except BaseException as exc:
        # The client went away mid-body: the exception's traceback keeps this frame alive in
        # a reference cycle until a full GC, so let go of the bytes now.
        chunks.clear()
        if isinstance(exc, RuntimeError) and not request.protocol.connected:
            # aiohttp's "Connection closed." (cut at --read-timeout while waiting): the
            # client is gone, not a bug (errors_as_json answers nobody and logs nothing).
            raise ConnectionResetError("connection closed while reading the body") from None
        raise
    return b"".join(chunks)


def _too_large_rpc(request: web.Request, limit: int) -> web.Response:
    request.app[WARN].warning("body size", "rejected /rpc body over %d bytes from %s", limit,
                              clean(request.remote))
    err = errors.too_large(f"request body larger than {limit} bytes", max_body=limit)
    resp = json_response({"jsonrpc": "2.0", "error": err.to_dict(), "id": None}, 413)
    resp.force_close()
    return resp


POLL_QUERY = ("cursor", "timeout", "limit")  # the properties of events.poll's params schema
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def poll_query(request: web.Request) -> dict[str, object]:
    """GET /poll's query as events.poll params: numbers where the text is a JSON number (or
    `inf`; anything else stays a string, which the schema refuses); unknown keys are ignored."""
    params: dict[str, object] = {}
    for name in POLL_QUERY:
        raw = request.query.get(name)
        if raw is None or raw == "":
            continue
        if len(raw) <= 100 and _JSON_NUMBER.fullmatch(raw):
            params[name] = int(raw) if raw.lstrip("-").isdigit() else float(raw)
        elif raw.lower() in ("inf", "+inf", "infinity"):  # "wait as long as you allow"
            params[name] = float("inf")
        else:
            params[name] = raw
    return params


def http_status(err: errors.RpcError) -> int:
    """The HTTP status of an error on /poll and /files: JSON-RPC codes are 400."""
    return 400 if int(err.code) < 0 else int(err.code)


async def handle_poll(request: web.Request) -> web.StreamResponse:
    """GET /poll: the caller's events after the cursor, long-polling when there are none."""
    caller = await caller_of(request)
    services = request.app[SERVICES]
    params = poll_query(request)
    try:
        # The schema of events.poll's params validates the query too (one set of rules).
        request.app[DISPATCHER].validators["events.poll"].check(params)
        answer = await poll_params(services, caller, cast(PollParams, params),
                                   request.app[STOPPING])
    except errors.RpcError as err:
        return json_response({"error": err.to_dict()}, http_status(err))
    # Each event was serialized once when it was stored; only its seq is spliced in here.
    events = b",".join(b'{"seq":%d,%s' % (e.seq, e.body[1:]) for e in answer.events)
    body = b'{"events":[%s],"cursor":%d,"more":%s}' % (
        events, answer.cursor, b"true" if answer.more else b"false")
    return web.Response(body=body, content_type=JSON)


async def handle_poll_head(request: web.Request) -> web.StreamResponse:
    """HEAD /poll: whether the token works; reads no events and acknowledges nothing."""
    await caller_of(request)
    return web.Response(status=200, content_type=JSON)


async def handle_upload(request: web.Request) -> web.StreamResponse:
    """POST /files?name=N: stream the body into an `Upload`, which keeps the limits."""
    caller = await caller_of(request)
    content_type = request.headers.get("Content-Type") or "application/octet-stream"
    upload = Upload(request.app[SERVICES], caller, request.query.get("name", ""), content_type)
    try:
        upload.check_size(request.content_length)
        if not header_text(content_type):
            return _bad_header(request, "Content-Type")
        await upload.reserve(request.content_length)
        await upload.receive(request.content.iter_chunked(UPLOAD_CHUNK))
    except UploadRefused as refused:
        return _refused_upload(request, refused)
    body_complete(request)
    try:
        stored = await upload.finish()
    except UploadRefused as late:  # over --user-storage after all (concurrent uploads)
        return http_error(int(late.error.code), late.error.message)
    return json_response({"file_id": stored.file_id, "name": stored.name, "size": stored.size,
                          "content_type": stored.content_type})


def header_text(value: str, longest: int = 1000) -> bool:
    """Whether a header value is short printable ASCII (raw non-UTF-8 bytes arrive as
    surrogates, which nothing downstream can store)."""
    return len(value) <= longest and value.isascii() and value.isprintable()


def _bad_header(request: web.Request, name: str) -> web.Response:
    request.app[WARN].warning("header", "rejected a malformed %s header from %s", name,
                              clean(request.remote))
    resp = http_error(400, f"malformed {name} header (printable ASCII expected)", 400)
    resp.force_close()  # the body is not read
    return resp


def _refused_upload(request: web.Request, refused: UploadRefused) -> web.Response:
    if refused.limit == "storage":
        request.app[WARN].warning("storage", "rejected an upload over --user-storage from %s",
                                  clean(request.remote))
    else:
        request.app[WARN].warning("upload size", "rejected upload over %d bytes from %s",
                                  request.app[SERVICES].limits.max_file_size,
                                  clean(request.remote))
    resp = http_error(int(refused.error.code), refused.error.message)
    resp.force_close()  # the rest of the body is not read
    return resp


async def handle_download(request: web.Request) -> web.StreamResponse:
    """GET /files/{file_id}: the bytes, for the uploader and members of chats it was sent to."""
    caller = await caller_of(request)
    try:
        f = await file_for_download(request.app[SERVICES], caller, request.match_info["file_id"])
    except errors.RpcError as err:
        return http_error(int(err.code), err.message)
    headers = {
        "Content-Type": f.content_type,
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(f.name)}",
        "X-Content-Type-Options": "nosniff",
    }
    if in_database(f):  # --file-store database
        streamed = await database_download(request, request.app[SERVICES], f, headers)
        return streamed or http_error(404, "file not found")
    return web.FileResponse(f.path, headers=headers)


async def handle_openrpc(request: web.Request) -> web.StreamResponse:
    """GET /openrpc.json, naming the URL this client reached as the server."""
    return json_response(document_for(request.app[SERVICES].openrpc, public_rpc_url(request)))


async def handle_docs(request: web.Request) -> web.StreamResponse:
    """GET /docs: the HTML reference, rendered on its first request (a third of a start's
    CPU otherwise, spent by every process whether or not anyone reads the docs)."""
    pages = request.app[STATIC]
    if "docs" not in pages:
        pages["docs"] = render_docs(request.app[SERVICES].openrpc).encode()
    return web.Response(body=pages["docs"], content_type="text/html", charset="utf-8")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors keep their status; a bug becomes a bare 500 (traceback only in the log)."""
    try:
        return await handler(request)
    except (web.HTTPException, asyncio.CancelledError):
        raise  # aiohttp answers these itself
    except ConnectionError:
        # The client went away, or was cut off at --read-timeout: not our bug, nothing to log
        # (aiohttp would log a traceback per connection), and nobody to answer.
        gone = web.Response(status=408)
        gone.force_close()
        return gone
    except StoreError as exc:  # the store's health log says it once, not per request
        return store_error(exc)
    except Exception:
        log.exception("internal error on %s %s", clean(request.method), clean(request.path))
        return http_error(500, "internal error")


def store_error(exc: StoreError) -> web.Response:
    """HTTP 503 (with Retry-After) or 507 with the JSON error body."""
    err = errors.from_store(exc)
    resp = json_response({"error": err.to_dict()}, int(err.code))
    if err.data and "retry_after" in err.data:
        resp.headers["Retry-After"] = str(err.data["retry_after"])
    return resp


async def handle_health(request: web.Request) -> web.StreamResponse:
    """GET /health: 200 when the database answers and the disk has room, else 503."""
    store = request.app[SERVICES].store
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(store.check(), 5)
    database = "ok" if store.health.database_ok else "unreachable"
    disk = store.health.disk
    ok = database == "ok" and disk == "ok"
    return json_response({"status": "ok" if ok else "degraded", "database": database,
                          "disk": disk}, 200 if ok else 503)


def make_store(settings: Settings) -> Store:
    """The configured backend."""
    if settings.store == "postgres":
        from store.postgres import PostgresStore  # asyncpg is loaded only when used
        assert settings.database_url
        return PostgresStore(settings.database_url)
    return SqliteStore(settings.db_path, power_safe=settings.durability == "power")


SHARED_SESSION_TTL = 3.0  # seconds a session lookup is reused with --store postgres


def create_app(settings: Settings,
               clock: Callable[[], float] | None = None) -> web.Application:
    """The app factory: routes plus resources opened and closed with the app (`clock`: the
    time source of every rule, `time.time` unless a test injects another)."""
    app = web.Application(client_max_size=settings.max_body, middlewares=[errors_as_json])
    app[SETTINGS] = settings
    app[STOPPING] = asyncio.Event()
    # Bodies of /rpc requests in memory at once, all connections together.
    app[BODY_BUDGET] = BodyBudget(max(16 * settings.max_body, 16 * 1024 * 1024))
    app[WARN] = RateLimitedLog(log)
    cors.install(app, settings.cors_origins)
    methods = build_registry()
    method_schemas = schemas.method_schemas()
    missing = set(methods) ^ set(method_schemas)
    if missing:
        raise RuntimeError(f"methods and schemas/ disagree on: {sorted(missing)}")
    openrpc = build_openrpc(methods)
    app[STATIC] = {}  # pages made once, on first request

    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        store = make_store(settings)
        await store.open()
        services = Services(store=store, limits=settings.limits, files_dir=settings.files_dir,
                            openrpc=openrpc, clock=clock or time.time,
                            # Another process may end a session on a shared database: its
                            # NOTIFY says so at once; should one be lost (the listener
                            # reconnecting), a cached session lives at most a few seconds.
                            session_cache=SessionCache() if settings.store == "sqlite"
                            else SessionCache(ttl=SHARED_SESSION_TTL),
                            files_in_database=settings.file_store == "database")
        app[SERVICES] = services
        app[DISPATCHER] = Dispatcher(methods, {n: s.params for n, s in method_schemas.items()},
                                     services, settings.max_batch, settings.max_response)
        # Batch answers being built at once, all requests together.
        app[DISPATCHER].memory = BodyBudget(max(16 * settings.max_response, 64 * 1024 * 1024))
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
    # HEAD gets its own handler: aiohttp would run the GET one, which acknowledges events.
    app.router.add_get("/poll", handle_poll, allow_head=False)
    app.router.add_route("HEAD", "/poll", handle_poll_head)
    app.router.add_post("/files", handle_upload)
    app.router.add_get("/files/{file_id}", handle_download)
    app.router.add_get("/openrpc.json", handle_openrpc)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/docs", handle_docs)
    add_client_routes(app)  # GET / and /static/: the browser client
    return app
