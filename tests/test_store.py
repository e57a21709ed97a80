"""One store test suite, run against every backend (SQLite and PostgreSQL)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator

import pytest

from store.base import Store
from store.models import GENERAL_CHAT, Chat, ChatId, Scheduled, ScheduledId, StoredMessage
from store.models import MessageId, User
from store.postgres import PostgresStore
from store.sql import SqlTx
from store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An unopened store of each kind."""
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "messenger.db")
    return PostgresStore(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(backend: Store) -> AsyncIterator[Store]:
    await backend.open()
    yield backend
    await backend.close()


async def make_user(store: Store, name: str) -> User:
    async def create(tx: SqlTx) -> User:
        user = await tx.create_user(name, "hash", time.time())
        assert user is not None
        return user
    return await store.write(create)


def message(chat_id: str, author: User, text: str, expires: float) -> StoredMessage:
    now = time.time()
    return StoredMessage(MessageId(f"m_{text}"), ChatId(chat_id), author.username,
                         author.user_id, text, "[]", None, now, expires, 0)


async def send(store: Store, chat_id: str, author: User, text: str,
               ttl: float = 3600) -> StoredMessage:
    m = message(chat_id, author, text, time.time() + ttl)
    return await store.write(lambda tx: tx.insert_message(m, b'{"type":"message"}'))


async def test_users_are_unique_case_insensitively_and_join_general(store: Store) -> None:
    alice = await make_user(store, "Alice")
    again = await store.write(lambda tx: tx.create_user("ALICE", "h", time.time()))
    assert again is None
    found = await store.read(lambda tx: tx.find_user("alice"))
    assert found is not None and found.user_id == alice.user_id and found.username == "Alice"
    assert await store.read(lambda tx: tx.is_member(GENERAL_CHAT, alice.user_id))


async def test_stream_is_members_events_from_join_until_leave(store: Store) -> None:
    a = await make_user(store, "sa")
    b = await make_user(store, "sb")
    now = time.time()
    chat = Chat(ChatId("g_test"), "group", "t", a.user_id, now)

    async def setup(tx: SqlTx) -> None:
        await tx.create_chat(chat)
        await tx.add_member(chat.chat_id, a.user_id, now)
    await store.write(setup)
    await send(store, "g_test", a, "before_b")
    await store.write(lambda tx: tx.add_member(chat.chat_id, b.user_id, now))
    during = await send(store, "g_test", a, "with_b")
    await store.write(lambda tx: tx.remove_member(chat.chat_id, b.user_id))
    await send(store, "g_test", a, "after_b")
    b_events = await store.read(lambda tx: tx.read_events(b.user_id, 0, 100, time.time()))
    assert [e.seq for e in b_events] == [during.seq]
    a_events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 100, time.time()))
    assert len(a_events) == 3
    assert [e.seq for e in a_events] == sorted(e.seq for e in a_events)


async def test_user_events_reach_only_that_user(store: Store) -> None:
    a = await make_user(store, "ua")
    b = await make_user(store, "ub")
    await store.write(lambda tx: tx.add_user_event(a.user_id, "ban", b'{"type":"ban"}'))
    assert len(await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, time.time()))) == 1
    assert await store.read(lambda tx: tx.read_events(b.user_id, 0, 10, time.time())) == []


async def test_expired_messages_leave_the_stream_and_are_purged(store: Store) -> None:
    a = await make_user(store, "ea")
    await send(store, GENERAL_CHAT, a, "short", ttl=0.2)
    keep = await send(store, GENERAL_CHAT, a, "long")
    await asyncio.sleep(0.3)
    now = time.time()
    events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, now))
    assert [e.seq for e in events] == [keep.seq]
    history = await store.read(lambda tx: tx.history(GENERAL_CHAT, None, 10, now))
    assert [m.text for m in history] == ["long"]
    await store.write(lambda tx: tx.purge_expired(now, now - 3600))
    assert await store.read(lambda tx: tx.get_message("m_short", 0)) is None


