"""Connection-level limits: caps per server and per address, read deadlines, slow readers.

aiohttp's `web.Server` is the protocol factory of the listening socket; `GuardedServer`
makes each connection's protocol a `GuardedHandler`, which
- refuses a connection at once (HTTP 503, then closed) past `--max-connections` in all or
  `--max-connections-per-address` from one peer address;
- gives each request `--read-timeout` seconds from its first byte until its body is complete
  (a new connection the same from its opening); an overrun is answered 408 when no request
  handler is running yet, and the connection is closed.
- never closes a connection for the read deadline once its request's body is complete (the
  handler says so with `body_complete`, or the parser fed its end): a request being handled
  or answered is not cut;
- watches answers waiting for slow readers (`watch_writes`): a connection whose write buffer
  has made no progress for `--read-timeout` seconds is aborted, and past a process-wide budget
  of buffered answer bytes the most stalled connections are aborted first;
- at the overall cap, closes the longest idle keep-alive connection to admit a new one.
Idle keep-alive connections otherwise follow the ordinary keep-alive timeout.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

from methods.logsafe import RateLimitedLog, clean
from rpc.budget import release_memory

log = logging.getLogger(__name__)


def _canned(status: str, code: int, message: str) -> bytes:
    """A complete HTTP response with our JSON error body, closing the connection."""
    body = b'{"error":{"code":%d,"message":"%s"}}' % (code, message.encode())
    return (b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (status.encode(), len(body))) + body


REFUSED = _canned("503 Service Unavailable", 503, "too many connections; try again later")
TIMED_OUT = _canned("408 Request Timeout", 408, "request not received within the read timeout")


class ConnectionGuard:
    """Open connections in all and per peer address; logs one line per change of state."""

    def __init__(self, max_total: int, max_per_address: int, read_timeout: float,
                 exempt: frozenset[str] = frozenset(),
                 write_budget: int = 64 * 1024 * 1024) -> None:
        self.max_total = max_total
        # Bytes of answers buffered for slow readers, all connections together.
        self.write_budget = write_budget
        self.handlers: set[GuardedHandler] = set()  # admitted, open connections
        self.aborted_slow = 0  # connections aborted by the write watchdog (for the log)
        self.max_per_address = max_per_address
        # Trusted proxies carry many clients' connections: only the overall cap holds them.
        self.exempt = exempt
        self.read_timeout = read_timeout
        self.total = 0
        self.by_address: dict[str, int] = {}
        self.refused_total = 0  # refused while at the overall cap (0: not at it)
        self.refused_by_address: dict[str, int] = {}  # addresses at their cap, refusals
        self.timeouts = RateLimitedLog(log, per_second=5)  # timeouts, malformed requests
        self.accept_failures = 0

    def admit(self, address: str) -> bool:
        """Count a new connection, or refuse it (False)."""
        self.accept_recovered()
        if self.total >= self.max_total and address not in self.exempt:
            count = self.by_address.get(address, 0)
            if count < self.max_per_address:
                self.close_idle()  # room for a newcomer: the longest idle keep-alive goes
        if self.total >= self.max_total:
            if not self.refused_total:
                log.warning("%d connections open: refusing new ones", self.total)
            self.refused_total += 1
            return False
        count = self.by_address.get(address, 0)
        if count >= self.max_per_address and address not in self.exempt:
            refused = self.refused_by_address.get(address, 0)
            if not refused:
                log.warning("%d connections open from %s: refusing more from it", count,
                            clean(address))
            self.refused_by_address[address] = refused + 1
            return False
        self.total += 1
        self.by_address[address] = count + 1
        return True

    def leave(self, address: str) -> None:
        """A counted connection closed."""
        self.total -= 1
        left = self.by_address.get(address, 1) - 1
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)
        if self.refused_total and self.total < self.max_total:
            log.info("accepting connections again (%d refused meanwhile)", self.refused_total)
            self.refused_total = 0
        if address in self.refused_by_address and left < self.max_per_address:
            log.info("accepting connections from %s again (%d refused meanwhile)",
                     clean(address), self.refused_by_address.pop(address))

    def close_idle(self) -> bool:
        """Close the longest idle keep-alive connection (none: False).

        Its close is counted at once, so the caller's connection takes its place."""
        idle = [h for h in self.handlers if h.idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda h: h.idle_since())
        self.timeouts.log(logging.INFO, "idle", "at %d connections: closing an idle "
                          "keep-alive connection of %s", self.total, clean(oldest.address))
        oldest.drop()
        return True

    def check_writes(self, now: float) -> None:
        """One watchdog round over answers waiting for their readers.

        A connection whose write buffer made no progress for `read_timeout` seconds is
        aborted (abort() frees the buffer); while the buffered bytes of all connections
        together pass `write_budget`, the connections stalled the longest (at least a
        second) are aborted first."""
        stalled: list[tuple[float, int, GuardedHandler]] = []
        total = 0
        for handler in list(self.handlers):
            size = handler.buffered(now)
            if not size:
                continue
            since = handler.stalled_since
            if since is not None and now - since >= self.read_timeout:
                handler.abort_slow("not reading its answer for %g s" % self.read_timeout)
                continue
            total += size
            if since is not None and now - since >= 1.0:
                stalled.append((since, size, handler))
        if total > self.write_budget:
            stalled.sort(key=lambda entry: entry[0])
            for _, size, handler in stalled:
                if total <= self.write_budget:
                    break
                handler.abort_slow("over the budget of answers waiting for slow readers")
                total -= size

    async def watch_writes(self, interval: float = 0.5) -> None:
        """Run `check_writes` every `interval` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        rounds = 0
        while True:
            await asyncio.sleep(interval)
            before = self.aborted_slow
            self.check_writes(loop.time())
            rounds += 1
            if self.aborted_slow != before or rounds % 10 == 0:
                release_memory()  # hand freed buffers back to the system (a few ms)

    def accept_failed(self, exc: BaseException | None) -> None:
        """accept() failed for lack of descriptors or memory: one line until it recovers."""
        if not self.accept_failures:
            log.error("cannot accept connections: %s (%d open); retrying", exc, self.total)
        self.accept_failures += 1

    def accept_recovered(self) -> None:
        """A connection was accepted again after failures."""
        if self.accept_failures:
            log.info("accepting connections again after %d failed attempts",
                     self.accept_failures)
            self.accept_failures = 0


class GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with connection caps and a read deadline."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.address: str | None = None  # set when the connection was admitted
        self.deadline: asyncio.TimerHandle | None = None
        self.arriving = False  # a request has started arriving and is not complete yet
        self.body: StreamReader | None = None  # the newest request's body, until complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit or refuse (503 and close, at once); start the first request's deadline."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "unix"
        if not self.guard.admit(address):
            self._force_close = True  # data_received ignores whatever the client sends
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSED)
            transport.close()
            return
        self.address = address
        self.stalled_since: float | None = None  # write buffer stuck since (loop time)
        self.write_mark = 0  # write buffer size at the last watchdog round
        self.guard.handlers.add(self)
        super().connection_made(transport)
        self._arm()

    def body_complete(self) -> None:
        """The request handler has the whole body: the read deadline no longer applies."""
        self.body = None
        self.arriving = False
        self._disarm()

    def waiting(self) -> bool:
        """Waiting for a request: none under way, none received and not yet started."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._request_in_progress

    def idle(self) -> bool:
        """An idle keep-alive connection: it was answered and waits for its next request
        (one that never sent a request is the read deadline's)."""
        return (self._request_count > 0 and self.waiting() and not self.arriving
                and not self._messages and self.transport is not None
                and not self.transport.get_write_buffer_size())

    def idle_since(self) -> float:
        """When the connection became idle (its keep-alive deadline, same timeout for all)."""
        return float(self._next_keepalive_close_time)

    def drop(self) -> None:
        """Close now, uncounting the connection at once."""
        self._disarm()
        if self.address is not None:
            self.guard.handlers.discard(self)
            self.guard.leave(self.address)
            self.address = None
        self.force_close()

    def buffered(self, now: float) -> int:
        """Bytes waiting in the write buffer; notes when it last made progress."""
        transport = self.transport
        size = transport.get_write_buffer_size() if transport is not None else 0
        if not size:
            self.stalled_since = None
        elif self.stalled_since is None or size < self.write_mark:
            self.stalled_since = now  # new bytes waiting, or the reader took some
        self.write_mark = size
        return size

    def abort_slow(self, why: str) -> None:
        """Abort a connection whose reader does not take its answer (frees the buffer)."""
        self.guard.aborted_slow += 1
        self.guard.timeouts.warning("slow reader", "aborted a connection of %s: %s",
                                    clean(self.address), why)
        transport = self.transport
        self.drop()
        if transport is not None:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.abort()

    def _arm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self._loop.call_later(self.guard.read_timeout, self._overrun)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def data_received(self, data: bytes) -> None:
        """Feed the parser; the deadline runs from a request's first byte to its body's end."""
        if self._force_close or self._close or not data:
            super().data_received(data)
            return
        if not self.arriving:
            self.arriving = True
            self._arm()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed and self._messages:
            self.body = self._messages[-1][1]
        if self.body is not None and self.body.is_eof():
            self.body = None
            self.arriving = False
            self._disarm()

    def _overrun(self) -> None:
        self.deadline = None
        if self._force_close or self.transport is None:
            return
        if self.body is not None and self.body.is_eof():
            # The parser fed the body's end outside data_received (it holds bytes back past
            # the reader's high-water mark): the request is complete and being handled.
            self.body_complete()
            return
        self.guard.timeouts.warning("timeout", "request from %s not received within %g s",
                                    clean(self.address), self.guard.read_timeout)
        if not self._request_in_progress and self.arriving:
            self.transport.write(TIMED_OUT)  # still in the headers: nobody answered yet
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Malformed requests (the parser's 4xx) get a JSON 400 and one rate-limited line,
        not a traceback each; 5xx stay aiohttp's (a bug, logged in full)."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = str(getattr(exc, "message", None) or message or exc or "").split("\n")[0]
        self.guard.timeouts.warning("bad request", "malformed request from %s: %s",
                                    clean(self.address), clean(reason))
        body = orjson.dumps({"error": {"code": status, "message": f"bad request: {reason}"}})
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.force_close()
        return resp

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the deadline and uncount the connection."""
        self._disarm()
        if self.address is not None:
            self.guard.handlers.discard(self)
            self.guard.leave(self.address)
            self.address = None
        super().connection_lost(exc)


class GuardedServer(web.Server):
    """The protocol factory: every connection gets a `GuardedHandler`."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> GuardedHandler:
        """A protocol for one new connection."""
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Let requests under way finish (up to `timeout`), but close at once connections
        that can only wait. aiohttp's close() wakes a connection waiting for its next
        request; one accepted as shutdown began starts waiting only afterwards, for a
        request that it then ignores (no data is read once closing), until `timeout`."""
        await asyncio.sleep(0)  # just-accepted connections reach their wait
        for conn in list(self._connections):
            if isinstance(conn, GuardedHandler) and conn.waiting():
                conn.drop()
        await super().shutdown(timeout)


class GuardedAppRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `GuardedServer`."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation,
                             loop=asyncio.get_running_loop(), guard=self.guard,
                             **plain._kwargs)


def body_complete(request: BaseRequest) -> None:
    """Tell the connection's guard that `request`'s body has been read in full."""
    protocol = request.protocol
    if isinstance(protocol, GuardedHandler):
        protocol.body_complete()


_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, guard: ConnectionGuard) -> None:
    """Out-of-descriptor accept() failures log one line per episode, not a traceback each."""
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            guard.accept_failed(exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
