"""Versioned schema migrations, shared by SQLite and PostgreSQL (dialect tokens in braces)."""
from __future__ import annotations

DIALECT_TOKENS: dict[str, dict[str, str]] = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL",
               "bigint": "INTEGER"},
    "postgres": {"serial_pk": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION",
                 "bigint": "BIGINT"},
}

# Each entry is one version; never edit a shipped one, append a new one.
MIGRATIONS: list[str] = [
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
    """
    """,
    # 3: messenger essentials (edits, deletes, search, read positions, client_msg_id).
    """
    """,
    # 4: faults (login attempts claimed across processes, health).
    """
    """,
    # 5: scale (files in the database, maintained counters).
    """
    """,
    # 6: open network II (registrations per address, blocks, report/ban bookkeeping, logins).
    """
    """,
]


def render(sql: str, dialect: str) -> list[str]:
    """Split one migration into statements with the dialect's tokens filled in."""
    text = sql.format(**DIALECT_TOKENS[dialect])
    return [s.strip() for s in text.split(";") if s.strip()]
