"""Versioned schema migrations, shared by SQLite and PostgreSQL (dialect tokens in braces),
and the one runner that applies them for either backend."""
from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

log = logging.getLogger(__name__)

DIALECT_TOKENS: dict[str, dict[str, str]] = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL",
               "bigint": "INTEGER", "blob": "BLOB",
               "now": "((julianday('now') - 2440587.5) * 86400.0)"},
    "postgres": {"serial_pk": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION",
                 "bigint": "BIGINT", "blob": "BYTEA",
                 "now": "EXTRACT(EPOCH FROM clock_timestamp())"},
}

# Each entry is one version; never edit a shipped one, append a new one. An entry is SQL for
# both dialects, or a dict {"sqlite": ..., "postgres": ...} where they differ too much.
MIGRATIONS: list[str | dict[str, str]] = [
    """
    CREATE TABLE users (
        user_id {serial_pk},
        username TEXT NOT NULL,
        username_key TEXT NOT NULL UNIQUE,
        pw_hash TEXT NOT NULL,
        read_seq {bigint} NOT NULL DEFAULT 0,
        banned_until {real},
        created_at {real} NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id {bigint} NOT NULL REFERENCES users (user_id),
        client TEXT,
        created_at {real} NOT NULL,
        last_seen {real} NOT NULL
    );
    CREATE INDEX sessions_user ON sessions (user_id);
    CREATE TABLE chats (
        chat_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        title TEXT,
        owner_id {bigint},
        direct_key TEXT UNIQUE,
        link_hash TEXT UNIQUE,
        created_at {real} NOT NULL
    );
    CREATE TABLE members (
        chat_id TEXT NOT NULL REFERENCES chats (chat_id),
        user_id {bigint} NOT NULL REFERENCES users (user_id),
        joined_seq {bigint} NOT NULL,
        left_seq {bigint},
        joined_at {real} NOT NULL,
        PRIMARY KEY (user_id, chat_id)
    );
    CREATE INDEX members_chat ON members (chat_id, user_id);
    CREATE TABLE events (
        seq {serial_pk},
        chat_id TEXT,
        user_id {bigint},
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        message_id TEXT,
        expires_at {real}
    );
    CREATE INDEX events_chat ON events (chat_id, seq);
    CREATE INDEX events_user ON events (user_id, seq);
    CREATE INDEX events_expiry ON events (expires_at);
    CREATE TABLE messages (
        message_id TEXT PRIMARY KEY,
        chat_id TEXT NOT NULL,
        author_id {bigint} NOT NULL,
        author TEXT NOT NULL,
        text TEXT,
        attachments TEXT NOT NULL,
        comment_to TEXT,
        sent_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        seq {bigint} NOT NULL
    );
    CREATE INDEX messages_chat ON messages (chat_id, seq);
    CREATE INDEX messages_expiry ON messages (expires_at);
    CREATE TABLE quota (
        user_id {bigint} NOT NULL,
        window_start {real} NOT NULL,
        used INTEGER NOT NULL,
        PRIMARY KEY (user_id, window_start)
    );
    CREATE TABLE reports (
        reported_id {bigint} NOT NULL,
        reporter_id {bigint} NOT NULL,
        reason TEXT,
        created_at {real} NOT NULL,
        PRIMARY KEY (reported_id, reporter_id)
    );
    CREATE TABLE scheduled (
        scheduled_id TEXT PRIMARY KEY,
        user_id {bigint} NOT NULL,
        chat_id TEXT,
        to_user TEXT,
        text TEXT,
        attachments TEXT NOT NULL,
        comment_to TEXT,
        send_at {real} NOT NULL,
        created_at {real} NOT NULL,
        state TEXT NOT NULL,
        message_id TEXT
    );
    CREATE INDEX scheduled_due ON scheduled (state, send_at);
    CREATE INDEX scheduled_user ON scheduled (user_id, state);
    CREATE TABLE join_requests (
        chat_id TEXT NOT NULL,
        user_id {bigint} NOT NULL,
        created_at {real} NOT NULL,
        PRIMARY KEY (chat_id, user_id)
    );
    CREATE TABLE files (
        file_id TEXT PRIMARY KEY,
        owner_id {bigint} NOT NULL,
        name TEXT NOT NULL,
        size {bigint} NOT NULL,
        content_type TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at {real} NOT NULL
    );
    CREATE TABLE message_files (
        message_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        PRIMARY KEY (message_id, file_id)
    );
    CREATE INDEX message_files_file ON message_files (file_id);
    CREATE TABLE login_failures (
        key TEXT NOT NULL,
        at {real} NOT NULL
    );
    CREATE INDEX login_failures_key ON login_failures (key, at);
    """,
    # 2: open network I (resources: storage per user, scheduled attachments, purge indexes).
    # Files attached to pending scheduled messages, so the purge finds them by index (not by
    # a LIKE over every schedule's attachments); files per owner for --user-storage.
    {
        "sqlite": """
        CREATE TABLE scheduled_files (
            scheduled_id TEXT NOT NULL,
            file_id TEXT NOT NULL,
            PRIMARY KEY (scheduled_id, file_id)
        );
        CREATE INDEX scheduled_files_file ON scheduled_files (file_id);
        INSERT OR IGNORE INTO scheduled_files (scheduled_id, file_id)
            SELECT s.scheduled_id, j.value FROM scheduled s, json_each(s.attachments) j
            WHERE s.state = 'pending';
        CREATE INDEX files_owner ON files (owner_id, size);
        CREATE INDEX files_created ON files (created_at);
        """,
        "postgres": """
        CREATE TABLE scheduled_files (
            scheduled_id TEXT NOT NULL,
            file_id TEXT NOT NULL,
            PRIMARY KEY (scheduled_id, file_id)
        );
        CREATE INDEX scheduled_files_file ON scheduled_files (file_id);
        INSERT INTO scheduled_files (scheduled_id, file_id)
            SELECT s.scheduled_id, j FROM scheduled s,
                json_array_elements_text(s.attachments::json) j
            WHERE s.state = 'pending' ON CONFLICT DO NOTHING;
        CREATE INDEX files_owner ON files (owner_id, size);
        CREATE INDEX files_created ON files (created_at);
        """,
    },
    # 3: messenger essentials (edits, deletes, search, read positions, client_msg_id).
    # Search words (store/sql_messages.py `search_words`) are indexed by FTS5 on SQLite (one
    # row per message, rowid = the message's seq) and by a GIN index on PostgreSQL.
    {
        "sqlite": """
        ALTER TABLE messages ADD COLUMN edited_at REAL;
        ALTER TABLE messages ADD COLUMN client_msg_id TEXT;
        CREATE UNIQUE INDEX messages_client_msg ON messages (author_id, client_msg_id)
            WHERE client_msg_id IS NOT NULL;
        CREATE INDEX messages_seq ON messages (seq);
        CREATE INDEX events_message ON events (message_id);
        CREATE VIRTUAL TABLE messages_fts USING fts5 (
            words, tokenize = 'unicode61 remove_diacritics 0'
        );
        INSERT INTO messages_fts (rowid, words)
            SELECT seq, lower(text) FROM messages WHERE text IS NOT NULL;
        CREATE TABLE read_positions (
            user_id INTEGER NOT NULL,
            chat_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            PRIMARY KEY (user_id, chat_id)
        );
        """,
        "postgres": """
        ALTER TABLE messages ADD COLUMN edited_at DOUBLE PRECISION;
        ALTER TABLE messages ADD COLUMN client_msg_id TEXT;
        ALTER TABLE messages ADD COLUMN search_words TEXT;
        UPDATE messages SET search_words = lower(text) WHERE text IS NOT NULL;
        CREATE UNIQUE INDEX messages_client_msg ON messages (author_id, client_msg_id)
            WHERE client_msg_id IS NOT NULL;
        CREATE INDEX messages_seq ON messages (seq);
        CREATE INDEX events_message ON events (message_id);
        CREATE INDEX messages_search ON messages
            USING GIN (to_tsvector('simple', COALESCE(search_words, '')));
        CREATE TABLE read_positions (
            user_id BIGINT NOT NULL,
            chat_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            message_id TEXT NOT NULL,
            PRIMARY KEY (user_id, chat_id)
        );
        """,
    },
    # 4: faults (login attempts claimed across processes, health).
    """
    """,
    # 5: scale (files in the database, maintained counters).
    """
    -- Uploaded files kept in the database (--file-store database): their bytes in chunks,
    -- written before the files row exists (chunks without one are purged after a while).
    CREATE TABLE file_chunks (
        file_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        data {blob} NOT NULL,
        created_at {real} NOT NULL,
        PRIMARY KEY (file_id, n)
    );
    CREATE INDEX file_chunks_age ON file_chunks (created_at) WHERE n = 0;
    """,
    # 6: open network II (registrations per address, blocks, report/ban bookkeeping, logins).
    """
    -- Logins: one row per password check, claimed before the check runs (failed = 0) and
    -- turned into a failure (failed = 1) or deleted after it, so that checks in flight on
    -- every process count toward the throttle.
    CREATE TABLE login_attempts (
        attempt_id TEXT PRIMARY KEY,
        username_key TEXT NOT NULL,
        address TEXT NOT NULL,
        failed INTEGER NOT NULL,
        at {real} NOT NULL
    );
    CREATE INDEX login_attempts_pair ON login_attempts (username_key, address, at);
    CREATE INDEX login_attempts_address ON login_attempts (address, at);
    DROP TABLE login_failures;
    -- New usernames per client address per fixed window (--register-limit).
    CREATE TABLE registrations (
        address TEXT NOT NULL,
        window_start {real} NOT NULL,
        used INTEGER NOT NULL,
        PRIMARY KEY (address, window_start)
    );
    CREATE INDEX sessions_user_seen ON sessions (user_id, last_seen);
    -- Block lists: blocker_id no longer hears from blocked_id (1-to-1, invites, adds).
    CREATE TABLE blocks (
        blocker_id {bigint} NOT NULL,
        blocked_id {bigint} NOT NULL,
        created_at {real} NOT NULL,
        PRIMARY KEY (blocker_id, blocked_id)
    );
    CREATE INDEX blocks_blocked ON blocks (blocked_id, blocker_id);
    -- Reports: 'counts' toward the next ban, 'young' (the reporter's account was younger than
    -- --report-min-age), 'banned' (made during a ban), 'used' (caused a ban).
    ALTER TABLE reports ADD COLUMN state TEXT NOT NULL DEFAULT 'counts';
    CREATE INDEX reports_state ON reports (reported_id, state);
    """,
    # 7: the general chat (every new account joins it). Databases made by earlier releases
    # have it already: each backend used to insert it after migrating.
    """
    INSERT INTO chats (chat_id, kind, title, owner_id, created_at)
    VALUES ('general', 'general', 'General', NULL, {now}) ON CONFLICT DO NOTHING;
    """,
    # 8: memberships a user ended and then resumed, while the chat went on in between: the
    # events of the old one stay theirs to poll (ChatsSql.add_member), for the message
    # lifetime after the comeback (purge_chunk).
    """
    CREATE TABLE past_members (
        user_id {bigint} NOT NULL,
        chat_id TEXT NOT NULL,
        joined_seq {bigint} NOT NULL,
        left_seq {bigint} NOT NULL,
        resumed_at {real} NOT NULL,
        PRIMARY KEY (user_id, chat_id, joined_seq)
    );
    CREATE INDEX past_members_age ON past_members (resumed_at);
    """,
    # 9: SQLite's search index is written apart from sends, a few hundred messages at a time
    # (SqliteStore.catch_up_search): messages with a seq above this one are not in it yet.
    # Every message stored so far is.
    {
        "sqlite": """
        CREATE TABLE search_index (seq INTEGER NOT NULL);
        INSERT INTO search_index (seq) SELECT COALESCE(MAX(seq), 0) FROM messages;
        """,
        "postgres": "",
    },
    # 10: a chat's events (most of them: every message) have no user_id; they no longer go
    # into the index of events addressed to one user (one B-tree fewer written per send).
    """
    DROP INDEX events_user;
    CREATE INDEX events_user ON events (user_id, seq) WHERE user_id IS NOT NULL;
    """,
]


def render(sql: str | dict[str, str], dialect: str) -> list[str]:
    """Split one migration into statements with the dialect's tokens filled in."""
    if isinstance(sql, dict):
        sql = sql[dialect]
    text = sql.format(**DIALECT_TOKENS[dialect])
    return [s.strip() for s in text.split(";") if s.strip()]


class MigrationConn(Protocol):
    """What the runner needs of a backend's connection."""

    dialect: str

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """One transaction, holding whatever lock keeps other processes from migrating."""

    async def execute(self, sql: str) -> None:
        """Run one statement."""

    async def fetch_value(self, sql: str) -> Any:
        """The first column of the first row of a query."""


async def migrate(conn: MigrationConn) -> None:
    """Bring the database to the newest schema version, all in one transaction."""
    async with conn.transaction():
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = int(await conn.fetch_value(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for stmt in render(sql, conn.dialect):
                await conn.execute(stmt)
            await conn.execute(f"INSERT INTO schema_version (version) VALUES ({version:d})")
            log.info("database migrated to version %d", version)
