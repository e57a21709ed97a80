"""Domain operations in portable SQL, run through a small connection adapter per dialect.

`SqlTx` is one class composed of one mixin per area (users, chats, events, messages, files,
scheduled messages); what the areas share lives in `store.sql_base`.
"""
from __future__ import annotations

from store.sql_base import (
    FILE_IN_DATABASE, Db, DeferredSends, Row, SendKey, Wakeups, XactInfo, username_key,
)
from store.sql_chats import ChatsSql
from store.sql_events import EventsSql
from store.sql_files import FilesSql
from store.sql_messages import MessagesSql
from store.sql_scheduled import ScheduledSql
from store.sql_users import UsersSql

__all__ = ["FILE_IN_DATABASE", "Db", "DeferredSends", "Row", "SendKey", "SqlTx", "Wakeups",
           "XactInfo", "username_key"]


class SqlTx(UsersSql, ChatsSql, MessagesSql, FilesSql, ScheduledSql, EventsSql):
    """One unit of work: reads and writes as typed operations, no SQL outside `store/`."""
