"""Uploaded files: receiving an upload (naming, size cap, --user-storage, partial files,
a full disk), registering it, and who may download what."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import unicodedata
from functools import partial
from pathlib import Path
from typing import AsyncIterator

from methods import errors
from methods.context import Caller, Services
from methods.logsafe import clean
from methods.rules import new_id
from store.base import is_no_space
from store.models import FileId, StoredFile
from store.sql import FILE_IN_DATABASE, SqlTx

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^\w.\- ()\[\]+,@]+", re.UNICODE)


def sanitize_name(name: str | None) -> str:
    """A display name safe for Content-Disposition: no paths, controls or odd characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:200] or "file"


def new_file_id() -> FileId:
    """An unguessable file id."""
    return FileId(new_id("f"))


def file_path(services: Services, file_id: FileId) -> Path:
    """Where a file's bytes live: a server-chosen name under the data directory."""
    return services.files_dir / file_id


async def register_upload(services: Services, caller: Caller, file_id: FileId, name: str,
                          size: int, content_type: str) -> StoredFile:
    """Record a completely received upload (with --file-store database, its bytes move
    from the file under files/ into the database first)."""
    in_db = services.files_in_database
    stored = StoredFile(file_id, caller.user_id, sanitize_name(name), size,
                        content_type or "application/octet-stream",
                        FILE_IN_DATABASE if in_db else str(file_path(services, file_id)),
                        services.now())

    async def record(tx: SqlTx) -> None:
        await tx.lock_user(caller.user_id)  # concurrent uploads of one user, one at a time
        used = await tx.storage_used(caller.user_id, MIN_CHARGE)
        if used + storage_charge(size) > services.limits.user_storage:
            raise over_storage(services)
        await tx.insert_file(stored)

    if not in_db:
        await services.store.write(record)
    else:
        await copy_into_database(services, file_id)
        try:
            await services.store.write(record)
        except Exception:
            with contextlib.suppress(Exception):  # else the purge removes them later
                await services.store.write_aside(lambda tx: tx.delete_file_chunks(file_id))
            raise
        file_path(services, file_id).unlink(missing_ok=True)
    log.info("%s uploaded %s (%d bytes)", clean(caller.username), file_id, size)
    return stored


FILE_CHUNK = 256 * 1024  # bytes per row of a file kept in the database


async def _put_chunk(file_id: FileId, n: int, data: bytes, now: float, tx: SqlTx) -> None:
    await tx.put_file_chunk(file_id, n, data, now)


async def copy_into_database(services: Services, file_id: FileId) -> None:
    """Store a received file's bytes in the database, a chunk at a time (memory stays
    bounded whatever the file's size); an empty file gets one empty chunk."""
    now = services.now()
    with open(file_path(services, file_id), "rb") as source:
        n = 0
        while True:
            data = source.read(FILE_CHUNK)
            if not data and n:
                return
            await services.store.write_aside(partial(_put_chunk, file_id, n, data, now))
            n += 1
            if not data:
                return


MIN_CHARGE = 4096  # a file takes at least a disk block, so tiny files are not free


def storage_charge(size: int) -> int:
    """What a file of `size` bytes counts toward --user-storage."""
    return max(size, MIN_CHARGE)


async def storage_left(services: Services, caller: Caller) -> int:
    """Bytes the caller may still upload (--user-storage less the files they hold)."""
    used = await services.store.read(lambda tx: tx.storage_used(caller.user_id, MIN_CHARGE))
    return max(0, services.limits.user_storage - used)


def over_storage(services: Services) -> errors.RpcError:
    """413: the caller's files would take more than --user-storage."""
    limit = services.limits.user_storage
    return errors.too_large(f"your files would take more than {limit} bytes "
                            "(they count until they expire)", user_storage=limit)


async def file_for_download(services: Services, caller: Caller, file_id: str) -> StoredFile:
    """The file if the caller uploaded it or is in a chat where it was sent; 404 otherwise."""
    now = services.now()
    if "\x00" in file_id:  # from a %00 in the URL: no id has one, and PostgreSQL can't compare it
        raise errors.not_found("file", file_id=file_id)

    async def lookup(tx: SqlTx) -> StoredFile | None:
        f = await tx.get_file(file_id)
        if f is None or not await tx.may_read_file(file_id, caller.user_id, now):
            return None
        return f

    found = await services.store.read(lookup)
    if found is None:
        raise errors.not_found("file", file_id=file_id)
    return found


def in_database(f: StoredFile) -> bool:
    """Whether a file's bytes are kept in the database (--file-store database)."""
    return f.path == FILE_IN_DATABASE


