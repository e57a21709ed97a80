"""Messages: sending (with a batch's answers fetched ahead), history, edits, deletes, search
and unread counts; and the search words and per-dialect text of those queries.

Both backends index the same normalized words, so search means the same on SQLite (FTS5)
and PostgreSQL (a GIN index over to_tsvector('simple', ...)): a word is a run of Unicode
letters, digits or underscores (punctuation separates words), compared case-folded, any
script, accents kept.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Sequence

from store.models import MAX_SEQ, StoredMessage, UserId
from store.sql_base import (
    ATTACH_FILE, CHAT_COLS, MSG_COLS, USER_COLS, DeferredSends, PrefetchedSends, Row, SendKey,
    XactInfo, chat_from, message_from, user_from,
)
from store.sql_events import EventsSql

_WORD = re.compile(r"\w+")

# An unread count looks at no more than this many of a chat's newest messages after the
# read markers, so session.status costs the same with 1,000 or 1,000,000 unread messages.
UNREAD_CAP = 1000

# SQLite search filters FTS5 matches in chunks of at most this many (a few ms each).
SEARCH_CHUNK_MAX = 2000

# PostgreSQL search first filters this many of the newest candidate messages (a walk down
# the seq index that stops early for common words) before asking the GIN index.
RECENT_SCAN = 1000


def search_words(text: str | None) -> str:
    """The words of a text as they are indexed: case-folded, separated by one space."""
    if not text:
        return ""
    return " ".join(_WORD.findall(text.casefold()))


def fts5_query(words: list[str]) -> str:
    """An FTS5 MATCH expression needing every word (each quoted: no query syntax leaks in)."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def msg_cols(alias: str, cols: str) -> str:
    """`cols` (a comma-separated column list) qualified with a table alias."""
    return ", ".join(f"{alias}.{c.strip()}" for c in cols.split(","))


_SEND_COLS = (f"{msg_cols('u', USER_COLS)}, {msg_cols('c', CHAT_COLS)},"
              " mb.user_id IS NOT NULL AND mb.left_seq IS NULL, "
              f"{msg_cols('cm', MSG_COLS)}")

# A batch's deferred messages and their events in one statement (PostgreSQL): one array
# per column, each message a row of `DeferredSends.messages` in the order of `_DEFERRED`.
_DEFERRED = ("seq", "chat_id", "body", "message_id", "expires_at", "author", "author_id",
             "text", "attachments", "comment_to", "sent_at", "edited_at", "client_msg_id",
             "words")
_DEFERRED_MESSAGES = (
    "WITH d AS (SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[],"
    " ?::float8[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::float8[],"
    f" ?::float8[], ?::text[], ?::text[]) AS d({', '.join(_DEFERRED)})),"
    " e AS (INSERT INTO events (seq, chat_id, type, body, message_id, expires_at)"
    " SELECT seq, chat_id, 'message', body, message_id, expires_at FROM d)"
    f" INSERT INTO messages ({MSG_COLS}, client_msg_id, search_words)"
    f" SELECT {MSG_COLS}, client_msg_id, words FROM d")

_INDEX_WORDS = "INSERT INTO messages_fts (rowid, words) VALUES (?, ?)"


def _send_memo(r: Row | None, author_id: UserId, chat_id: str | None,
               client_msg_id: str | None) -> dict[tuple[object, ...], Any]:
    """A `prefetch_send` row (its first column aside) as the answers it stands for."""
    if r is None:
        return {("user", author_id): None}
    memo: dict[tuple[object, ...], Any] = {("user", author_id): user_from(r[1:7])}
    if chat_id is not None:
        memo[("chat", chat_id)] = None if r[7] is None else chat_from(r[7:12])
        memo[("member", chat_id, author_id)] = bool(r[12])
    if client_msg_id is not None:
        memo[("client", author_id, client_msg_id)] = None if r[13] is None else r[13:24]
    return memo


