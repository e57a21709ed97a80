"""Processes on different machines: uploads in the database (--file-store), sessions."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

import aiohttp

from tests.support import Api, ServerProcess, unique_name
from tests.test_files import download, uploaded


async def test_two_processes_with_their_own_data_dirs_serve_each_others_files(
        server_factory: Callable[..., ServerProcess], pg_url: str, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    flags = ("--store", "postgres", "--database-url", pg_url)  # database: the default
    one = server_factory(*flags, data_dir=tmp_path / "machine1")
    two = server_factory(*flags, data_dir=tmp_path / "machine2")
    alice, bob = Api(http, one.url), Api(http, two.url)
    await alice.connect(unique_name("fa"))
    await bob.connect(unique_name("fb"))
    big = os.urandom(700 * 1024 + 17)  # several chunks, the last one partial
    sent = await uploaded(alice, big, "big.bin")
    empty = await uploaded(alice, b"", "empty.txt", "text/plain")
    await alice.call("messages.send", to=bob.username, text="files",
                     attachments=[sent["file_id"], empty["file_id"]])
    status, headers, body = await download(bob, sent["file_id"])
    assert status == 200 and body == big
    assert headers["Content-Type"] == "application/octet-stream"
    status, _, body = await download(bob, empty["file_id"])
    assert status == 200 and body == b""
    # Nothing of it stayed on either machine's disk.
    for data_dir in (tmp_path / "machine1", tmp_path / "machine2"):
        assert not any(p.is_file() for p in (data_dir / "files").glob("*"))
    # The rules are the same: someone the file was never sent to gets 404 on either process.
    carol = Api(http, two.url)
    await carol.connect(unique_name("fc"))
    status, _, _ = await download(carol, sent["file_id"])
    assert status == 404


async def test_disk_flag_keeps_files_on_disk(
        server_factory: Callable[..., ServerProcess], pg_url: str, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    one = server_factory("--store", "postgres", "--database-url", pg_url, "--file-store", "disk",
                         data_dir=tmp_path / "disk")
    alice = Api(http, one.url)
    await alice.connect(unique_name("fd"))
    sent = await uploaded(alice, b"on disk", "d.txt", "text/plain")
    assert (tmp_path / "disk" / "files" / sent["file_id"]).read_bytes() == b"on disk"
    status, _, body = await download(alice, sent["file_id"])
    assert status == 200 and body == b"on disk"


async def test_a_disconnect_on_one_process_ends_the_session_on_the_other_at_once(
        server_factory: Callable[..., ServerProcess], pg_url: str,
        http: aiohttp.ClientSession) -> None:
    """Processes reuse session lookups for a few seconds; a disconnect elsewhere still
    takes effect at once (it arrives by NOTIFY)."""
    flags = ("--store", "postgres", "--database-url", pg_url)
    one, two = server_factory(*flags), server_factory(*flags)
    alice = Api(http, one.url)
    await alice.connect(unique_name("sa"))
    on_two = Api(http, two.url, alice.token)
    for _ in range(3):  # looked up, then answered from the cache
        assert (await on_two.call("session.status"))["username"] == alice.username
    await alice.call("session.disconnect")
    await asyncio.sleep(0.2)  # the NOTIFY's way to the other process
    assert (await on_two.error("session.status")).code == 401
