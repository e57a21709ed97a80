"""Uploaded files: naming, registering an upload, and who may download."""
from __future__ import annotations

import contextlib
import logging
import re
import unicodedata
from functools import partial
from pathlib import Path

from methods import errors
from methods.context import Caller, Services
from methods.logsafe import clean
from methods.rules import new_id
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
