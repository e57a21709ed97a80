"""The async client library: one typed method per JSON-RPC method, plus poll and files."""
from __future__ import annotations

import asyncio
import itertools
import mimetypes
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .errors import MessengerError, RpcError, ServerUnavailable
from .models import (
    BlockedList,
    ChatResult,
    ConnectResult,
    DownloadResult,
    EditResult,
    Event,
    FileInfo,
    HistoryResult,
    JoinResult,
    LinkResult,
    PollResult,
    ReportResult,
    ScheduledList,
    SearchResult,
    SendResult,
    Status,
)
from .poll import EventHandler, PollLoop

ResultHook = Callable[[str, dict[str, Any]], None]
EventHook = Callable[[dict[str, Any]], None]
ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None when unknown)."""

CHUNK_SIZE = 64 * 1024
DEFAULT_REQUEST_TIMEOUT = 30.0
# The server cuts a poll's wait to --poll-timeout-max (60 s by default); the HTTP read timeout
# must outlast the longest wait or a healthy idle poll would look like a dead server.
LONGEST_POLL_WAIT = 60.0
POLL_READ_MARGIN = 30.0


def _drop_none(**params: Any) -> dict[str, Any]:
    """Params without the keys whose value is None (the server treats absent as default)."""
    return {key: value for key, value in params.items() if value is not None}


def poll_read_timeout(timeout: object = None) -> aiohttp.ClientTimeout:
    """The HTTP timeout of a long poll asking to wait `timeout` seconds (None: the default)."""
    wait = timeout if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) \
        else LONGEST_POLL_WAIT
    return aiohttp.ClientTimeout(total=None, sock_connect=10,
                                 sock_read=min(max(wait, 0), LONGEST_POLL_WAIT)
                                 + POLL_READ_MARGIN)


# Waits before the repeats of a send whose outcome is unknown (see `send_params`).
SEND_RETRY_DELAYS = (0.5, 1.0, 2.0)


def new_client_msg_id() -> str:
    """A fresh `client_msg_id`: the key that makes a send safe to retry."""
    return "c_" + secrets.token_urlsafe(12)


def _worth_retrying(exc: MessengerError) -> bool:
    """Whether a send failed in a way where repeating it may succeed (and is safe with
    its client_msg_id): the server unreachable, or 503 (its database restarting)."""
    return isinstance(exc, ServerUnavailable) or (
        isinstance(exc, RpcError) and exc.code == 503)


def _query_value(value: int | float) -> str:
    """A number as a query-string value, without a useless `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _http_error(status: int, reason: str | None, body: bytes) -> RpcError:
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


def _rpc_error(err: Any) -> RpcError:
    """An RpcError from a JSON-RPC `error` member, tolerating a malformed one."""
    if not isinstance(err, dict):
        return RpcError(-32603, "malformed error from server", err)
    code = err.get("code")
    message = err.get("message")
    return RpcError(code if isinstance(code, int) else -32603,
                    message if isinstance(message, str) else "unknown error",
                    err.get("data"))


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


async def _read_chunks(handle: _Reader, progress: ProgressCallback | None,
                       total: int | None) -> AsyncGenerator[bytes, None]:
    """Yield a file's content chunk by chunk, reading off the event loop."""
    done = 0
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, CHUNK_SIZE)
            if not chunk:
                return
            done += len(chunk)
            yield chunk
            if progress is not None:
                progress(done, total)
    finally:
        handle.close()


class MessengerClient:
    """An async client of one messenger server; use it as an async context manager."""

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

    async def __aenter__(self) -> MessengerClient:
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

    # -- transport -------------------------------------------------------------------------

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
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                asyncio.TimeoutError) as exc:
            raise ServerUnavailable(self.server_url, str(exc) or type(exc).__name__) from exc

    async def _exchange(self, method: str, path: str, *, timeout: aiohttp.ClientTimeout,
                        params: dict[str, str] | None = None, data: Any = None,
                        headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        async with self._request(method, path, timeout=timeout, params=params, data=data,
                                 headers=headers) as resp:
            try:
                body = await resp.read()
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    asyncio.TimeoutError) as exc:
                raise ServerUnavailable(self.server_url, str(exc) or "read failed") from exc
            return resp.status, resp.reason or "", body

    def _rpc_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=10)

    # -- JSON-RPC --------------------------------------------------------------------------

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
                raise _http_error(status, reason, body)
            raise RpcError(-32603, "the server's answer is not a JSON-RPC response")
        if "error" in doc:
            if "jsonrpc" not in doc and status != 200:
                raise _http_error(status, reason, body)
            raise _rpc_error(doc["error"])
        result = doc["result"]
        if not isinstance(result, dict):
            raise RpcError(-32603, "the server's result is not an object", result)
        if self.on_result is not None:
            self.on_result(method, result)
        return result

    async def connect(self, username: str, password: str,
                      client: str | None = None) -> ConnectResult:
        """Log in (registering a new username); the client keeps the returned token."""
        result = await self.call("session.connect", _drop_none(
            username=username, password=password, client=client))
        self.token = result["token"]
        return cast(ConnectResult, result)

    async def disconnect(self) -> None:
        """End this session; the token stops working."""
        await self.call("session.disconnect")
        self.token = None

    async def status(self) -> Status:
        """The user's read marker, chats, sessions, ban, quota and server facts."""
        return cast(Status, await self.call("session.status"))

    async def send(self, chat_id: str | None = None, to: str | None = None,
                   text: str | None = None, attachments: list[str] | None = None,
                   comment_to: str | None = None, send_at: str | None = None,
                   client_msg_id: str | None = None) -> SendResult:
        """Send (or schedule, with a future `send_at`) a message to a chat or a user.

        Safe to retry: see `send_params` (a fresh `client_msg_id` unless one is given).
        """
        return await self.send_params(_drop_none(
            chat_id=chat_id, to=to, text=text, attachments=attachments,
            comment_to=comment_to, send_at=send_at, client_msg_id=client_msg_id))

    async def send_params(self, params: dict[str, Any]) -> SendResult:
        """`messages.send` with these params, retried safely when the outcome is unknown.

        The send carries a `client_msg_id` (a fresh one unless `params` has one). When the
        server cannot be reached, the connection breaks before the answer, or it answers
        503, the same send is repeated with the same id (SEND_RETRY_DELAYS): the server
        answers a repeat with the first message and sends nothing twice.
        """
        params = dict(params)
        params.setdefault("client_msg_id", new_client_msg_id())
        for delay in (*SEND_RETRY_DELAYS, None):
            try:
                return cast(SendResult, await self.call("messages.send", params))
            except (ServerUnavailable, RpcError) as exc:
                if delay is None or not _worth_retrying(exc):
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def edit(self, message_id: str, text: str) -> EditResult:
        """Replace the text of a message you sent."""
        return cast(EditResult, await self.call("messages.edit", {
            "message_id": message_id, "text": text}))

    async def delete(self, message_id: str) -> None:
        """Delete a message you sent (or any message of a group chat you own)."""
        await self.call("messages.delete", {"message_id": message_id})

    async def search(self, query: str, chat_id: str | None = None, before: str | None = None,
                     limit: int | None = None) -> SearchResult:
        """Messages of your chats with every word of `query`, newest first."""
        return cast(SearchResult, await self.call("messages.search", _drop_none(
            query=query, chat_id=chat_id, before=before, limit=limit)))

    async def mark_read(self, chat_id: str, message_id: str | None = None) -> None:
        """Mark a chat read up to a message (default: its newest); never moves back."""
        await self.call("chats.read", _drop_none(chat_id=chat_id, message_id=message_id))

    async def history(self, chat_id: str, before: str | None = None,
                      limit: int | None = None) -> HistoryResult:
        """Messages of a chat, oldest first, optionally before a message id."""
        return cast(HistoryResult, await self.call("messages.history", _drop_none(
            chat_id=chat_id, before=before, limit=limit)))

    async def scheduled(self) -> ScheduledList:
        """The user's pending scheduled messages."""
        return cast(ScheduledList, await self.call("messages.scheduled"))

    async def cancel(self, scheduled_id: str) -> None:
        """Cancel a pending scheduled message."""
        await self.call("messages.cancel", {"scheduled_id": scheduled_id})

    async def report(self, username: str, reason: str | None = None) -> ReportResult:
        """Report a user; enough distinct reports ban them from sending."""
        return cast(ReportResult, await self.call("users.report", _drop_none(
            username=username, reason=reason)))

    async def create_chat(self, title: str, members: list[str] | None = None) -> ChatResult:
        """Create a private group chat owned by the caller."""
        return cast(ChatResult, await self.call("chats.create", _drop_none(
            title=title, members=members)))

    async def invite(self, chat_id: str, username: str) -> None:
        """Add a user to a chat the caller owns."""
        await self.call("chats.invite", {"chat_id": chat_id, "username": username})

    async def link(self, chat_id: str) -> LinkResult:
        """Make a fresh join link for a chat the caller owns (the previous one stops working)."""
        return cast(LinkResult, await self.call("chats.link", {"chat_id": chat_id}))

    async def join(self, link: str) -> JoinResult:
        """Ask to join a chat through its link."""
        return cast(JoinResult, await self.call("chats.join", {"link": link}))

    async def approve(self, chat_id: str, username: str) -> None:
        """Accept a pending join request."""
        await self.call("chats.approve", {"chat_id": chat_id, "username": username})

    async def decline(self, chat_id: str, username: str) -> None:
        """Refuse a pending join request."""
        await self.call("chats.decline", {"chat_id": chat_id, "username": username})

    async def leave(self, chat_id: str) -> None:
        """Leave a chat (not the general chat)."""
        await self.call("chats.leave", {"chat_id": chat_id})

    async def block(self, username: str) -> None:
        """Block a user: they can no longer message you 1-to-1, invite you or add you."""
        await self.call("users.block", {"username": username})

    async def unblock(self, username: str) -> None:
        """Lift a block."""
        await self.call("users.unblock", {"username": username})

    async def blocked(self) -> BlockedList:
        """The usernames you block."""
        return cast(BlockedList, await self.call("users.blocked"))

    async def discover(self) -> dict[str, Any]:
        """The server's OpenRPC document."""
        return await self.call("rpc.discover")

    async def events_poll(self, cursor: int | None = None, timeout: float | None = None,
                          limit: int | None = None) -> PollResult:
        """`events.poll`: the same answer as `poll()`, through JSON-RPC."""
        result = await self.call("events.poll", _drop_none(
            cursor=cursor, timeout=timeout, limit=limit), timeout=poll_read_timeout(timeout))
        if self.on_event is not None:
            for event in result.get("events", []):
                self.on_event(event)
        return cast(PollResult, result)

    # -- long poll -------------------------------------------------------------------------

    async def poll(self, cursor: int | None = None, timeout: float | None = None,
                   limit: int | None = None) -> PollResult:
        """One long poll: events after `cursor` (from the read marker when None)."""
        query = {key: _query_value(value) for key, value in
                 _drop_none(cursor=cursor, timeout=timeout, limit=limit).items()}
        wait = LONGEST_POLL_WAIT if timeout is None else min(timeout, LONGEST_POLL_WAIT)
        read_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                             sock_read=wait + POLL_READ_MARGIN)
        status, reason, body = await self._exchange("GET", "/poll", timeout=read_timeout,
                                                    params=query)
        if status != 200:
            raise _http_error(status, reason, body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RpcError(-32700, "the server's poll answer is not JSON") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            raise RpcError(-32603, "the server's poll answer has no event list", doc)
        if self.on_event is not None:
            for event in doc["events"]:
                self.on_event(event)
        return cast(PollResult, doc)

    def poll_loop(self, handler: EventHandler | None = None, *, cursor: int | None = None,
                  timeout: float | None = None, limit: int | None = None) -> PollLoop:
        """A PollLoop over this client (not started: call `.start()` or `.run()`)."""
        return PollLoop(self, handler, cursor=cursor, timeout=timeout, limit=limit)

    def start_poll_loop(self, handler: EventHandler, *, cursor: int | None = None,
                        timeout: float | None = None) -> PollLoop:
        """Start a PollLoop task calling `handler` for every event; stop it with `.stop()`."""
        loop = self.poll_loop(handler, cursor=cursor, timeout=timeout)
        loop.start()
        return loop

    async def events(self, cursor: int | None = None, *, timeout: float | None = None,
                     limit: int | None = None) -> AsyncIterator[Event]:
        """Every event from `cursor` on, forever, reconnecting with backoff when needed."""
        loop = self.poll_loop(cursor=cursor, timeout=timeout, limit=limit)
        async for batch in loop.batches():
            for event in batch:
                yield event

    # -- files -----------------------------------------------------------------------------

    async def upload(self, source: str | os.PathLike[str] | bytes, name: str | None = None,
                     content_type: str | None = None,
                     progress: ProgressCallback | None = None) -> FileInfo:
        """Upload a file (streamed from disk) or bytes; returns its `file_id` and metadata."""
        if isinstance(source, bytes):
            if name is None:
                raise ValueError("upload of bytes needs a name")
            total = len(source)
            handle: _Reader = _BytesReader(source)
        else:
            path = Path(source)
            name = name if name is not None else path.name
            opened = open(path, "rb")  # closed by _read_chunks
            total = os.fstat(opened.fileno()).st_size
            handle = opened
        if content_type is None:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                        sock_read=self.request_timeout)
        chunks = _read_chunks(handle, progress, total)
        try:
            status, reason, body = await self._exchange(
                "POST", "/files", timeout=timeout, params={"name": name}, data=chunks,
                headers={"Content-Type": content_type, "Content-Length": str(total)})
        finally:
            await chunks.aclose()
        if status != 200:
            raise _http_error(status, reason, body)
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
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                        sock_read=self.request_timeout)
        async with self._request("GET", "/files/" + quote(file_id, safe=""),
                                 timeout=timeout) as resp:
            if resp.status != 200:
                raise _http_error(resp.status, resp.reason, await resp.read())
            disposition = resp.content_disposition
            served_name = disposition.filename if disposition is not None else None
            if dest.is_dir():
                dest = dest / _safe_file_name(served_name or file_id)
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
                    dest = _move_without_overwriting(partial, dest)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                    asyncio.TimeoutError) as exc:
                partial.unlink(missing_ok=True)
                raise ServerUnavailable(self.server_url, str(exc) or "download broke") from exc
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            result = DownloadResult(path=str(dest), size=done, name=served_name,
                                    content_type=resp.headers.get("Content-Type"))
            if dest != wanted:
                result["renamed_from"] = str(wanted)
            return result


def _move_without_overwriting(partial: Path, dest: Path) -> Path:
    """Move `partial` to `dest`, or to `dest (1)`, `dest (2)`... if taken; where it went.

    A hard link fails when the name exists, so two downloads cannot pick the same name."""
    for n in range(10000):
        candidate = dest if n == 0 else dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
        try:
            os.link(partial, candidate)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some file systems): check, then rename
            if candidate.exists():
                continue
            os.replace(partial, candidate)
            return candidate
        partial.unlink()
        return candidate
    raise FileExistsError(f"no free name for {dest}")


def _safe_file_name(name: str) -> str:
    """A server-given file name reduced to a harmless base name."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return base if base not in ("", ".", "..") else "download"


class _BytesReader:
    """A minimal binary reader over bytes, so uploads of bytes stream like files do."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos:end])
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        self._view.release()


__all__ = ["MessengerClient", "MessengerError", "ProgressCallback", "RpcError",
           "ServerUnavailable"]
