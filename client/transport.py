"""The HTTP side of the client: JSON-RPC exchange, error mapping, the long poll and files.

`MessengerClient` (client/api.py) adds one typed method per JSON-RPC method on top of this.
Every transport failure (aiohttp, the socket, a timeout) becomes `ServerUnavailable` through
`server_unavailable`, the one place that maps them.
"""
from __future__ import annotations

import asyncio
import itertools
import mimetypes
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .errors import RpcError, ServerUnavailable
from .files import (
    CHUNK_SIZE,
    BytesReader,
    ProgressCallback,
    Reader,
    move_without_overwriting,
    read_chunks,
    safe_file_name,
)
from .models import DownloadResult, FileInfo, PollResult

ResultHook = Callable[[str, dict[str, Any]], None]
EventHook = Callable[[dict[str, Any]], None]

DEFAULT_REQUEST_TIMEOUT = 30.0
# The server cuts a poll's wait to --poll-timeout-max (60 s by default); the HTTP read timeout
# must outlast the longest wait or a healthy idle poll would look like a dead server.
LONGEST_POLL_WAIT = 60.0
POLL_READ_MARGIN = 30.0

TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    asyncio.TimeoutError, ConnectionError)
"""Failures of the connection itself (never of a local file): the server is unavailable."""


def server_unavailable(url: str, exc: BaseException) -> ServerUnavailable:
    """The one map from a transport failure to ServerUnavailable, with a reason a person
    reads (no aiohttp internals: see `errors.plain_reason`)."""
    if isinstance(exc, asyncio.TimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, aiohttp.ClientPayloadError):  # e.g. fewer bytes than promised
        reason = "the answer was cut off"
    else:
        reason = str(exc) or type(exc).__name__
    return ServerUnavailable(url, reason)


def drop_none(**params: Any) -> dict[str, Any]:
    """Params without the keys whose value is None (the server treats absent as default)."""
    return {key: value for key, value in params.items() if value is not None}


def poll_read_timeout(timeout: object = None) -> aiohttp.ClientTimeout:
    """The HTTP timeout of a long poll asking to wait `timeout` seconds (None: the default)."""
    wait = timeout if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) \
        else LONGEST_POLL_WAIT
    return aiohttp.ClientTimeout(total=None, sock_connect=10,
                                 sock_read=min(max(wait, 0), LONGEST_POLL_WAIT)
                                 + POLL_READ_MARGIN)


