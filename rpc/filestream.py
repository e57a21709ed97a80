"""GET /files/{id} for a file kept in the database (--file-store database)."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from store.base import Store
from store.models import StoredFile
from store.sql import SqlTx


async def _chunk(file_id: str, n: int, tx: SqlTx) -> bytes | None:
    return await tx.file_chunk(file_id, n)


async def database_download(request: web.Request, store: Store, f: StoredFile,
                            headers: dict[str, str]) -> web.StreamResponse | None:
    """Stream the file's chunks one by one: memory stays at one chunk per download.
    None if its bytes are gone (purged since it was looked up)."""
    first = await store.read(lambda tx: tx.file_chunk(f.file_id, 0))
    if first is None:
        return None
    resp = web.StreamResponse(headers=headers)
    resp.content_length = f.size
    await resp.prepare(request)
    chunk: bytes | None = first
    n = 0
    while chunk is not None:
        if chunk:
            await resp.write(chunk)
        n += 1
        chunk = await store.read(partial(_chunk, f.file_id, n))
    await resp.write_eof()
    return resp
