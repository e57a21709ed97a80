"""One store test suite, run against every backend (SQLite and PostgreSQL)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest

from store.base import Store
from store import sql_messages
from store.models import GENERAL_CHAT, Chat, ChatId, Scheduled, ScheduledId, StoredMessage
from store.models import FileId, MessageId, User
from store.pg_db import WRITE_LOCK, sql_literal
from store.postgres import PostgresStore
from methods.rules import register_user
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
        user = await register_user(tx, name, "hash", time.time())  # joins general too
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


async def test_writes_queued_while_another_process_writes_join_the_next_batch(
        pg_url: str) -> None:
    """While one process waits for another's batch to release the write lock, the writes
    it receives meanwhile join the batch it is about to run: one transaction, not two."""
    store = PostgresStore(pg_url)
    await store.open()
    other = await asyncpg.connect(pg_url)
    try:
        async def txid(tx: SqlTx) -> int:
            row = await tx.db.fetchone("SELECT txid_current()")
            assert row is not None
            return int(row[0])

        await other.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        first = asyncio.ensure_future(store.write(txid))
        await asyncio.sleep(0.3)  # its batch has begun, and waits for the lock
        assert not first.done()
        later = [asyncio.ensure_future(store.write(txid)) for _ in range(9)]
        await asyncio.sleep(0.1)
        await other.execute("COMMIT")
        ids = await asyncio.gather(first, *later)
        assert len(set(ids)) == 1, ids
    finally:
        await other.close()
        await store.close()


async def test_sql_literals_read_back_as_written(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        texts = ["plain", "it's", "back\\slash\\", "\\'; SELECT 1; --", "é✓ 𝄞", ""]
        for conforming in ("on", "off"):
            await conn.execute(f"SET standard_conforming_strings = {conforming}")
            for text in texts:
                assert await conn.fetchval(f"SELECT {sql_literal(text)}") == text
    finally:
        await conn.close()


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


async def test_reports_count_distinct_reporters_that_count(store: Store) -> None:
    a, b, c, d = [await make_user(store, n) for n in ("ra", "rb", "rc", "rd")]
    await store.write(lambda tx: tx.put_report(a.user_id, b.user_id, None, 1.0, "counts"))
    await store.write(lambda tx: tx.put_report(a.user_id, b.user_id, "x", 2.0, "counts"))
    await store.write(lambda tx: tx.put_report(a.user_id, c.user_id, None, 3.0, "counts"))
    await store.write(lambda tx: tx.put_report(a.user_id, d.user_id, None, 3.0, "young"))
    assert await store.read(lambda tx: tx.report_state(a.user_id, d.user_id)) == "young"
    assert await store.read(lambda tx: tx.count_reports(a.user_id)) == 2
    await store.write(lambda tx: tx.use_reports(a.user_id))
    assert await store.read(lambda tx: tx.count_reports(a.user_id)) == 0
    assert await store.read(lambda tx: tx.report_state(a.user_id, b.user_id)) == "used"
    assert await store.read(lambda tx: tx.report_state(a.user_id, d.user_id)) == "young"


async def test_blocks_are_one_way(store: Store) -> None:
    a, b = [await make_user(store, n) for n in ("ba", "bb")]
    await store.write(lambda tx: tx.block(a.user_id, b.user_id, 1.0))
    await store.write(lambda tx: tx.block(a.user_id, b.user_id, 2.0))  # again: a no-op
    assert await store.read(lambda tx: tx.blocks(a.user_id, b.user_id))
    assert not await store.read(lambda tx: tx.blocks(b.user_id, a.user_id))
    assert await store.read(lambda tx: tx.blocked_names(a.user_id)) == ["bb"]
    await store.write(lambda tx: tx.unblock(a.user_id, b.user_id))
    assert await store.read(lambda tx: tx.blocked_names(a.user_id)) == []


async def test_issued_seq_survives_purged_events(store: Store) -> None:
    a = await make_user(store, "is")
    seq = await store.write(lambda tx: tx.add_user_event(a.user_id, "ban", b'{"type":"ban"}'))
    assert await store.read(lambda tx: tx.issued_seq()) == seq
    await store.write(lambda tx: tx.db.execute("DELETE FROM events"))
    assert await store.read(lambda tx: tx.last_seq()) == 0
    assert await store.read(lambda tx: tx.issued_seq()) == seq


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


# -- messenger essentials: edits, deletes, search, read positions, client_msg_id -----------
async def test_client_msg_id_finds_the_live_first_message_only(store: Store) -> None:
    a = await make_user(store, "ka")
    b = await make_user(store, "kb")
    first = message(GENERAL_CHAT, a, "once", time.time() + 3600)
    stored = await store.write(lambda tx: tx.insert_message(first, b"{}", "c1"))
    found = await store.read(lambda tx: tx.find_client_message(a.user_id, "c1", time.time()))
    assert found is not None and found.message_id == stored.message_id
    assert await store.read(lambda tx: tx.find_client_message(b.user_id, "c1", time.time())) \
        is None
    # Expired (not purged yet): the key is free again, and a new message may take it.
    later = time.time() + 7200
    assert await store.write(lambda tx: tx.find_client_message(a.user_id, "c1", later)) is None
    again = message(GENERAL_CHAT, a, "twice", time.time() + 3600)
    await store.write(lambda tx: tx.insert_message(again, b"{}", "c1"))
    found = await store.read(lambda tx: tx.find_client_message(a.user_id, "c1", time.time()))
    assert found is not None and found.text == "twice"


async def test_edit_keeps_expiry_and_reindexes_search(store: Store) -> None:
    a = await make_user(store, "ea1")
    m = await send(store, GENERAL_CHAT, a, "apple")
    edited = await store.write(lambda tx: tx.edit_message(m, "Banana, cherry!", 123.0))
    assert edited.edited_at == 123.0 and edited.expires_at == m.expires_at
    got = await store.read(lambda tx: tx.get_message(m.message_id, time.time()))
    assert got is not None and got.text == "Banana, cherry!" and got.edited_at == 123.0

    async def find(*words: str) -> list[str]:
        await store.catch_up_search()
        rows = await store.read(lambda tx: tx.search_messages(
            a.user_id, list(words), None, None, 10, time.time()))
        return [r.message_id for r in rows]

    assert await find("banana") == [m.message_id]
    assert await find("banana", "cherry") == [m.message_id]
    assert await find("apple") == []
    assert await find("banan") == []  # whole words only


async def test_search_is_members_only_newest_first_paged_and_any_script(store: Store) -> None:
    a = await make_user(store, "sa1")
    b = await make_user(store, "sb1")
    now = time.time()
    chat = Chat(ChatId("g_search"), "group", "t", a.user_id, now)

    async def setup(tx: SqlTx) -> None:
        await tx.create_chat(chat)
        await tx.add_member(chat.chat_id, a.user_id, now)
    await store.write(setup)
    secret = await send(store, "g_search", a, "secret")
    words: dict[str, StoredMessage] = {}
    for i, text in enumerate(["привет мир", "Привет, друг", "hello"]):
        m = message(GENERAL_CHAT, a, text, time.time() + 3600)
        m = StoredMessage(MessageId(f"m_w{i}"), m.chat_id, m.author, m.author_id, m.text,
                          m.attachments, m.comment_to, m.sent_at, m.expires_at, 0)

        async def insert(tx: SqlTx, m: StoredMessage = m) -> StoredMessage:
            return await tx.insert_message(m, b"{}")
        words[text] = await store.write(insert)

    async def find(user: User, query: list[str], chat_id: str | None = None,
                   before: int | None = None, limit: int = 10) -> list[str]:
        await store.catch_up_search()
        rows = await store.read(lambda tx: tx.search_messages(
            user.user_id, query, chat_id, before, limit, time.time()))
        return [r.text or "" for r in rows]

    assert await find(a, ["привет"]) == ["Привет, друг", "привет мир"]
    assert await find(a, ["привет"], limit=1) == ["Привет, друг"]
    assert await find(a, ["привет"], before=words["Привет, друг"].seq) == ["привет мир"]
    assert await find(a, ["secret"]) == ["secret"]
    assert await find(a, ["secret"], chat_id=GENERAL_CHAT) == []
    assert await find(b, ["secret"]) == []  # not a member
    await store.write(lambda tx: tx.delete_message(secret))
    assert await find(a, ["secret"]) == []
    assert await store.read(lambda tx: tx.get_message(secret.message_id, 0)) is None


async def test_delete_removes_undelivered_events_and_file_links(store: Store) -> None:
    a = await make_user(store, "da1")
    m = await send(store, GENERAL_CHAT, a, "gone")
    keep = await send(store, GENERAL_CHAT, a, "kept")

    async def attach(tx: SqlTx) -> None:
        await tx.attach_file(m.message_id, FileId("f_x"), GENERAL_CHAT)
    await store.write(attach)
    await store.write(lambda tx: tx.delete_message(m))
    events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, time.time()))
    assert [e.seq for e in events] == [keep.seq]
    assert not await store.read(lambda tx: tx.may_read_file("f_x", a.user_id, time.time()))


async def test_read_positions_move_forward_and_bound_unread(store: Store) -> None:
    a = await make_user(store, "ra1")
    b = await make_user(store, "rb1")
    sent = [await send(store, GENERAL_CHAT, b, f"u{i}") for i in range(5)]
    await send(store, GENERAL_CHAT, a, "mine")
    unread = await store.read(lambda tx: tx.unread_counts(a.user_id, 0, time.time()))
    assert unread[GENERAL_CHAT] == 5
    assert await store.write(lambda tx: tx.set_read_position(
        a.user_id, GENERAL_CHAT, sent[2].seq, sent[2].message_id))
    assert not await store.write(lambda tx: tx.set_read_position(
        a.user_id, GENERAL_CHAT, sent[1].seq, sent[1].message_id))
    assert await store.read(lambda tx: tx.read_position(a.user_id, GENERAL_CHAT)) == (
        sent[2].seq, sent[2].message_id)
    assert await store.read(lambda tx: tx.read_positions(a.user_id)) == {
        GENERAL_CHAT: sent[2].message_id}
    unread = await store.read(lambda tx: tx.unread_counts(a.user_id, 0, time.time()))
    assert unread[GENERAL_CHAT] == 2
    # The stream marker counts too: whichever is further.
    unread = await store.read(lambda tx: tx.unread_counts(a.user_id, sent[3].seq, time.time()))
    assert unread[GENERAL_CHAT] == 1


async def test_unread_count_is_capped(store: Store) -> None:
    a = await make_user(store, "ca1")
    b = await make_user(store, "cb1")
    cap = 3
    original = sql_messages.UNREAD_CAP
    for i in range(cap + 2):
        await send(store, GENERAL_CHAT, b, f"cap{i}")
    try:
        setattr(sql_messages, "UNREAD_CAP", cap)  # the binding unread_counts reads
        unread = await store.read(lambda tx: tx.unread_counts(a.user_id, 0, time.time()))
    finally:
        setattr(sql_messages, "UNREAD_CAP", original)
    assert unread[GENERAL_CHAT] == cap


async def test_search_walks_past_many_matches_the_user_may_not_see(store: Store) -> None:
    a = await make_user(store, "wa1")
    b = await make_user(store, "wb1")
    now = time.time()
    chat = Chat(ChatId("g_walk"), "group", "t", a.user_id, now)

    async def setup(tx: SqlTx) -> None:
        await tx.create_chat(chat)
        await tx.add_member(chat.chat_id, a.user_id, now)
        # The one b may see is the oldest; 300 newer ones are in a chat b is not in.
        first = message(GENERAL_CHAT, a, "common visible", now + 3600)
        await tx.insert_message(first, b"{}")
        for i in range(300):
            hidden = message("g_walk", a, f"common hidden {i}", now + 3600)
            await tx.insert_message(StoredMessage(
                MessageId(f"m_hidden{i}"), hidden.chat_id, hidden.author, hidden.author_id,
                hidden.text, "[]", None, now, now + 3600, 0), b"{}")
    await store.write(setup)
    await store.catch_up_search()
    rows = await store.read(lambda tx: tx.search_messages(
        b.user_id, ["common"], None, None, 5, time.time()))
    assert [r.text for r in rows] == ["common visible"]
    rows = await store.read(lambda tx: tx.search_messages(
        a.user_id, ["common"], None, None, 5, time.time()))
    assert [r.text for r in rows] == [f"common hidden {i}" for i in (299, 298, 297, 296, 295)]


async def test_read_events_are_purged_with_their_message(store: Store) -> None:
    a = await make_user(store, "pe1")
    now = time.time()
    await store.write(lambda tx: tx.add_read_event(a.user_id, b'{"type":"read"}', now + 0.2))
    assert len(await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, now))) == 1
    await asyncio.sleep(0.3)
    later = time.time()
    await store.write(lambda tx: tx.purge_expired(later, later - 3600))
    assert await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, later)) == []


async def test_expired_user_events_are_left_out_before_any_purge(store: Store) -> None:
    a = await make_user(store, "pe2")
    now = time.time()
    await store.write(lambda tx: tx.add_read_event(a.user_id, b'{"type":"read"}', now + 60))
    await store.write(lambda tx: tx.add_user_event(a.user_id, "ban", b'{"type":"ban"}'))
    later = now + 120  # the read event's message has expired; the ban event never expires
    for events in (await store.read(lambda tx: tx.read_events(a.user_id, 0, 10, later)),
                   (await store.read(lambda tx: tx.read_events_many(
                       [(a.user_id, 0, 10)], later)))[0]):
        assert [e.body for e in events] == [b'{"type":"ban"}']


async def test_the_general_chat_comes_from_the_migrations(store: Store) -> None:
    """A fresh database has the general chat (the last migration made it), nobody in it."""
    started = time.time()
    chat = await store.read(lambda tx: tx.get_chat(GENERAL_CHAT))
    assert chat is not None and chat.kind == "general" and chat.title == "General"
    assert chat.owner_id is None and started - 600 < chat.created_at <= time.time() + 1
    assert await store.read(lambda tx: tx.member_ids(GENERAL_CHAT)) == []
    user = await store.write(lambda tx: tx.create_user("plain", "h", time.time()))
    assert user is not None  # the store registers; joining the general chat is a method rule
    assert not await store.read(lambda tx: tx.is_member(GENERAL_CHAT, user.user_id))


async def test_a_database_of_an_earlier_release_keeps_its_general_chat(tmp_path: Path) -> None:
    """Earlier releases inserted the general chat after migrating: the migration that now
    makes it leaves theirs alone, and reopening migrates nothing twice."""
    import sqlite3

    from store.migrations import MIGRATIONS, render
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, sql in enumerate(MIGRATIONS[:6], start=1):
        for stmt in render(sql, "sqlite"):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    conn.execute("INSERT INTO chats (chat_id, kind, title, owner_id, created_at)"
                 " VALUES ('general', 'general', 'General', NULL, 123.0)")
    conn.commit()
    conn.close()
    for _ in range(2):
        store = SqliteStore(path)
        await store.open()
        chat = await store.read(lambda tx: tx.get_chat(GENERAL_CHAT))
        await store.close()
        assert chat is not None and chat.created_at == 123.0
    conn = sqlite3.connect(path)
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    conn.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_concurrent_searches_share_each_search_index_job(tmp_path: Path) -> None:
    """SQLite indexes new messages apart from their sends; searches arriving together while
    some are unindexed wait for one shared index job at a time, so a flood of searches
    cannot fill the write queue with index jobs."""
    store = SqliteStore(tmp_path / "m.db")
    store.index_interval = 3600  # only the searches below catch the index up
    store.index_chunk = 10
    await store.open()
    try:
        a = await make_user(store, "ix1")
        for i in range(25):
            await send(store, GENERAL_CHAT, a, f"shared{i}")
        catch_ups = [asyncio.ensure_future(store.catch_up_search()) for _ in range(20)]
        most_queued = 0
        for _ in range(4):  # they start, the shared job is queued, the writer takes it
            await asyncio.sleep(0)
            most_queued = max(most_queued, len(store._queue))
        assert most_queued == 1  # one index job for all twenty
        await asyncio.gather(*catch_ups)
        rows = await store.read(lambda tx: tx.search_messages(
            a.user_id, ["shared24"], None, None, 10, time.time()))
        assert [r.text for r in rows] == ["shared24"]
        assert store._indexing is None
    finally:
        await store.close()
