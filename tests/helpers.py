"""Small helpers shared by the end-to-end rule, group and file tests."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import aiohttp

from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess, unique_name

Event = dict[str, Any]
AnyServer = ServerProcess | InProcessServer  # a subprocess, or the app in this process


def ts(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rfc3339(when: float) -> str:
    """An RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(when, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


async def connect_users(http: aiohttp.ClientSession, server: AnyServer, count: int,
                        prefix: str = "u") -> list[Api]:
    """`count` freshly registered, logged-in users, each with its stream cursor at the start."""
    apis = [Api(http, server.url) for _ in range(count)]
    results = await asyncio.gather(*(a.connect(unique_name(prefix)) for a in apis))
    for a, result in zip(apis, results):
        a.cursor = result["cursor"]
    return apis


async def events_until(api: Api, predicate: Callable[[Event], bool],
                       timeout: float = 5.0) -> list[Event]:
    """Long-poll from the kept cursor until an event matching `predicate`; every event seen."""
    deadline = time.monotonic() + timeout
    seen: list[Event] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{api.username}: no matching event within {timeout}s: {seen}")
        body = await api.poll(api.cursor, timeout=min(remaining, 4.5))
        seen.extend(body["events"])
        if any(predicate(e) for e in body["events"]):
            return seen


async def drain(api: Api) -> list[Event]:
    """Every event waiting after the kept cursor, without waiting for new ones."""
    seen: list[Event] = []
    while True:
        body = await api.poll(api.cursor, timeout=0)
        seen.extend(body["events"])
        if not body["more"]:
            return seen


async def all_events_since(api: Api, cursor: int) -> list[Event]:
    """Every event after `cursor` (the kept cursor is left alone)."""
    seen: list[Event] = []
    while True:
        body = await api.poll(cursor, timeout=0, advance=False)
        seen.extend(body["events"])
        if not body["more"]:
            return seen
        cursor = body["cursor"]


def message_texts(events: list[Event], chat_id: str | None = None) -> list[str | None]:
    """Texts of the `message` events (optionally only those of one chat)."""
    return [e["message"]["text"] for e in events if e["type"] == "message"
            and (chat_id is None or e["message"]["chat_id"] == chat_id)]


def chat_of(status: dict[str, Any], chat_id: str) -> dict[str, Any] | None:
    """One chat of a session.status result, or None."""
    for chat in status["chats"]:
        if chat["chat_id"] == chat_id:
            found: dict[str, Any] = chat
            return found
    return None


def db_rows(server: AnyServer, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a query on the server's database, opened read-only beside the running server."""
    uri = f"file:{server.data_dir / 'messenger.db'}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        return list(conn.execute(sql, args).fetchall())
    finally:
        conn.close()


def stored_files(server: AnyServer) -> set[str]:
    """Names of everything under <data_dir>/files (partial uploads included)."""
    files_dir: Path = server.data_dir / "files"
    return {p.name for p in files_dir.iterdir()} if files_dir.exists() else set()


async def sleep_until(when: float) -> None:
    """Sleep until a wall-clock time (the server's clock is the same machine's)."""
    delay = when - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