async def _chunk(file_id: str, n: int, tx: SqlTx) -> bytes | None:
    return await tx.file_chunk(file_id, n)


async def database_chunks(services: Services, f: StoredFile) -> AsyncIterator[bytes] | None:
    """The bytes of a file kept in the database, one stored chunk at a time (memory stays at
    one chunk per download); None if they are gone (purged since it was looked up)."""
    first = await services.store.read(lambda tx: tx.file_chunk(f.file_id, 0))
    if first is None:
        return None

    async def chunks(chunk: bytes | None) -> AsyncIterator[bytes]:
        n = 0
        while chunk is not None:
            yield chunk
            n += 1
            chunk = await services.store.read(partial(_chunk, f.file_id, n))

    return chunks(first)


# -- receiving an upload ------------------------------------------------------------------
UPLOAD_CHUNK = 64 * 1024  # bytes of the request body handed to `Upload.receive` at a time


def partial_name(file_id: str) -> str:
    """The name under files/ of an upload being received (renamed to its id once whole)."""
    return f".{file_id}.part"


def file_id_of_name(name: str) -> str:
    """The file id a name under files/ belongs to: the file's own, or its partial upload's."""
    return name[1:-5] if name.startswith(".") and name.endswith(".part") else name


class UploadRefused(Exception):
    """An upload over a limit: `limit` names which for the log ("upload size" or
    "storage"), `error` is the answer (413)."""

    def __init__(self, limit: str, error: errors.RpcError) -> None:
        super().__init__(error.message)
        self.limit = limit
        self.error = error


def _too_large(services: Services) -> UploadRefused:
    limit = services.limits.max_file_size
    return UploadRefused("upload size", errors.too_large(f"file larger than {limit} bytes"))


class Upload:
    """One upload (POST /files) being received. The HTTP layer only streams the body in and
    writes the answer: `check_size`, `reserve`, `receive`, then `finish`; each refusal is an
    `UploadRefused`, a full disk a `DiskFull`, and no partial file is left behind."""

    def __init__(self, services: Services, caller: Caller, name: str,
                 content_type: str) -> None:
        self.services = services
        self.caller = caller
        self.name = name
        self.content_type = content_type
        self.file_id = new_file_id()
        self.final = file_path(services, self.file_id)
        self.partial = self.final.with_name(partial_name(self.file_id))
        self.cap = services.limits.max_file_size  # bytes it may take (`reserve` lowers it)
        self.size = 0

    def check_size(self, declared: int | None) -> None:
        """Refuse at once a body declared larger than the size limit."""
        if declared is not None and declared > self.services.limits.max_file_size:
            raise _too_large(self.services)

    async def reserve(self, declared: int | None) -> None:
        """--user-storage: refuse at once what cannot fit, and stop reading where it stops
        fitting."""
        left = await storage_left(self.services, self.caller)
        if storage_charge(declared or 0) > left:
            raise UploadRefused("storage", over_storage(self.services))
        self.cap = min(self.services.limits.max_file_size, left)

    async def receive(self, chunks: AsyncIterator[bytes]) -> None:
        """Write the body under a temporary name; refused (and removed) past the cap."""
        try:
            with open(self.partial, "wb") as out:
                async for chunk in chunks:
                    self.size += len(chunk)
                    if self.size > self.cap:
                        break
                    out.write(chunk)
            over = self.size > self.cap
            if over:
                self.partial.unlink()
        except BaseException as exc:
            self._failed(exc)
            raise
        if over:
            if self.size > self.services.limits.max_file_size:
                raise _too_large(self.services)
            raise UploadRefused("storage", over_storage(self.services))

    async def finish(self) -> StoredFile:
        """Register the whole body as the file; `UploadRefused` if it no longer fits
        --user-storage (concurrent uploads)."""
        refused: errors.RpcError | None = None
        try:
            os.replace(self.partial, self.final)
            try:
                stored = await register_upload(self.services, self.caller, self.file_id,
                                               self.name, self.size, self.content_type)
            except errors.RpcError as err:
                self.final.unlink()
                refused = err
        except BaseException as exc:
            self._failed(exc)
            raise
        if refused is not None:
            raise UploadRefused("storage", refused)
        self.services.store.health.disk_ok("uploaded files")
        return stored

    def _failed(self, exc: BaseException) -> None:
        """Remove what was written; a full disk becomes `DiskFull` (507, logged once)."""
        for path in (self.partial, self.final):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if is_no_space(exc):
            raise self.services.store.health.disk_full("uploaded files",
                                                       self.final.parent) from None
