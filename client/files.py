"""Local file handling of uploads and downloads: chunked reads, safe names, no overwriting."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Protocol

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None when unknown)."""

CHUNK_SIZE = 64 * 1024


class Reader(Protocol):
    """What an upload reads from: an open binary file, or `BytesReader`."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


async def read_chunks(handle: Reader, progress: ProgressCallback | None,
                      total: int | None) -> AsyncGenerator[bytes, None]:
    """Yield a file's content chunk by chunk, reading off the event loop."""
    done = 0
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, CHUNK_SIZE)
            if not chunk:
                return
            done += len(chunk)
            yield chunk
            if progress is not None:
                progress(done, total)
    finally:
        handle.close()


def move_without_overwriting(partial: Path, dest: Path) -> Path:
    """Move `partial` to `dest`, or to `dest (1)`, `dest (2)`... if taken; where it went.

    A hard link fails when the name exists, so two downloads cannot pick the same name."""
    for n in range(10000):
        candidate = dest if n == 0 else dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
        try:
            os.link(partial, candidate)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some file systems): check, then rename
            if candidate.exists():
                continue
            os.replace(partial, candidate)
            return candidate
        partial.unlink()
        return candidate
    raise FileExistsError(f"no free name for {dest}")


def safe_file_name(name: str) -> str:
    """A server-given file name reduced to a harmless base name."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return base if base not in ("", ".", "..") else "download"


class BytesReader:
    """A minimal binary reader over bytes, so uploads of bytes stream like files do."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left when negative)."""
        end = len(self._view) if size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos:end])
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        """Release the buffer."""
        self._view.release()
