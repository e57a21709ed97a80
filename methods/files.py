"""Uploaded files: naming, registering an upload, and who may download."""
from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

from methods import errors
from methods.context import Caller, Services
from methods.logsafe import clean
from methods.messages import new_id
from store.models import FileId, StoredFile
from store.sql import SqlTx

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
    """Record a completely received upload."""
    stored = StoredFile(file_id, caller.user_id, sanitize_name(name), size,
                        content_type or "application/octet-stream",
                        str(file_path(services, file_id)), services.now())

    async def record(tx: SqlTx) -> None:
        await tx.lock_user(caller.user_id)  # concurrent uploads of one user, one at a time
        used = await tx.storage_used(caller.user_id, MIN_CHARGE)
        if used + storage_charge(size) > services.limits.user_storage:
            raise over_storage(services)
        await tx.insert_file(stored)

    await services.store.write(record)
    log.info("%s uploaded %s (%d bytes)", clean(caller.username), file_id, size)
    return stored


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
