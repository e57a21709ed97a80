"""GET /files/{id} for a file kept in the database (--file-store database)."""
from __future__ import annotations

from aiohttp import web

from methods.context import Services
from methods.files import database_chunks
from store.models import StoredFile


async def database_download(request: web.Request, services: Services, f: StoredFile,
                            headers: dict[str, str]) -> web.StreamResponse | None:
    """Stream the file's chunks one by one: memory stays at one chunk per download.
    None if its bytes are gone (purged since it was looked up)."""
    chunks = await database_chunks(services, f)
    if chunks is None:
        return None
    resp = web.StreamResponse(headers=headers)
    resp.content_length = f.size
    await resp.prepare(request)
    async for chunk in chunks:
        if chunk:
            await resp.write(chunk)
    await resp.write_eof()
    return resp