class MessagesSql(EventsSql):
    """`SqlTx`, one area: sending (a batch's answers fetched ahead), history, edits,
    deletes, search and unread counts."""

    # -- sends fetched ahead ---------------------------------------------------------------
    async def prefetch_send(self, author_id: UserId, chat_id: str | None,
                            client_msg_id: str | None) -> None:
        """Fetch in one round trip what a send checks first: the author, their message with
        this retry key, the chat and whether they are in it. Must come before the job's
        first write; each answer is handed out once, by the usual method. Nothing to do
        when the batch fetched it already (`preload`)."""
        if self._preloaded:
            return
        r = await self.db.fetchone(
            f"SELECT 1, {_SEND_COLS} FROM users u"
            " LEFT JOIN chats c ON c.chat_id = ?"
            " LEFT JOIN members mb ON mb.chat_id = c.chat_id AND mb.user_id = u.user_id"
            " LEFT JOIN messages cm ON cm.author_id = u.user_id AND cm.client_msg_id = ?"
            " WHERE u.user_id = ?", chat_id, client_msg_id, author_id)
        self._memo.update(_send_memo(r, author_id, chat_id, client_msg_id))

    async def prefetch_sends(self, keys: Sequence[SendKey]) -> PrefetchedSends:
        """`prefetch_send` of a batch's sends in one query (PostgreSQL), for `preload`;
        with a seq taken for each send's event (in the order of `keys`), and what the
        transaction's commit needs to know (its id, the NOTIFY queue's usage)."""
        rows = await self.db.fetchall(
            f"SELECT q.i, {_SEND_COLS}, x.xid, x.usage, nextval('events_seq_seq')"
            " FROM unnest(?::bigint[], ?::text[], ?::text[]) WITH ORDINALITY"
            " AS q(author_id, chat_id, client_key, i)"
            # once, not per send: the transaction's id and the NOTIFY queue's usage
            " CROSS JOIN (SELECT txid_current() AS xid,"
            " pg_notification_queue_usage() AS usage OFFSET 0) x"
            " JOIN users u ON u.user_id = q.author_id"
            " LEFT JOIN chats c ON c.chat_id = q.chat_id"
            " LEFT JOIN members mb ON mb.chat_id = c.chat_id AND mb.user_id = u.user_id"
            # LATERAL: as a plain join, PostgreSQL's plan looked the retry key up by author
            # alone and filtered, walking every message of the author on each send.
            f" LEFT JOIN LATERAL (SELECT {MSG_COLS} FROM messages"
            " WHERE author_id = q.author_id AND client_msg_id = q.client_key) cm ON true",
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
        found = {int(r[0]): r[:-3] for r in rows}
        seqs = iter(sorted(int(r[-1]) for r in rows))  # seqs in the order of the sends
        memos = []
        for i, key in enumerate(keys, start=1):
            memo = _send_memo(found.get(i), *key)
            if i in found:
                memo[("seq",)] = next(seqs)
            memos.append(memo)
        xact = XactInfo(int(rows[0][-3]), float(rows[0][-2])) if rows else None
        return PrefetchedSends(memos, xact)

    def preload(self, memo: dict[tuple[object, ...], Any],
                deferred: "DeferredSends | None" = None) -> None:
        """Answers a batch fetched ahead for this job (`prefetch_sends`). With `deferred`,
        the job's message is written later, with the others of the batch (its seq was
        taken ahead), so that nothing may read it before `flush_sends`."""
        self._memo.update(memo)
        self._preloaded = True
        self._deferred = deferred

    async def flush_sends(self, deferred: "DeferredSends") -> None:
        """Write the messages (and file links) that sends deferred: one round trip each
        (the messages with their events in one statement, not one per message)."""
        if deferred.messages:
            await self.db.execute(_DEFERRED_MESSAGES, *map(list, zip(*deferred.messages)))
            deferred.messages = []
        if deferred.files:
            await self.db.executemany(ATTACH_FILE, deferred.files)
            deferred.files = []

    # -- messages --------------------------------------------------------------------------
    async def insert_message(self, m: StoredMessage, event_body: bytes,
                             client_msg_id: str | None = None) -> StoredMessage:
        """Store a message and its `message` event; the message with its seq.

        `client_msg_id` (the sender's retry key) is unique per author while the message
        lives; the message's words go into the search index (on SQLite a little later, with
        other messages': `index_messages`).
        """
        if self.db.dialect == "sqlite":
            seq = await self.add_chat_event(m.chat_id, "message", event_body, m.message_id,
                                            m.expires_at)
            await self.db.execute(
                f"INSERT INTO messages ({MSG_COLS}, client_msg_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                m.message_id, m.chat_id, m.author, m.author_id, m.text, m.attachments,
                m.comment_to, m.sent_at, m.expires_at, seq, m.edited_at, client_msg_id)
            self.wakeups.newest_message = max(self.wakeups.newest_message, seq)
            return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                                 m.attachments, m.comment_to, m.sent_at, m.expires_at, seq,
                                 m.edited_at)
        words = search_words(m.text)
        seq_ahead = self._memo.pop(("seq",), None)
        if self._deferred is not None and seq_ahead is not None:
            self._deferred.messages.append((  # in the order of `_DEFERRED`
                seq_ahead, m.chat_id, event_body.decode(), m.message_id, m.expires_at,
                m.author, m.author_id, m.text, m.attachments, m.comment_to, m.sent_at,
                m.edited_at, client_msg_id, words))
            self._chat_event_added(m.chat_id)
            return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                                 m.attachments, m.comment_to, m.sent_at, m.expires_at,
                                 seq_ahead, m.edited_at)
        # PostgreSQL, one round trip: the event and the message in one statement.
        r = await self.db.fetchone(
            "WITH e AS (INSERT INTO events (chat_id, type, body, message_id, expires_at)"
            " VALUES (?, 'message', ?, ?, ?) RETURNING seq)"
            f" INSERT INTO messages ({MSG_COLS}, client_msg_id, search_words)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT seq FROM e), ?, ?, ?) RETURNING seq",
            m.chat_id, event_body.decode(), m.message_id, m.expires_at,
            m.message_id, m.chat_id, m.author, m.author_id, m.text, m.attachments,
            m.comment_to, m.sent_at, m.expires_at, m.edited_at, client_msg_id, words)
        assert r is not None
        seq = int(r[0])
        self._chat_event_added(m.chat_id)
        return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, m.text,
                             m.attachments, m.comment_to, m.sent_at, m.expires_at, seq,
                             m.edited_at)

    async def get_message(self, message_id: str, now: float) -> StoredMessage | None:
        """A live (unexpired) message by id."""
        r = await self.db.fetchone(
            f"SELECT {MSG_COLS} FROM messages WHERE message_id = ? AND expires_at > ?",
            message_id, now)
        return None if r is None else message_from(r)

    async def history(self, chat_id: str, before_seq: int | None, limit: int,
                      now: float, after_seq: int = 0) -> list[StoredMessage]:
        """Up to `limit` live messages of a chat before a seq, oldest first."""
        before = before_seq if before_seq is not None else MAX_SEQ
        if self.db.dialect == "postgres":  # a walk of (chat_id, seq) whatever the plan
            rows = await self.db.fetchall(
                f"SELECT {MSG_COLS} FROM messages WHERE (chat_id, seq) < (?, ?)"
                " AND (chat_id, seq) > (?, ?) AND expires_at > ?"
                " ORDER BY chat_id DESC, seq DESC LIMIT ?",
                chat_id, before, chat_id, after_seq, now, limit)
            return [message_from(r) for r in reversed(rows)]
        rows = await self.db.fetchall(
            f"SELECT {MSG_COLS} FROM messages WHERE chat_id = ? AND seq < ? AND seq > ?"
            " AND expires_at > ? ORDER BY seq DESC LIMIT ?",
            chat_id, before, after_seq, now, limit)
        return [message_from(r) for r in reversed(rows)]

    async def find_client_message(self, author_id: UserId, client_msg_id: str,
                                  now: float) -> StoredMessage | None:
        """The live message an author sent with this retry key; an expired one (not purged
        yet) gives its key up, so the key may be used again."""
        key = ("client", author_id, client_msg_id)
        if self._memo and key in self._memo:
            r = self._memo.pop(key)
        else:
            r = await self.db.fetchone(
                f"SELECT {MSG_COLS} FROM messages WHERE author_id = ? AND client_msg_id = ?",
                author_id, client_msg_id)
        if r is None:
            return None
        found = message_from(r)
        if found.expires_at > now:
            return found
        await self.db.execute("UPDATE messages SET client_msg_id = NULL WHERE message_id = ?",
                              found.message_id)
        return None

    async def edit_message(self, m: StoredMessage, text: str, edited_at: float) -> StoredMessage:
        """Replace a message's text (search index included); the message as edited."""
        words = search_words(text)
        if self.db.dialect == "postgres":
            await self.db.execute(
                "UPDATE messages SET text = ?, edited_at = ?, search_words = ?"
                " WHERE message_id = ?", text, edited_at, words, m.message_id)
        else:
            await self.db.execute("UPDATE messages SET text = ?, edited_at = ?"
                                  " WHERE message_id = ?", text, edited_at, m.message_id)
            if m.seq <= await self._indexed_through():  # else indexed later, as edited
                await self.db.execute("DELETE FROM messages_fts WHERE rowid = ?", m.seq)
                if words:
                    await self.db.execute(_INDEX_WORDS, m.seq, words)
        return StoredMessage(m.message_id, m.chat_id, m.author, m.author_id, text,
                             m.attachments, m.comment_to, m.sent_at, m.expires_at, m.seq,
                             edited_at)

    async def delete_message(self, m: StoredMessage) -> None:
        """Remove a message: its row, its search entry, its file links (a file sent only
        here is no longer downloadable by the chat) and its events not yet delivered (the
        `message` event and any `message_edited`)."""
        await self.db.execute("DELETE FROM events WHERE message_id = ?", m.message_id)
        await self.db.execute("DELETE FROM message_files WHERE message_id = ?", m.message_id)
        await self.db.execute("DELETE FROM messages WHERE message_id = ?", m.message_id)
        if self.db.dialect == "sqlite":
            await self.db.execute("DELETE FROM messages_fts WHERE rowid = ?", m.seq)

    # -- search and unread counts ----------------------------------------------------------
    async def _indexed_through(self) -> int:
        """SQLite: the seq up to which messages are in the search index."""
        r = await self.db.fetchone("SELECT seq FROM search_index")
        return int(r[0]) if r else 0

    async def index_messages(self, limit: int) -> int:
        """SQLite: add up to `limit` of the messages not yet in the search index to it, all
        in one go. (FTS5 holds what it is given in memory until the transaction ends or a
        later statement opens a savepoint, as an INSERT ... RETURNING does, and then writes
        an index segment, to be merged later: indexed with each send, that cost more than
        the rest of the send's writes together.) Returns a seq up to which every stored
        message is now indexed."""
        through = await self._indexed_through()
        rows = await self.db.fetchall(
            "SELECT seq, text FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", through, limit)
        if not rows:
            return max(through, await self.issued_seq())
        await self.db.executemany(_INDEX_WORDS, [
            (int(seq), words) for seq, text in rows if (words := search_words(text))])
        last = int(rows[-1][0])
        await self.db.execute("UPDATE search_index SET seq = ?", last)
        return last if len(rows) == limit else max(last, await self.issued_seq())

    async def search_messages(self, user_id: UserId, words: list[str], chat_id: str | None,
                              before_seq: int | None, limit: int,
                              now: float) -> list[StoredMessage]:
        """Live messages containing every word (normalized by `search_words`) in chats the
        user is a member of, newest first."""
        before = before_seq if before_seq is not None else MAX_SEQ
        chat_filter = " AND msg.chat_id = ?" if chat_id is not None else ""
        chat_args: tuple[object, ...] = (chat_id,) if chat_id is not None else ()
        cols = msg_cols("msg", MSG_COLS)
        member = (" JOIN members mb ON mb.chat_id = msg.chat_id AND mb.user_id = ?"
                  " AND mb.left_seq IS NULL")
        if self.db.dialect == "sqlite":
            return await self._search_fts5(user_id, words, chat_id, before, limit, now)
        match = ("to_tsvector('simple', COALESCE(msg.search_words, ''))"
                 " @@ plainto_tsquery('simple', ?)")
        query = " ".join(words)
        # Common words: the newest RECENT_SCAN candidates usually hold a page already.
        recent = (
            f"SELECT {cols} FROM (SELECT * FROM messages msg WHERE msg.seq < ?"
            f" AND msg.expires_at > ?{chat_filter} ORDER BY msg.seq DESC LIMIT ?) AS msg"
            f"{member} WHERE {match} ORDER BY msg.seq DESC LIMIT ?")
        rows = await self.db.fetchall(recent, before, now, *chat_args, RECENT_SCAN, user_id,
                                      query, limit)
        if len(rows) < limit:  # rarer words: the GIN index
            rows = await self.db.fetchall(
                f"SELECT {cols} FROM messages msg{member} WHERE {match} AND msg.seq < ?"
                f" AND msg.expires_at > ?{chat_filter} ORDER BY msg.seq DESC LIMIT ?",
                user_id, query, before, now, *chat_args, limit)
        return [message_from(r) for r in rows]

    async def _search_fts5(self, user_id: UserId, words: list[str], chat_id: str | None,
                           before: int, limit: int, now: float) -> list[StoredMessage]:
        """SQLite search: FTS5 hands out matches newest first, a chunk at a time; each chunk
        is filtered (live, the user's chats) and the walk stops once the page is full.

        Between chunks the event loop gets a turn (SQLite reads run on it), so a word with
        many matches in chats the user is not in costs time, never a stall.
        """
        query = fts5_query(words)
        chat_filter = " AND msg.chat_id = ?" if chat_id is not None else ""
        chat_args: tuple[object, ...] = (chat_id,) if chat_id is not None else ()
        found: list[StoredMessage] = []
        chunk = max(2 * limit, 50)
        while len(found) < limit:
            candidates = [int(r[0]) for r in await self.db.fetchall(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? AND rowid < ?"
                " ORDER BY rowid DESC LIMIT ?", query, before, chunk)]
            if not candidates:
                break
            marks = ", ".join("?" * len(candidates))
            rows = await self.db.fetchall(
                f"SELECT {msg_cols('msg', MSG_COLS)} FROM messages msg"
                " JOIN members mb ON mb.chat_id = msg.chat_id AND mb.user_id = ?"
                f" AND mb.left_seq IS NULL WHERE msg.seq IN ({marks}) AND msg.expires_at > ?"
                f"{chat_filter} ORDER BY msg.seq DESC LIMIT ?",
                user_id, *candidates, now, *chat_args, limit - len(found))
            found.extend(message_from(r) for r in rows)
            if len(candidates) < chunk:
                break
            before = candidates[-1]
            chunk = min(chunk * 2, SEARCH_CHUNK_MAX)
            await asyncio.sleep(0)
        return found

    async def unread_counts(self, user_id: UserId, after: int, now: float) -> dict[str, int]:
        """Per chat, the live messages of others after both the stream read marker (`after`)
        and the chat's read position (chats.read) that the user may see.

        Bounded: only the chat's newest UNREAD_CAP messages after the markers are looked at
        (a walk down the (chat_id, seq) index), so a count is exact up to UNREAD_CAP.
        """
        rows = await self.db.fetchall(
            "SELECT m.chat_id, m.joined_seq, r.seq FROM members m LEFT JOIN read_positions r"
            " ON r.user_id = m.user_id AND r.chat_id = m.chat_id"
            " WHERE m.user_id = ? AND m.left_seq IS NULL", user_id)
        counts: dict[str, int] = {}
        for chat_id, joined_seq, read_seq in rows:
            since = max(after, int(joined_seq), int(read_seq or 0))
            r = await self.db.fetchone(
                "SELECT COUNT(*) FROM (SELECT author_id FROM messages WHERE chat_id = ?"
                " AND seq > ? AND expires_at > ? ORDER BY seq DESC LIMIT ?) AS recent"
                " WHERE author_id <> ?", chat_id, since, now, UNREAD_CAP, user_id)
            if r is not None and int(r[0]):
                counts[chat_id] = int(r[0])
        return counts
