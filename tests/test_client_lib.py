"""The client library against a real server: typed calls, poll loop, reconnects, errors, files."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from client import Event, MessengerClient, PollLoop, RpcError, ServerUnavailable
from tests.support import CHECK, ServerProcess, free_port, unique_name

ClientFactory = Callable[..., MessengerClient]


class Recorder:
    """Schema-checks every result and event the client sees, and remembers them."""

    def __init__(self) -> None:
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []

    def result(self, method: str, result: dict[str, Any]) -> None:
        CHECK.result(method, result)
        self.results.append((method, result))

    def event(self, event: dict[str, Any]) -> None:
        CHECK.event(event)
        self.events.append(event)


@pytest.fixture
def recorder() -> Recorder:
    """One recorder shared by the clients of a test."""
    return Recorder()


@pytest.fixture
async def make_client(server: ServerProcess,
                      recorder: Recorder) -> AsyncIterator[ClientFactory]:
    """Make schema-checked clients of the test's server; all closed afterwards."""
    clients: list[MessengerClient] = []

    def make(url: str | None = None, **kwargs: Any) -> MessengerClient:
        client = MessengerClient(url or server.url, on_result=recorder.result,
                                 on_event=recorder.event, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def logged_in(make_client: ClientFactory, prefix: str) -> tuple[MessengerClient, str]:
    """A new user's client, connected."""
    client = make_client()
    name = unique_name(prefix)
    await client.connect(name, "pw")
    return client, name


async def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_connect_send_history_status_with_schema_hooks(
        make_client: ClientFactory, recorder: Recorder) -> None:
    alice, alice_name = await logged_in(make_client, "al")
    assert alice.token
    sent = await alice.send(chat_id="general", text="hello world")
    message = sent["message"]
    assert message["author"] == alice_name and message["text"] == "hello world"
    assert message["attachments"] == [] and message["comment_to"] is None

    bob = make_client()
    connected = await bob.connect(unique_name("bo"), "pw", client="tests")
    assert connected["general_chat_id"] == "general"
    assert [m["message_id"] for m in connected["history"]] == [message["message_id"]]

    history = await bob.history("general", limit=10)
    assert [m["text"] for m in history["messages"]] == ["hello world"]
    assert history["more"] is False
    status = await bob.status()
    assert status["username"] == connected["username"]
    assert [c["chat_id"] for c in status["chats"]] == ["general"]
    assert status["sessions"][0]["client"] == "tests" and status["sessions"][0]["current"]
    assert status["banned_until"] is None and status["quota"]["limit"] > 0
    # Every result went through the hook (and so through its schema).
    assert [m for m, _ in recorder.results] == [
        "session.connect", "messages.send", "session.connect", "messages.history",
        "session.status"]


async def test_every_typed_method(make_client: ClientFactory, recorder: Recorder) -> None:
    owner, owner_name = await logged_in(make_client, "ow")
    friend, friend_name = await logged_in(make_client, "fr")
    joiner, joiner_name = await logged_in(make_client, "jo")

    chat = (await owner.create_chat("Team", [friend_name]))["chat"]
    assert chat["kind"] == "group" and chat["title"] == "Team"
    assert sorted(chat["members"]) == sorted([owner_name, friend_name])
    chat_id = chat["chat_id"]

    link = (await owner.link(chat_id))["link"]
    joined = await joiner.join(link)
    assert joined == {"status": "pending", "chat_id": chat_id}
    await owner.approve(chat_id, joiner_name)
    assert (await joiner.join(link))["status"] == "member"
    await joiner.leave(chat_id)
    assert (await joiner.join(link))["status"] == "pending"
    await owner.decline(chat_id, joiner_name)
    await owner.invite(chat_id, joiner_name)
    members = next(c["members"] for c in (await joiner.status())["chats"]
                   if c["chat_id"] == chat_id)
    assert joiner_name in members

    first = (await owner.send(chat_id=chat_id, text="topic"))["message"]
    comment = (await friend.send(chat_id=chat_id, text="re", comment_to=first["message_id"]))
    assert comment["message"]["comment_to"] == first["message_id"]
    direct = (await friend.send(to=owner_name, text="psst"))["message"]
    assert direct["chat_id"] not in ("general", chat_id)

    later = (await owner.send(chat_id=chat_id, text="later",
                              send_at=_in_minutes(30)))["scheduled"]
    assert later["text"] == "later" and later["chat_id"] == chat_id
    pending = (await owner.scheduled())["scheduled"]
    assert [s["scheduled_id"] for s in pending] == [later["scheduled_id"]]
    await owner.cancel(later["scheduled_id"])
    assert (await owner.scheduled())["scheduled"] == []

    report = await friend.report(joiner_name, "spam")
    assert report == {"reports": 0, "banned_until": None}  # a new account's: recorded, no count
    document = await owner.discover()
    assert "session.connect" in {m["name"] for m in document["methods"]}

    await owner.disconnect()
    assert owner.token is None
    methods = {m for m, _ in recorder.results}
    assert {"chats.create", "chats.link", "chats.join", "chats.approve", "chats.leave",
            "chats.decline", "chats.invite", "messages.scheduled", "messages.cancel",
            "users.report", "rpc.discover", "session.disconnect"} <= methods


def _in_minutes(minutes: int) -> str:
    moment = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def test_poll_loop_delivers_events_and_saves_cursor(
        make_client: ClientFactory, recorder: Recorder) -> None:
    alice, alice_name = await logged_in(make_client, "pa")
    bob, bob_name = await logged_in(make_client, "pb")
    received: list[Event] = []
    cursors: list[int] = []

    async def handler(event: Event) -> None:  # coroutine handlers are awaited
        received.append(event)

    loop = PollLoop(bob, handler, timeout=5, on_cursor=cursors.append)
    loop.start()
    try:
        await alice.send(to=bob_name, text="ping")
        await wait_for(lambda: any(e["type"] == "message" for e in received))
    finally:
        await loop.stop()
    event = received[-1]
    assert event["type"] == "message"
    assert event["message"]["text"] == "ping" and event["message"]["author"] == alice_name
    await wait_for(lambda: loop.cursor == event["seq"])
    assert cursors[-1] == event["seq"]
    assert recorder.events  # the on_event hook saw (and schema-checked) the events

    # A new loop resumes from the saved cursor: only what came after.
    await alice.send(to=bob_name, text="second")
    more: list[Event] = []
    resumed = bob.start_poll_loop(more.append, cursor=loop.cursor, timeout=5)
    try:
        await wait_for(lambda: bool(more))
    finally:
        await resumed.stop()
    assert [e["message"]["text"] for e in more if e["type"] == "message"] == ["second"]
    assert resumed.task is not None and resumed.task.cancelled()


async def test_poll_loop_goes_on_after_a_handler_raises(
        make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    alice, _ = await logged_in(make_client, "ha")
    bob, bob_name = await logged_in(make_client, "hb")
    received: list[str] = []

    def handler(event: Event) -> None:
        if event["type"] != "message":
            return
        text = event["message"]["text"] or ""
        received.append(text)
        if text == "boom":
            raise ValueError("handler bug")

    loop = PollLoop(bob, handler, timeout=5)
    loop.start()
    try:
        await alice.send(to=bob_name, text="boom")
        await alice.send(to=bob_name, text="after")
        await wait_for(lambda: "after" in received)
    finally:
        await loop.stop()
    assert received == ["boom", "after"]
    assert "handler failed" in caplog.text and "ValueError" in caplog.text


async def test_events_iterator_resumes_from_the_read_marker(
        make_client: ClientFactory) -> None:
    alice, _ = await logged_in(make_client, "ia")
    bob, bob_name = await logged_in(make_client, "ib")
    for text in ("one", "two"):
        await alice.send(to=bob_name, text=text)
    texts: list[str] = []
    cursor = 0
    async for event in bob.events(timeout=2):
        if event["type"] == "message":
            texts.append(event["message"]["text"] or "")
            cursor = event["seq"]
        if len(texts) == 2:
            break
    assert texts == ["one", "two"]
    # Acknowledge through a poll from that cursor; a fresh poll (no cursor) then starts after.
    await bob.poll(cursor, timeout=0)
    await alice.send(to=bob_name, text="three")
    answer = await bob.poll(timeout=0)
    assert [e["message"]["text"] for e in answer["events"] if e["type"] == "message"] == [
        "three"]


async def test_poll_loop_backs_off_and_reconnects_when_the_server_restarts(
        make_client: ClientFactory, server: ServerProcess) -> None:
    alice, _ = await logged_in(make_client, "ra")
    bob, bob_name = await logged_in(make_client, "rb")
    received: list[Event] = []
    lost: list[Exception] = []
    restored: list[bool] = []
    delays: list[float] = []

    class RecordingLoop(PollLoop):
        def next_delay(self) -> float:
            delay = super().next_delay()
            delays.append(delay)
            return delay

    loop = RecordingLoop(bob, received.append, timeout=5, min_backoff=0.05, max_backoff=0.4,
                         on_connection_lost=lost.append,
                         on_connection_restored=lambda: restored.append(True))
    loop.start()
    try:
        await alice.send(to=bob_name, text="before")
        await wait_for(lambda: len(received) == 1)
        await asyncio.to_thread(server.stop)
        await wait_for(lambda: len(delays) >= 5)
        assert len(lost) == 1 and isinstance(lost[0], ServerUnavailable)
        assert not loop.connected
        await asyncio.to_thread(server.start)
        await wait_for(lambda: bool(restored), timeout=10)
        await alice.send(to=bob_name, text="after")
        await wait_for(lambda: len(received) == 2)
    finally:
        await loop.stop()
    assert [e["message"]["text"] for e in received if e["type"] == "message"] == [
        "before", "after"]
    assert loop.connected and loop.failures == 0 and len(lost) == 1
    # Exponential: each wait about doubles (±10% jitter), and none exceeds the cap.
    assert delays[0] < 0.06 and delays[1] > delays[0] * 1.5
    assert max(delays) <= 0.4


def test_backoff_doubles_up_to_the_cap() -> None:
    loop = PollLoop(MessengerClient("http://127.0.0.1:9"), min_backoff=0.5, max_backoff=15)
    waits = []
    for failures in range(1, 10):
        loop.failures = failures
        waits.append(loop.next_delay())
    assert 0.45 <= waits[0] <= 0.55 and 0.9 <= waits[1] <= 1.1 and 1.8 <= waits[2] <= 2.2
    assert all(13.5 <= w <= 15 for w in waits[6:])


async def test_poll_loop_lets_auth_errors_propagate(make_client: ClientFactory) -> None:
    bob, _ = await logged_in(make_client, "ae")
    bob.token = "not-a-valid-token"
    loop = PollLoop(bob, timeout=1, min_backoff=0.01)
    task = loop.start()
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == 401 and loop.failures == 0


async def test_error_codes(make_client: ClientFactory,
                           server_factory: Callable[..., ServerProcess],
                           tmp_path: Path) -> None:
    alice, alice_name = await logged_in(make_client, "ea")
    with pytest.raises(RpcError) as info:
        await make_client().connect(alice_name, "wrong")
    assert info.value.code == 401
    with pytest.raises(RpcError) as info:
        await alice.call("no.such_method")
    assert info.value.code == -32601
    with pytest.raises(RpcError) as info:
        await alice.history("general", limit=1000)
    assert info.value.code == -32602 and info.value.data["path"] == "/limit"
    with pytest.raises(RpcError) as info:
        await alice.send(to=unique_name("ghost"), text="hi")
    assert info.value.code == 404
    stranger, _ = await logged_in(make_client, "es")
    chat_id = (await alice.create_chat("Private"))["chat"]["chat_id"]
    with pytest.raises(RpcError) as info:
        await stranger.history(chat_id)
    assert info.value.code in (403, 404)
    # HTTP errors on /poll and /files carry the HTTP status as the code.
    anonymous = make_client()
    with pytest.raises(RpcError) as info:
        await anonymous.poll(timeout=0)
    assert info.value.code == 401 and info.value.message
    with pytest.raises(RpcError) as info:
        await alice.download("f_doesnotexist", tmp_path / "x")
    assert info.value.code == 404 and not (tmp_path / "x").exists()
    # Nobody listening: a distinct error.
    with pytest.raises(ServerUnavailable):
        await make_client(f"http://127.0.0.1:{free_port()}").status()

    small = server_factory("--max-file-size", "1000", "--rate-limit", "1")
    limited = make_client(small.url)
    await limited.connect(unique_name("lim"), "pw")
    with pytest.raises(RpcError) as info:
        await limited.upload(b"x" * 5000, "big.bin")
    assert info.value.code == 413
    await limited.send(chat_id="general", text="one")
    with pytest.raises(RpcError) as info:
        await limited.send(chat_id="general", text="two")
    assert info.value.code == 429 and info.value.retry_after is not None
    assert info.value.retry_after > 0


async def test_upload_streams_and_download_writes_whole_files(
        make_client: ClientFactory, tmp_path: Path) -> None:
    alice, _ = await logged_in(make_client, "fa")
    bob, bob_name = await logged_in(make_client, "fb")
    content = os.urandom(1_000_000)
    source = tmp_path / "report.pdf"
    source.write_bytes(content)
    progress: list[tuple[int, int | None]] = []
    info = await alice.upload(source, progress=lambda done, total: progress.append((done, total)))
    assert info["name"] == "report.pdf" and info["size"] == len(content)
    assert info["content_type"] == "application/pdf"
    # Streamed in chunks: many progress steps, growing to the full size.
    assert len(progress) > 5 and progress[-1] == (len(content), len(content))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)

    await alice.send(to=bob_name, text="the report", attachments=[info["file_id"]])
    into = tmp_path / "downloads"
    into.mkdir()
    steps: list[int] = []
    result = await bob.download(info["file_id"], into, progress=lambda d, t: steps.append(d))
    assert result["path"] == str(into / "report.pdf") and result["size"] == len(content)
    assert (into / "report.pdf").read_bytes() == content and steps[-1] == len(content)
    assert not list(into.glob("*.part"))

    small = await alice.upload(b"hello", "hello.txt", content_type="text/x-custom")
    assert small["size"] == 5 and small["content_type"] == "text/x-custom"
    with pytest.raises(ValueError):
        await alice.upload(b"no name")
    stranger, _ = await logged_in(make_client, "fs")
    with pytest.raises(RpcError) as info_err:
        await stranger.download(info["file_id"], tmp_path / "stolen")
    assert info_err.value.code in (403, 404)
    assert not (tmp_path / "stolen").exists()
