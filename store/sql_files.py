"""Uploaded files, their bytes kept in the database, and the expiry purge."""
from __future__ import annotations

from store.models import ChatId, FileId, MessageId, StoredFile, UserId
from store.sql_base import ATTACH_FILE, FILE_COLS, FILE_IN_DATABASE, SqlTxBase, file_from


class FilesSql(SqlTxBase):
    """`SqlTx`, one area: files, their bytes kept in the database, the expiry purge."""

    # -- files -----------------------------------------------------------------------------
    async def insert_file(self, f: StoredFile) -> None:
        """Record an uploaded file."""
        await self.db.execute(
            f"INSERT INTO files ({FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            f.file_id, f.owner_id, f.name, f.size, f.content_type, f.path, f.created_at)

    async def storage_used(self, owner_id: UserId, min_charge: int) -> int:
        """Bytes of the files a user holds, each counted as at least `min_charge`."""
        r = await self.db.fetchone(
            "SELECT COALESCE(SUM(CASE WHEN size < ? THEN ? ELSE size END), 0) FROM files"
            " WHERE owner_id = ?", min_charge, min_charge, owner_id)
        return int(r[0]) if r else 0

    async def file_ids(self) -> set[str]:
        """Every file id the database knows."""
        return {r[0] for r in await self.db.fetchall("SELECT file_id FROM files")}

    async def get_file(self, file_id: str) -> StoredFile | None:
        """A file's metadata."""
        r = await self.db.fetchone(f"SELECT {FILE_COLS} FROM files WHERE file_id = ?", file_id)
        return None if r is None else file_from(r)

    async def attach_file(self, message_id: MessageId, file_id: FileId, chat_id: ChatId) -> None:
        """Record that a file was sent in a message of a chat."""
        if self._deferred is not None:  # after its message (`flush_sends`)
            self._deferred.files.append((message_id, file_id, chat_id))
            return
        await self.db.execute(ATTACH_FILE, message_id, file_id, chat_id)

    async def may_read_file(self, file_id: str, user_id: UserId, now: float) -> bool:
        """The uploader, or a member of a chat where a live message carries the file."""
        r = await self.db.fetchone(
            "SELECT 1 FROM files WHERE file_id = ? AND owner_id = ?"
            " UNION ALL SELECT 1 FROM message_files f"
            " JOIN messages msg ON msg.message_id = f.message_id AND msg.expires_at > ?"
            " JOIN members m ON m.chat_id = f.chat_id AND m.user_id = ? AND m.left_seq IS NULL"
            " WHERE f.file_id = ? LIMIT 1", file_id, user_id, now, user_id, file_id)
        return r is not None

    # -- expiry ----------------------------------------------------------------------------
    async def purge_expired(self, now: float, unsent_file_before: float) -> list[str]:
        """Delete expired messages and their events, and files nobody can reach any more.

        Returns the disk paths of the deleted files, to be removed after the commit.
        """
        paths: list[str] = []
        while True:
            chunk, more = await self.purge_chunk(now, unsent_file_before, 1000)
            paths += chunk
            if not more:
                return paths

    async def purge_chunk(self, now: float, unsent_file_before: float,
                          limit: int) -> tuple[list[str], bool]:
        """One bounded round of `purge_expired` (at most `limit` rows of each kind, all
        through indexes); the deleted files' paths, and whether more may be left."""
        events = await self.db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE expires_at IS NOT"
            " NULL AND expires_at <= ? LIMIT ?)", now, limit)
        rows = await self.db.fetchall(
            "SELECT message_id, seq FROM messages WHERE expires_at <= ? LIMIT ?", now, limit)
        if rows:
            ids = [r[0] for r in rows]
            marks = ", ".join("?" * len(ids))
            await self.db.execute(f"DELETE FROM message_files WHERE message_id IN ({marks})",
                                  *ids)
            if self.db.dialect == "sqlite":  # the search index of the expired messages
                await self.db.execute(f"DELETE FROM messages_fts WHERE rowid IN ({marks})",
                                      *[r[1] for r in rows])
            await self.db.execute(f"DELETE FROM messages WHERE message_id IN ({marks})", *ids)
        files = await self.db.fetchall(
            "SELECT file_id, path FROM files f WHERE created_at <= ? AND NOT EXISTS"
            " (SELECT 1 FROM message_files mf WHERE mf.file_id = f.file_id) AND NOT EXISTS"
            " (SELECT 1 FROM scheduled_files sf WHERE sf.file_id = f.file_id) LIMIT ?",
            unsent_file_before, limit)
        if files:
            ids = [r[0] for r in files]
            await self.db.execute(
                f"DELETE FROM files WHERE file_id IN ({', '.join('?' * len(ids))})", *ids)
            await self._delete_chunks_of(ids)
        # Past memberships (ChatsSql.add_member) are kept for the message lifetime after
        # their owner came back, the same cutoff as files nobody sent.
        past = await self.db.execute(
            "DELETE FROM past_members WHERE (user_id, chat_id, joined_seq) IN (SELECT user_id,"
            " chat_id, joined_seq FROM past_members WHERE resumed_at <= ? LIMIT ?)",
            unsent_file_before, limit)
        orphans = await self.purge_orphan_chunks(unsent_file_before, limit)
        more = max(events, len(rows), len(files), past, orphans) >= limit
        return [r[1] for r in files if r[1] != FILE_IN_DATABASE], more

    # -- files kept in the database (--file-store database) --------------------------------
    async def put_file_chunk(self, file_id: str, n: int, data: bytes, now: float) -> None:
        """Store chunk `n` (from 0) of a file's bytes."""
        await self.db.execute(
            "INSERT INTO file_chunks (file_id, n, data, created_at) VALUES (?, ?, ?, ?)",
            file_id, n, data, now)

    async def file_chunk(self, file_id: str, n: int) -> bytes | None:
        """Chunk `n` of a file's bytes; None past the last."""
        r = await self.db.fetchone("SELECT data FROM file_chunks WHERE file_id = ? AND n = ?",
                                   file_id, n)
        return None if r is None else bytes(r[0])

    async def delete_file_chunks(self, file_id: str) -> None:
        """Forget a file's bytes (its upload was refused after they were stored)."""
        await self.db.execute("DELETE FROM file_chunks WHERE file_id = ?", file_id)

    async def purge_orphan_chunks(self, before: float, limit: int) -> int:
        """Delete the bytes of up to `limit` files stored before `before` that never got a
        files row (the process died between storing and registering them); how many."""
        rows = await self.db.fetchall(
            "SELECT c.file_id FROM file_chunks c WHERE c.n = 0 AND c.created_at <= ?"
            " AND NOT EXISTS (SELECT 1 FROM files f WHERE f.file_id = c.file_id) LIMIT ?",
            before, limit)
        if rows:
            await self._delete_chunks_of([r[0] for r in rows])
        return len(rows)

    async def _delete_chunks_of(self, file_ids: list[str]) -> None:
        """Forget the bytes of these files (kept in the database)."""
        await self.db.execute(
            f"DELETE FROM file_chunks WHERE file_id IN ({', '.join('?' * len(file_ids))})",
            *file_ids)
