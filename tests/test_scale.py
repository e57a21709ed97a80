"""Scale paths of the store: batched sends, coalesced reads, shared read-marker writes.

Run against both backends; the PostgreSQL paths (one query for many polls or sends) are
checked for giving exactly the answers the one-by-one paths give.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from store.base import Store
from store.models import ChatId, EventRecord, MessageId, StoredMessage, User, UserId
from store.postgres import PostgresStore
from store.sql import SqlTx
from store.sqlite import SqliteStore
from tests.test_store import make_user


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "messenger.db")
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"))
    await s.open()
    yield s
    await s.close()


async def group(store: Store, *members: User) -> ChatId:
    chat_id = ChatId("g_scale")
    from store.models import Chat

    async def make(tx: SqlTx) -> None:
        await tx.create_chat(Chat(chat_id, "group", "G", members[0].user_id, time.time()))
        for m in members:
            await tx.add_member(chat_id, m.user_id, time.time())
    await store.write(make)
    return chat_id


def send_job(author: User, chat_id: ChatId, text: str,
             key: str | None) -> Any:
    """A send as methods/messages.py `deliver` does it: prefetch, checks, insert."""
    async def job(tx: SqlTx) -> StoredMessage:
        await tx.prefetch_send(author.user_id, chat_id, key)
        user = await tx.get_user(author.user_id)
        assert user is not None
        if key is not None:
            first = await tx.find_client_message(author.user_id, key, time.time())
            if first is not None:
                return first
        chat = await tx.get_chat(chat_id)
        if chat is None or not await tx.is_member(chat_id, author.user_id):
            raise LookupError("not a member")
        m = StoredMessage(MessageId(f"m_{text}"), chat_id, user.username, user.user_id, text,
                          "[]", None, time.time(), time.time() + 3600, 0)
        return await tx.insert_message(m, b'{"type":"message"}', key)
    return job


async def test_batched_sends_match_one_by_one_rules(store: Store) -> None:
    a, b, c = [await make_user(store, n) for n in ("sa", "sb", "sc")]
    chat_id = await group(store, a, b)

    async def remove_b(tx: SqlTx) -> None:
        await tx.remove_member(chat_id, b.user_id)

    # One batch: sends (two sharing a retry key), an outsider's send, and a removal that
    # runs after the sends whatever their order in the queue.
    jobs = [store.write(send_job(a, chat_id, f"a{i}", f"k{i % 5}"),
                        prefetch=(a.user_id, chat_id, f"k{i % 5}")) for i in range(10)]
    jobs.append(store.write(send_job(c, chat_id, "c0", None), prefetch=(c.user_id, chat_id, None)))
    jobs.append(store.write(remove_b))
    jobs.append(store.write(send_job(b, chat_id, "b0", "kb"), prefetch=(b.user_id, chat_id, "kb")))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    sent = results[:10]
    assert all(isinstance(r, StoredMessage) for r in sent)
    by_key: dict[str, set[str]] = {}
    for i, r in enumerate(sent):
        assert isinstance(r, StoredMessage)
        by_key.setdefault(f"k{i % 5}", set()).add(r.message_id)
    assert all(len(ids) == 1 for ids in by_key.values())  # a retry key names one message
    assert isinstance(results[10], LookupError)  # c is no member
    events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 100, time.time()))
    messages = [e for e in events if b"message" in e.body]
    stored = {r.seq for r in sent if isinstance(r, StoredMessage)}
    assert len(stored) == 5
    assert stored <= {e.seq for e in messages}
    # b's send and b's removal: either order is one they could have come in.
    assert isinstance(results[12], (StoredMessage, LookupError))
    assert [e.seq for e in events] == sorted(e.seq for e in events)


async def test_batched_sends_find_retry_keys_committed_before(store: Store) -> None:
    a, b = [await make_user(store, n) for n in ("ra", "rb")]
    chat_id = await group(store, a, b)
    first = await store.write(send_job(a, chat_id, "first", "kr"),
                              prefetch=(a.user_id, chat_id, "kr"))
    for i in range(30):  # more of a's messages with other keys, and b's with the same
        await store.write(send_job(a, chat_id, f"other{i}", f"ko{i}"),
                          prefetch=(a.user_id, chat_id, f"ko{i}"))
    await store.write(send_job(b, chat_id, "b's", "kr"), prefetch=(b.user_id, chat_id, "kr"))
    again = await asyncio.gather(
        store.write(send_job(a, chat_id, "retry", "kr"), prefetch=(a.user_id, chat_id, "kr")),
        store.write(send_job(a, chat_id, "new", "kn"), prefetch=(a.user_id, chat_id, "kn")),
        store.write(send_job(b, chat_id, "retry of b", "kr"),
                    prefetch=(b.user_id, chat_id, "kr")))
    assert isinstance(first, StoredMessage) and isinstance(again[0], StoredMessage)
    assert (again[0].message_id, again[0].text) == (first.message_id, "first")
    assert isinstance(again[1], StoredMessage) and again[1].text == "new"
    assert isinstance(again[2], StoredMessage) and again[2].text == "b's"


async def test_a_failing_send_leaves_nothing_and_others_commit(store: Store) -> None:
    a = await make_user(store, "fa")
    chat_id = await group(store, a)

    async def insert_then_fail(tx: SqlTx) -> None:
        await send_job(a, chat_id, "bad", "kbad")(tx)
        raise LookupError("rule says no after writing")

    results = await asyncio.gather(
        store.write(send_job(a, chat_id, "ok1", "k1"), prefetch=(a.user_id, chat_id, "k1")),
        store.write(insert_then_fail, prefetch=(a.user_id, chat_id, "kbad")),
        store.write(send_job(a, chat_id, "ok2", "k2"), prefetch=(a.user_id, chat_id, "k2")),
        return_exceptions=True)
    assert isinstance(results[1], LookupError)
    assert isinstance(results[0], StoredMessage) and isinstance(results[2], StoredMessage)
    assert await store.read(lambda tx: tx.get_message("m_bad", 0)) is None
    assert await store.read(lambda tx: tx.get_message("m_ok2", 0)) is not None


async def test_concurrent_polls_read_what_one_by_one_reads_give(store: Store) -> None:
    users = [await make_user(store, f"p{i}") for i in range(6)]
    chat_id = await group(store, *users[:4])  # the last two are not in the chat
    for i in range(5):
        await store.write(send_job(users[0], chat_id, f"x{i}", None))
    await store.write(lambda tx: tx.add_user_event(users[5].user_id, "ban", b'{"type":"ban"}'))

    async def delete_second(tx: SqlTx) -> None:
        m = await tx.get_message("m_x1", time.time())
        assert m is not None
        await tx.delete_message(m)
    await store.write(delete_second)
    now = time.time()
    asks = [(u.user_id, after, limit) for u in users for after in (0, 3) for limit in (2, 50)]
    asks += asks  # identical asks share one answer
    together = await asyncio.gather(*[store.read_events(UserId(u), after, limit, now)
                                      for u, after, limit in asks])
    for (u, after, limit), got in zip(asks, together):
        alone: list[EventRecord] = await store.read(
            lambda tx: tx.read_events(UserId(u), after, limit, now))
        assert got == alone
    if isinstance(store, PostgresStore):
        assert store.event_reads.queries < len(asks) / 4


async def test_read_markers_written_together_only_move_forward(store: Store) -> None:
    a, b = await make_user(store, "ma"), await make_user(store, "mb")
    chat_id = await group(store, a, b)
    for i in range(3):
        await store.write(send_job(a, chat_id, f"r{i}", None))
    newest = await store.read(lambda tx: tx.last_seq())
    await asyncio.gather(store.move_read_marker(a.user_id, newest - 1),
                         store.move_read_marker(a.user_id, newest - 2),
                         store.move_read_marker(b.user_id, newest + 1000))
    got_a = await store.read(lambda tx: tx.get_user(a.user_id))
    got_b = await store.read(lambda tx: tx.get_user(b.user_id))
    assert got_a is not None and got_a.read_seq == newest - 1
    assert got_b is not None and got_b.read_seq == newest  # never past the newest event
    await store.move_read_marker(a.user_id, 1)
    again = await store.read(lambda tx: tx.get_user(a.user_id))
    assert again is not None and again.read_seq == newest - 1
    assert await store.issued_seq(at_least=newest) >= newest


def test_every_ended_session_reaches_other_processes_whatever_their_number() -> None:
    from store.pg_db import MAX_NOTIFY, decode_wakeups, encode_wakeups
    from store.sql import Wakeups

    wakeups = Wakeups()
    wakeups.users = set(range(5000))  # too many to name: the first payload wakes everyone
    wakeups.ended = {f"{i:064x}" for i in range(350)}
    payloads = encode_wakeups("me", wakeups)
    first = payloads[0]
    assert all(len(p.encode()) <= 8000 for p in payloads) and len(first) <= MAX_NOTIFY + 8000
    seen: set[str] = set()
    for p in payloads:
        origin, w = decode_wakeups(p)
        assert origin == "me"
        seen |= w.ended
    assert seen == wakeups.ended
    assert decode_wakeups(first)[1].everyone

    few = Wakeups()
    few.ended = {"a" * 64}
    assert len(encode_wakeups("me", few)) == 1
