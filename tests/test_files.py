"""File uploads end to end: round trips, the size limit, names, access, expiry and memory."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from urllib.parse import unquote

import aiohttp
import pytest

from tests.helpers import (
    connect_users, db_rows, events_until, rfc3339, stored_files, ts,
)
from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess, running_server, wait_until

ServerFactory = Callable[..., ServerProcess]
InProcFactory = Callable[..., Awaitable[InProcessServer]]
MiB = 1024 * 1024
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00"
       b"\x00\x1f\xf3\xffa")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server (5 MiB limit) for the tests that need no special settings."""
    with running_server(
            tmp_path_factory.mktemp("files") / "data") as proc:
        yield proc


async def upload(api: Api, body: bytes | AsyncIterator[bytes], name: str | None = "f.bin",
                 content_type: str | None = "application/octet-stream",
                 headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """POST /files; HTTP status and decoded JSON answer."""
    hdrs = dict(api.headers() if headers is None else headers)
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    params = {} if name is None else {"name": name}
    skip = () if content_type is not None else ("Content-Type",)
    async with api.http.post(api.url + "/files", params=params, data=body, headers=hdrs,
                             skip_auto_headers=skip) as r:
        return r.status, await r.json(content_type=None)


async def download(api: Api, file_id: str, headers: Mapping[str, str] | None = None
                   ) -> tuple[int, Mapping[str, str], bytes]:
    """GET /files/{id}; status, headers and body."""
    hdrs = api.headers() if headers is None else headers
    async with api.http.get(f"{api.url}/files/{file_id}", headers=hdrs) as r:
        return r.status, r.headers, await r.read()


async def uploaded(api: Api, body: bytes, name: str = "f.bin",
                   content_type: str = "application/octet-stream") -> dict[str, Any]:
    """Upload that must succeed; the file object."""
    status, answer = await upload(api, body, name, content_type)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    """`data` as a chunked request body (no Content-Length)."""
    for i in range(0, len(data), size):
        yield data[i:i + size]
        await asyncio.sleep(0)


def disposition_name(header: str) -> str:
    """The file name a Content-Disposition header announces (filename* or filename)."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename*":
            charset, _, encoded = value.partition("''")
            assert charset.upper() == "UTF-8", header
            return unquote(encoded)
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename":
            return value.strip('"')
    raise AssertionError(f"no file name in {header!r}")


def assert_error_body(body: Any, code: int) -> None:
    """The JSON error shape of /files and /poll."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code and isinstance(body["error"]["message"], str), body


async def test_round_trip_of_several_formats(shared_server: ServerProcess,
                                             http: aiohttp.ClientSession) -> None:
    """Bytes, type and name come back exactly as uploaded."""
    (owner,) = await connect_users(http, shared_server, 1)
    samples = [
        ("random.bin", os.urandom(256 * 1024 + 17), "application/octet-stream"),
        ("picture.png", PNG + os.urandom(4096), "image/png"),
        ("notes.txt", "héllo wörld ✓ — 日本語\r\n".encode() * 300, "text/plain; charset=utf-8"),
        ("résumé 2024.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + os.urandom(999), "application/pdf"),
        ("empty.dat", b"", "application/octet-stream"),
    ]
    for name, data, content_type in samples:
        f = await uploaded(owner, data, name, content_type)
        assert set(f) == {"file_id", "name", "size", "content_type"}
        assert (f["name"], f["size"], f["content_type"]) == (name, len(data), content_type)
        status, headers, body = await download(owner, f["file_id"])
        assert status == 200, name
        assert body == data, name
        assert headers["Content-Type"] == content_type
        assert int(headers["Content-Length"]) == len(data)
        assert disposition_name(headers["Content-Disposition"]) == name
        assert (shared_server.data_dir / "files" / f["file_id"]).read_bytes() == data

    # Without a Content-Type the bytes are stored as application/octet-stream.
    status, answer = await upload(owner, b"\x00\x01\x02", "raw", content_type=None)
    assert status == 200 and answer["content_type"] == "application/octet-stream", answer
    status, headers, body = await download(owner, answer["file_id"])
    assert (status, body) == (200, b"\x00\x01\x02")
    assert headers["Content-Type"] == "application/octet-stream"


async def test_size_limit_boundary(server_factory: ServerFactory,
                                   http: aiohttp.ClientSession) -> None:
    """Exactly the limit is fine; one byte more is 413 and leaves nothing behind."""
    limit = 1000
    server = server_factory("--max-file-size", str(limit))
    (owner,) = await connect_users(http, server, 1)
    before = stored_files(server)
    kept: set[str] = set()

    data = os.urandom(limit)
    f = await uploaded(owner, data, "exact.bin")
    assert f["size"] == limit
    kept.add(f["file_id"])
    assert (await download(owner, f["file_id"]))[2] == data
    chunked = os.urandom(limit)
    status, answer = await upload(owner, chunks(chunked, 300), "exact-chunked.bin")
    assert status == 200 and answer["size"] == limit, answer
    kept.add(answer["file_id"])
    assert (await download(owner, answer["file_id"]))[2] == chunked

    refusals: list[tuple[str, bytes | AsyncIterator[bytes]]] = [
        ("plain +1", os.urandom(limit + 1)),
        ("chunked +1", chunks(os.urandom(limit + 1), 300)),
        ("chunked far over", chunks(os.urandom(200_000), 16 * 1024)),
        ("plain far over", os.urandom(3 * limit))]
    for label, body in refusals:
        status, answer = await upload(owner, body, f"{label}.bin")
        assert status == 413, (label, answer)
        assert_error_body(answer, 413)

    # Nothing of the refused uploads is on disk, not even a partial file, nor in the database.
    assert stored_files(server) == before | kept
    assert {r[0] for r in db_rows(server, "SELECT file_id FROM files")} == kept
    # The server is fine afterwards.
    small = await uploaded(owner, b"ok", "after.txt", "text/plain")
    assert (await download(owner, small["file_id"]))[2] == b"ok"


async def test_aborted_upload_leaves_nothing(shared_server: ServerProcess,
                                             http: aiohttp.ClientSession) -> None:
    """A client that hangs up mid-body gets no (truncated) file stored, partial or not."""
    (owner,) = await connect_users(http, shared_server, 1)
    before = stored_files(shared_server)
    rows_before = db_rows(shared_server, "SELECT COUNT(*) FROM files")[0][0]
    head = (f"POST /files?name=cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {owner.token}\r\n")
    bodies = [head.encode() + b"Content-Length: 100000\r\n\r\n" + b"a" * 40000,
              head.encode() + b"Transfer-Encoding: chunked\r\n\r\n9c40\r\n" + b"a" * 40000
              + b"\r\n9c40\r\n" + b"a" * 100]
    for raw in bodies:
        _, writer = await asyncio.open_connection("127.0.0.1", shared_server.port)
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.2)  # the server is now waiting for the rest
        writer.close()
        await writer.wait_closed()

    async def settled() -> bool:
        return stored_files(shared_server) == before

    await wait_until(settled, timeout=3)
    await asyncio.sleep(0.2)
    assert stored_files(shared_server) == before
    assert db_rows(shared_server, "SELECT COUNT(*) FROM files")[0][0] == rows_before
    f = await uploaded(owner, b"still works", "after.txt", "text/plain")
    assert (await download(owner, f["file_id"]))[:3:2] == (200, b"still works")


async def test_names_are_sanitised(shared_server: ServerProcess,
                                   http: aiohttp.ClientSession) -> None:
    """Names lose path separators and control characters; files stay under files/."""
    (owner,) = await connect_users(http, shared_server, 1)
    hostile = ["../../etc/passwd", "..\\..\\windows\\win.ini", "/abs/path/to/x.txt",
               "evil\r\nX-Injected: yes.txt", "nul\x00byte.txt", "..", ".", "", None,
               "a" * 1000 + ".txt", "\u202egnp.exe"]
    for name in hostile:
        status, answer = await upload(owner, b"payload", name)
        assert status == 200, (name, answer)
        clean = answer["name"]
        assert clean and clean not in (".", ".."), (name, clean)
        for bad in ("/", "\\", "\r", "\n", "\x00", "\u202e"):
            assert bad not in clean, (name, clean)
        assert not clean.startswith("."), (name, clean)
        assert len(clean) <= 255, (name, len(clean))
        status, headers, body = await download(owner, answer["file_id"])
        assert status == 200 and body == b"payload"
        assert "X-Injected" not in headers
        assert disposition_name(headers["Content-Disposition"]) == clean
    names = [(await upload(owner, b"x", n))[1]["name"]
             for n in ("../../etc/passwd", "..\\..\\windows\\win.ini")]
    assert "passwd" in names[0] and "win.ini" in names[1], names

    # Every stored file is a server-chosen name directly under files/; nothing escaped.
    files_dir = shared_server.data_dir / "files"
    assert all(p.is_file() and p.name.startswith("f_") for p in files_dir.iterdir())
    root = shared_server.data_dir.parent
    assert not [p for p in root.rglob("*") if p.name in ("passwd", "win.ini", "x.txt")]


async def test_attachments_and_who_may_download(shared_server: ServerProcess,
                                                http: aiohttp.ClientSession) -> None:
    """Attachments show as file objects; members download; outsiders and others' ids fail."""
    owner, member, outsider, friend = await connect_users(http, shared_server, 4)
    gid = (await owner.call("chats.create", title="files",
                            members=[member.username]))["chat"]["chat_id"]
    doc_bytes, png_bytes, note_bytes = os.urandom(3000), PNG + os.urandom(500), b"just mine"
    doc = await uploaded(owner, doc_bytes, "report.bin")
    png = await uploaded(owner, png_bytes, "photo.png", "image/png")
    note = await uploaded(owner, note_bytes, "note.txt", "text/plain")

    with_text = (await owner.call("messages.send", chat_id=gid, text="see attached",
                                  attachments=[doc["file_id"]]))["message"]
    assert with_text["attachments"] == [doc] and with_text["text"] == "see attached"
    only_files = (await owner.call("messages.send", chat_id=gid,
                                   attachments=[png["file_id"], doc["file_id"]]))["message"]
    assert only_files["attachments"] == [png, doc] and only_files["text"] is None
    seen = await events_until(member, lambda e: e["type"] == "message"
                              and e["message"]["message_id"] == only_files["message_id"])
    assert [e["message"]["attachments"] for e in seen if e["type"] == "message"] == [
        [doc], [png, doc]]
    history = await member.call("messages.history", chat_id=gid)
    assert [m["attachments"] for m in history["messages"]] == [[doc], [png, doc]]

    # Members download; the outsider gets nothing, and nobody but the uploader gets the unsent.
    for f, data in ((doc, doc_bytes), (png, png_bytes)):
        status, headers, body = await download(member, f["file_id"])
        assert (status, body) == (200, data)
        assert headers["Content-Type"] == f["content_type"]
    for user, f in ((outsider, doc), (outsider, png), (member, note), (outsider, note)):
        status, _, body = await download(user, f["file_id"])
        assert status in (403, 404) and body != note_bytes and b"PNG" not in body, status
    assert (await download(owner, note["file_id"]))[:3:2] == (200, note_bytes)
    assert (await download(member, "f_doesnotexist"))[0] == 404

    # Only one's own uploads can be attached; a refused send stores nothing.
    for attachments in ([doc["file_id"]], ["f_doesnotexist"], [note["file_id"]]):
        failure = await member.error("messages.send", chat_id=gid, text="mine now",
                                     attachments=attachments)
        assert failure.code == 404, attachments
    assert len((await owner.call("messages.history", chat_id=gid))["messages"]) == 2

    # Sent into the general chat, the same file reaches everyone there.
    await owner.call("messages.send", chat_id="general", attachments=[doc["file_id"]])
    assert (await download(outsider, doc["file_id"]))[:3:2] == (200, doc_bytes)
    assert (await download(outsider, png["file_id"]))[0] in (403, 404)
    # A direct message shares it with the one recipient.
    await owner.call("messages.send", to=friend.username, text="for you",
                     attachments=[note["file_id"]])
    assert (await download(friend, note["file_id"]))[:3:2] == (200, note_bytes)
    assert (await download(outsider, note["file_id"]))[0] in (403, 404)
    # Leaving the group ends access to what was only shared there.
    await member.call("chats.leave", chat_id=gid)
    assert (await download(member, png["file_id"]))[0] in (403, 404)


async def test_files_need_a_token(shared_server: ServerProcess,
                                  http: aiohttp.ClientSession) -> None:
    """No or a bad token: 401 with a JSON error body, and nothing stored."""
    (owner,) = await connect_users(http, shared_server, 1)
    f = await uploaded(owner, b"secret bytes", "s.txt", "text/plain")
    before = stored_files(shared_server)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic xx"}):
        status, answer = await upload(owner, b"sneaky", "x.bin", headers=headers)
        assert status == 401, (headers, answer)
        assert_error_body(answer, 401)
        async with http.get(f"{shared_server.url}/files/{f['file_id']}", headers=headers) as r:
            assert r.status == 401
            assert_error_body(await r.json(content_type=None), 401)
    assert stored_files(shared_server) == before
    # A disconnected session's token stops working for files too.
    await owner.call("session.disconnect")
    status, answer = await upload(owner, b"sneaky", "x.bin")
    assert status == 401
    assert_error_body(answer, 401)
    assert (await download(owner, f["file_id"]))[0] == 401


async def test_expiry_removes_files(inproc_factory: InProcFactory,
                                    http: aiohttp.ClientSession) -> None:
    """When its message expires the file goes: 404 and no bytes on disk; a pending schedule
    keeps its attachment alive until it is sent. (In-process with a FakeClock: an hour's TTL
    moved through instead of slept; the background purger's pass is run by the test.)"""
    ttl = 3600.0
    server = await inproc_factory("--message-ttl", str(ttl))
    sender, reader = await connect_users(http, server, 2)
    data = os.urandom(2048)
    f = await uploaded(sender, data, "ephemeral.bin")
    later = await uploaded(sender, b"for later", "later.txt", "text/plain")
    path = server.data_dir / "files" / f["file_id"]
    message = (await sender.call("messages.send", chat_id="general", text="short",
                                 attachments=[f["file_id"]]))["message"]
    due = server.now() + ttl + 2400
    await sender.call("messages.send", to=reader.username, text="attached later",
                      attachments=[later["file_id"]], send_at=rfc3339(due))
    assert (await download(reader, f["file_id"]))[:3:2] == (200, data)
    assert path.read_bytes() == data

    async def gone() -> bool:
        statuses = {(await download(u, f["file_id"]))[0] for u in (reader, sender)}
        return statuses == {404} and not path.exists()

    await server.advance_to(ts(message["expires_at"]) - 30)
    await server.purge()
    assert (await download(reader, f["file_id"]))[:3:2] == (200, data)
    await server.advance_to(ts(message["expires_at"]) + 0.05)
    await server.purge()
    assert await gone()
    assert not db_rows(server, "SELECT 1 FROM files WHERE file_id = ?", f["file_id"])

    # The scheduled message's file outlived the ttl because it was still to be sent.
    assert (await download(sender, later["file_id"]))[:3:2] == (200, b"for later")
    await server.advance_to(due)
    seen = await events_until(reader, lambda e: e["type"] == "message"
                              and e["message"]["text"] == "attached later", timeout=4)
    delivered = next(e["message"] for e in seen if e["type"] == "message"
                     and e["message"]["text"] == "attached later")
    assert delivered["attachments"] == [later]
    assert (await download(reader, later["file_id"]))[:3:2] == (200, b"for later")


def memory_kib(pid: int, field: str) -> int:
    """A VmRSS/VmHWM line of /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def test_memory_stays_flat_while_uploads_stream(shared_server: ServerProcess,
                                                      http: aiohttp.ClientSession) -> None:
    """Limit-sized uploads stream to disk: the server's RSS grows by far less than one upload.

    A streaming server holds at most aiohttp's read buffer (it stops reading the socket past
    ~128 KiB) plus one 64 KiB chunk per upload: well under 1 MiB for three at once. A server
    that read bodies into memory would need 5 MiB per upload, 15 MiB for three concurrent
    ones. 3 MiB of growth leaves room for allocator noise and still catches even one body
    buffered whole. The peak is read from VmHWM (reset first via clear_refs) and from VmRSS
    samples taken every few milliseconds during the uploads.
    """
    assert shared_server.proc is not None
    pid = shared_server.proc.pid
    size = 5 * MiB
    (owner,) = await connect_users(http, shared_server, 1)  # scrypt's 16 MiB happens here
    payloads = [os.urandom(size) for _ in range(3)]
    for data in payloads[:2]:  # warm up: first-use allocations are not growth
        await uploaded(owner, data, "warmup.bin")
    await asyncio.sleep(0.2)

    hwm_reset = False
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak-RSS high-water mark
        hwm_reset = True
    baseline = memory_kib(pid, "VmRSS")
    peak = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, memory_kib(pid, "VmRSS"))
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    results: list[dict[str, Any]] = []
    for _ in range(2):
        results += await asyncio.gather(*(uploaded(owner, data, "big.bin")
                                          for data in payloads))
    stop.set()
    await sampler
    if hwm_reset:
        peak = max(peak, memory_kib(pid, "VmHWM"))

    assert [r["size"] for r in results] == [size] * 6
    for r in results[:3]:
        assert (shared_server.data_dir / "files" / r["file_id"]).stat().st_size == size
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 3, f"server RSS grew by {growth_mib:.1f} MiB during 6 x 5 MiB uploads"
    # And the limit itself holds at the default size.
    status, answer = await upload(owner, chunks(os.urandom(size + 1), 256 * 1024), "over.bin")
    assert status == 413
    assert_error_body(answer, 413)


async def test_start_up_sweeps_orphaned_files(server_factory: ServerFactory,
                                              http: aiohttp.ClientSession) -> None:
    """Bytes the database does not know (a crash mid-upload) are removed at start-up once
    they are old enough that no upload can still be writing them; known files stay."""
    server = server_factory()
    sender, = await connect_users(http, server, 1)
    kept = await uploaded(sender, b"keep me", "kept.txt", "text/plain")
    files = server.data_dir / "files"
    old = time.time() - 2 * 3600
    orphans = [files / "f_orphaned_bytes", files / ".f_interrupted.part"]
    fresh = files / ".f_uploading_now.part"
    for path in (*orphans, fresh):
        path.write_bytes(b"x" * 100)
    for path in orphans:
        os.utime(path, (old, old))
    os.utime(files / kept["file_id"], (old, old))
    server.restart()

    async def swept() -> bool:
        return not any(p.exists() for p in orphans)

    await wait_until(swept, timeout=5)
    assert fresh.exists()
    assert (files / kept["file_id"]).read_bytes() == b"keep me"
