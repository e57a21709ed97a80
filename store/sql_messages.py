"""Search words and the per-dialect text of the essentials' queries (search, unread counts).

Both backends index the same normalized words, so search means the same on SQLite (FTS5)
and PostgreSQL (a GIN index over to_tsvector('simple', ...)): a word is a run of Unicode
letters, digits or underscores (punctuation separates words), compared case-folded, any
script, accents kept.
"""
from __future__ import annotations

import re

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
