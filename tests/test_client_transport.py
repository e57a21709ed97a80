"""Transport failures reach the caller as ServerUnavailable with a reason a person reads.

Tiny raw-socket servers on loopback misbehave on purpose: refuse, hang, hang up, cut an
answer short. No aiohttp internals (`ssl:default`, `ContentLengthError`) may show.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from client import MessengerClient, ServerUnavailable
from tests.support import free_port

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def misbehaving(behaviour: Behaviour) -> AsyncIterator[str]:
    """A loopback server acting out `behaviour` on every connection; yields its URL."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await behaviour(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close without answering."""


async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Promise 1000 bytes, send 10, close."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: 1000\r\n\r\n0123456789")
    await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Never answer."""
    await asyncio.sleep(30)


def assert_plain(exc: ServerUnavailable, reason: str) -> None:
    assert exc.reason == reason, exc.reason
    for internal in ("ssl:", "ContentLengthError", "aiohttp", "Errno", "<"):
        assert internal not in str(exc), str(exc)


async def test_refused_connection() -> None:
    async with MessengerClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.status()
    assert_plain(info.value, "connection refused")


async def test_hang_up_before_the_answer() -> None:
    async with misbehaving(hang_up) as url, MessengerClient(url) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.call("session.status")
        assert_plain(info.value, "the connection was closed")
        with pytest.raises(ServerUnavailable) as info:
            await client.poll(timeout=0)
        assert_plain(info.value, "the connection was closed")


async def test_an_answer_cut_short() -> None:
    async with misbehaving(cut_short) as url, MessengerClient(url) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.call("session.status")
    assert_plain(info.value, "the answer was cut off")


async def test_no_answer_in_time() -> None:
    async with misbehaving(silent) as url, MessengerClient(url, request_timeout=0.3) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.call("session.status")
    assert_plain(info.value, "no answer in time")


async def test_a_download_cut_short_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "x.bin"
    async with misbehaving(cut_short) as url, MessengerClient(url) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.download("f_x", dest)
    assert_plain(info.value, "the answer was cut off")
    assert list(tmp_path.iterdir()) == []