def query_value(value: int | float) -> str:
    """A number as a query-string value, without a useless `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def http_error(status: int, reason: str | None, body: bytes) -> RpcError:
    """An RpcError for a non-2xx HTTP answer whose code is the HTTP status."""
    message = reason or f"HTTP {status}"
    data: Any = None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        if isinstance(err.get("message"), str):
            message = err["message"]
        data = err.get("data")
    return RpcError(status, message, data)


def rpc_error(err: Any) -> RpcError:
    """An RpcError from a JSON-RPC `error` member, tolerating a malformed one."""
    if not isinstance(err, dict):
        return RpcError(-32603, "malformed error from server", err)
    code = err.get("code")
    message = err.get("message")
    return RpcError(code if isinstance(code, int) else -32603,
                    message if isinstance(message, str) else "unknown error",
                    err.get("data"))


class Transport:
    """HTTP to one messenger server: `call`, `poll`, `upload`, `download`."""

    def __init__(
        self,
        server_url: str,
        *,
        token: str | None = None,
        session: aiohttp.ClientSession | None = None,
        on_result: ResultHook | None = None,
        on_event: EventHook | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        url = URL(server_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) server URL: {server_url!r}")
        self.server_url = str(url).rstrip("/")
        self.token = token
        self.on_result = on_result
        self.on_event = on_event
        self.request_timeout = request_timeout
        self._session = session
        self._owns_session = session is None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        self._http()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
            self._owns_session = True
        return self._session

    def _headers(self) -> dict[str, str]:
        if self.token is None:
            return {}
        return {"Authorization": f"Bearer {self.token}"}

    @asynccontextmanager
    async def _request(self, method: str, path: str, *, timeout: aiohttp.ClientTimeout,
                       params: dict[str, str] | None = None, data: Any = None,
                       headers: dict[str, str] | None = None,
                       ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open one HTTP exchange; connection trouble becomes ServerUnavailable."""
        all_headers = self._headers()
        all_headers.update(headers or {})
        try:
            async with self._http().request(method, self.server_url + path, params=params,
                                            data=data, headers=all_headers,
                                            timeout=timeout) as resp:
                yield resp
        except TRANSPORT_ERRORS as exc:
            raise server_unavailable(self.server_url, exc) from exc

    async def _exchange(self, method: str, path: str, *, timeout: aiohttp.ClientTimeout,
                        params: dict[str, str] | None = None, data: Any = None,
                        headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        async with self._request(method, path, timeout=timeout, params=params, data=data,
                                 headers=headers) as resp:
            return resp.status, resp.reason or "", await resp.read()

    def _rpc_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=10)

    def _file_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=10,
                                     sock_read=self.request_timeout)

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   timeout: aiohttp.ClientTimeout | None = None) -> dict[str, Any]:
        """Call one JSON-RPC method and return its result object; errors raise RpcError."""
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                   "params": params if params is not None else {}}
        status, reason, body = await self._exchange(
            "POST", "/rpc", timeout=timeout or self._rpc_timeout(), data=orjson.dumps(request),
            headers={"Content-Type": "application/json"})
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or ("result" not in doc and "error" not in doc):
            if status != 200:
                raise http_error(status, reason, body)
            raise RpcError(-32603, "the server's answer is not a JSON-RPC response")
        if "error" in doc:
            if "jsonrpc" not in doc and status != 200:
                raise http_error(status, reason, body)
            raise rpc_error(doc["error"])
        result = doc["result"]
        if not isinstance(result, dict):
            raise RpcError(-32603, "the server's result is not an object", result)
        if self.on_result is not None:
            self.on_result(method, result)
        return result

    def _heard(self, events: list[Any]) -> None:
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    async def poll(self, cursor: int | None = None, timeout: float | None = None,
                   limit: int | None = None) -> PollResult:
        """One long poll: events after `cursor` (from the read marker when None)."""
        query = {key: query_value(value) for key, value in
                 drop_none(cursor=cursor, timeout=timeout, limit=limit).items()}
        status, reason, body = await self._exchange("GET", "/poll",
                                                    timeout=poll_read_timeout(timeout),
                                                    params=query)
        if status != 200:
            raise http_error(status, reason, body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RpcError(-32700, "the server's poll answer is not JSON") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            raise RpcError(-32603, "the server's poll answer has no event list", doc)
        self._heard(doc["events"])
        return cast(PollResult, doc)

    async def upload(self, source: str | os.PathLike[str] | bytes, name: str | None = None,
                     content_type: str | None = None,
                     progress: ProgressCallback | None = None) -> FileInfo:
        """Upload a file (streamed from disk) or bytes; returns its `file_id` and metadata."""
        if isinstance(source, bytes):
            if name is None:
                raise ValueError("upload of bytes needs a name")
            total = len(source)
            handle: Reader = BytesReader(source)
        else:
            path = Path(source)
            name = name if name is not None else path.name
            opened = open(path, "rb")  # closed by read_chunks
            total = os.fstat(opened.fileno()).st_size
            handle = opened
        if content_type is None:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        chunks = read_chunks(handle, progress, total)
        try:
            status, reason, body = await self._exchange(
                "POST", "/files", timeout=self._file_timeout(), params={"name": name},
                data=chunks,
                headers={"Content-Type": content_type, "Content-Length": str(total)})
        finally:
            await chunks.aclose()
        if status != 200:
            raise http_error(status, reason, body)
        result = orjson.loads(body)
        if not isinstance(result, dict):
            raise RpcError(-32603, "the server's upload answer is not an object", result)
        return cast(FileInfo, result)

    async def download(self, file_id: str, dest_path: str | os.PathLike[str],
                       progress: ProgressCallback | None = None,
                       overwrite: bool = True) -> DownloadResult:
        """Stream a file to `dest_path` (written whole or not at all).

        When `dest_path` is a directory the file keeps the name the server gives it. With
        `overwrite=False` an existing file is kept and the download gets a free name beside
        it (`x (1).pdf`); the result's `renamed_from` then names the existing one.
        """
        dest = Path(dest_path)
        async with self._request("GET", "/files/" + quote(file_id, safe=""),
                                 timeout=self._file_timeout()) as resp:
            if resp.status != 200:
                raise http_error(resp.status, resp.reason, await resp.read())
            disposition = resp.content_disposition
            served_name = disposition.filename if disposition is not None else None
            if dest.is_dir():
                dest = dest / safe_file_name(served_name or file_id)
            partial = dest.with_name(dest.name + ".part")
            total = resp.content_length
            done = 0
            try:
                with open(partial, "wb") as out:
                    async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
                        await asyncio.to_thread(out.write, chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
                wanted = dest
                if overwrite:
                    os.replace(partial, dest)
                else:
                    dest = move_without_overwriting(partial, dest)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise  # a broken connection: _request maps it to ServerUnavailable
            result = DownloadResult(path=str(dest), size=done, name=served_name,
                                    content_type=resp.headers.get("Content-Type"))
            if dest != wanted:
                result["renamed_from"] = str(wanted)
            return result