async def test_failed_job_rolls_back_alone_in_its_batch(store: Store) -> None:
    a = await make_user(store, "ja")

    async def half_then_fail(tx: SqlTx) -> None:
        await tx.add_user_event(a.user_id, "ban", b'{"type":"ban"}')
        raise LookupError("rule says no")

    async def ok(tx: SqlTx) -> int:
        return await tx.add_user_event(a.user_id, "ban", b'{"type":"ban","ok":1}')

    results = await asyncio.gather(store.write(half_then_fail), store.write(ok),
                                   return_exceptions=True)
    assert isinstance(results[0], LookupError) and isinstance(results[1], int)
    events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, time.time()))
    assert [e.body for e in events] == [b'{"type":"ban","ok":1}']


async def test_concurrent_writes_get_increasing_unique_seqs(store: Store) -> None:
    a = await make_user(store, "ca")
    seqs = await asyncio.gather(*[
        store.write(lambda tx: tx.add_user_event(a.user_id, "ban", b'{"type":"ban"}'))
        for _ in range(50)])
    assert len(set(seqs)) == 50
    events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 100, time.time()))
    assert [e.seq for e in events] == sorted(seqs)


async def test_read_marker_only_moves_forward(store: Store) -> None:
    a = await make_user(store, "ma")
    await store.write(lambda tx: tx.set_read_marker(a.user_id, 5))
    await store.write(lambda tx: tx.set_read_marker(a.user_id, 3))
    user = await store.read(lambda tx: tx.get_user(a.user_id))
    assert user is not None and user.read_seq == 5


async def test_quota_counts_per_window(store: Store) -> None:
    a = await make_user(store, "qa")
    for _ in range(3):
        await store.write(lambda tx: tx.quota_add(a.user_id, 100.0))
    assert await store.read(lambda tx: tx.quota_used(a.user_id, 100.0)) == 3
    await store.write(lambda tx: tx.quota_add(a.user_id, 200.0))
    assert await store.read(lambda tx: tx.quota_used(a.user_id, 200.0)) == 1
    assert await store.read(lambda tx: tx.quota_used(a.user_id, 100.0)) == 0


async def test_reports_count_distinct_reporters(store: Store) -> None:
    a, b, c = [await make_user(store, n) for n in ("ra", "rb", "rc")]
    assert await store.write(lambda tx: tx.add_report(a.user_id, b.user_id, None, 1.0))
    assert not await store.write(lambda tx: tx.add_report(a.user_id, b.user_id, "x", 2.0))
    assert await store.write(lambda tx: tx.add_report(a.user_id, c.user_id, None, 3.0))
    assert await store.read(lambda tx: tx.count_reports(a.user_id)) == 2
    await store.write(lambda tx: tx.clear_reports(a.user_id))
    assert await store.read(lambda tx: tx.count_reports(a.user_id)) == 0


async def test_scheduled_finishes_exactly_once(store: Store) -> None:
    a = await make_user(store, "sc")
    entry = Scheduled(ScheduledId("s_1"), a.user_id, GENERAL_CHAT, None, "later", "[]", None,
                      time.time() - 1, time.time(), "pending", None)
    await store.write(lambda tx: tx.insert_scheduled(entry))
    due = await store.read(lambda tx: tx.due_scheduled(time.time(), 10))
    assert [s.scheduled_id for s in due] == ["s_1"]
    outcomes = await asyncio.gather(*[
        store.write(lambda tx: tx.finish_scheduled("s_1", "sent", "m_x")) for _ in range(5)])
    assert outcomes.count(True) == 1
    assert await store.read(lambda tx: tx.due_scheduled(time.time(), 10)) == []


async def test_notifier_wakes_members_after_commit(store: Store) -> None:
    a = await make_user(store, "na")
    waiter = store.notifier.register(a.user_id)
    woken = waiter.arm()
    await send(store, GENERAL_CHAT, a, "wake")
    await asyncio.wait_for(woken, 1)
    store.notifier.discard(a.user_id, waiter)
    assert store.notifier.waiting(a.user_id) == 0
