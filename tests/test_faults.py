"""Real faults: a PostgreSQL restart, terminated connections, a frozen process, a full disk.

The PostgreSQL tests run a private cluster of their own (initdb / pg_ctl from Debian's
binaries, as the `postgres` user, on a free port, in a temporary directory), never the
machine's shared one; the disk-full test mounts a 3 MB tmpfs. Both need root (CI has it).
"""
from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import asyncpg
import orjson
import pytest

from tests.support import Api, ServerProcess, free_port, share_niceness, unique_name

PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))


def _unavailable(reason: str) -> None:
    """Skip, or fail where CI demands every test run (MESSENGER_REQUIRE_PG=1)."""
    if os.environ.get("MESSENGER_REQUIRE_PG") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class PrivateCluster:
    """A throwaway PostgreSQL cluster owned by the `postgres` user, on its own port."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="messenger-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bindir}/{tool}", *args],
                       check=True, capture_output=True, timeout=60)

    def init(self) -> "PrivateCluster":
        """initdb (trust on loopback: a throwaway cluster) and start."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self.start()
        return self

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                   " -c fsync=off -c synchronous_commit=off -c max_connections=60")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "start")
        share_niceness()

    def stop(self, mode: str = "fast") -> None:
        """Stop (fast: ends every connection, as a restart or failover does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        """A connection URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def admin(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement as the superuser."""
        conn = await asyncpg.connect(self.url(), timeout=5)
        try:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    def destroy(self) -> None:
        """Stop and remove everything."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL cluster for this module's tests."""
    if os.geteuid() != 0:
        _unavailable("needs root to run a private PostgreSQL cluster as the postgres user")
    if not PG_BINS:
        _unavailable("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    pg = PrivateCluster(PG_BINS[-1])
    try:
        pg.init()
    except (subprocess.CalledProcessError, KeyError, OSError) as exc:
        pg.destroy()
        _unavailable(f"cannot start a private PostgreSQL cluster: {exc}")
    yield pg
    pg.destroy()


@pytest.fixture
async def database(cluster: PrivateCluster) -> str:
    """A fresh database in the private cluster; its URL."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    await cluster.admin(f'CREATE DATABASE "{name}"')
    return cluster.url(name)


def pg_servers(server_factory: Callable[..., ServerProcess], url: str,
               count: int) -> list[ServerProcess]:
    """Server processes sharing one database."""
    return [server_factory("--store", "postgres", "--database-url", url) for _ in range(count)]


async def send(api: Api, text: str, **target: Any) -> tuple[str | None, dict[str, Any] | None]:
    """messages.send; (message_id, None) or (None, error). Never an internal error."""
    status, answer = await api.raw(orjson.dumps({"jsonrpc": "2.0", "id": 1,
                                                 "method": "messages.send",
                                                 "params": {"text": text, **target}}))
    assert status in (200, 503), (status, answer)
    if "error" in answer:
        assert answer["error"]["code"] in (503, 507), answer
        return None, answer["error"]
    return answer["result"]["message"]["message_id"], None


async def get_json(http: aiohttp.ClientSession, url: str,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET; status and the decoded JSON body."""
    async with http.get(url, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


async def until_sent(api: Api, text: str, timeout: float = 15, **target: Any) -> str:
    """Send, retrying on 503, until it is acknowledged; the message id."""
    deadline = time.monotonic() + timeout
    while True:
        message_id, error = await send(api, text, **target)
        if message_id is not None:
            return message_id
        assert time.monotonic() < deadline, f"still failing: {error}"
        await asyncio.sleep(0.1)


async def healthy(http: aiohttp.ClientSession, server: ServerProcess,
                  timeout: float = 3) -> None:
    """Wait for /health to say ok."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await get_json(http, server.url + "/health")
        if status == 200:
            assert body == {"status": "ok", "database": "ok", "disk": "ok"}
            return
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


def assert_quiet_log(server: ServerProcess, outages: int) -> None:
    """No traceback, and the outage announced once per outage (not once per request)."""
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("database unreachable") <= outages, log[-3000:]


async def test_postgres_restart_and_terminated_connections(
        cluster: PrivateCluster, database: str,
        server_factory: Callable[..., ServerProcess], http: aiohttp.ClientSession) -> None:
    one, two = pg_servers(server_factory, database, 2)
    alice, bob = Api(http, one.url), Api(http, two.url)
    await alice.connect(unique_name("fa"))
    await bob.connect(unique_name("fb"))
    first, _ = await send(alice, "hello", to=bob.username)
    assert first is not None
    acked = {first}
    received: set[str] = set()
    refusals: list[int] = []
    writing = asyncio.Event()
    writing.set()
    written = asyncio.Event()  # the writer's last send (in flight when told to stop) is in

    async def writer() -> None:
        i = 0
        while writing.is_set():
            i += 1
            message_id, error = await send(alice, f"m{i}", to=bob.username)
            if message_id is not None:
                acked.add(message_id)
            else:
                assert error is not None and error["data"]["retry_after"] >= 1, error
                refusals.append(error["code"])
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.01)
        written.set()

    async def reader() -> None:
        cursor = 0
        while not written.is_set() or not acked <= received:
            async with http.get(two.url + "/poll", params={"cursor": cursor, "timeout": 1},
                                headers=bob.headers()) as r:
                body = await r.json()
                if r.status == 503:
                    assert body["error"]["code"] == 503 and body["error"]["data"]["retry_after"]
                    await asyncio.sleep(0.2)
                    continue
                assert r.status == 200, (r.status, body)
            received.update(e["message"]["message_id"] for e in body["events"]
                            if e["type"] == "message")
            cursor = body["cursor"]

    tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
    await asyncio.sleep(1)

    # 1. The database ends every connection of ours: each is replaced, writes go on.
    await cluster.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = $1 AND pid <> pg_backend_pid()", database.rsplit("/")[-1])
    before = len(acked)
    await asyncio.sleep(2)
    assert len(acked) > before + 5, "writes did not resume after the connections were ended"

    # 2. A restart: while it is down, calls answer 503 at once; then everything recovers.
    cluster.stop()
    await asyncio.sleep(0.3)
    started = time.monotonic()
    status, answer = await alice.raw(orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "messages.send",
         "params": {"to": bob.username, "text": "while down"}}))
    refused_in = time.monotonic() - started
    print(f"503 while down in {refused_in * 1000:.0f} ms")
    assert refused_in < 3.5
    assert answer["error"]["code"] == 503 and answer["error"]["data"]["retry_after"] >= 1
    status, body = await get_json(http, one.url + "/poll?cursor=0&timeout=0", alice.headers())
    assert status == 503 and body["error"]["code"] == 503, (status, body)
    status, body = await get_json(http, two.url + "/health")
    assert (status, body["status"], body["database"]) == (503, "degraded", "unreachable")
    await asyncio.sleep(1)
    cluster.start()
    recovered = time.monotonic()
    await until_sent(alice, "after restart", to=bob.username)
    for server in (one, two):
        await healthy(http, server)
    await asyncio.sleep(1)
    writing.clear()
    await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert refusals and set(refusals) == {503}
    assert acked <= received, f"{len(acked - received)} acknowledged messages never delivered"
    history = {m["message_id"] for m in await bob.all_messages(
        (await bob.call("session.status"))["chats"][-1]["chat_id"])}
    assert acked <= history
    print(f"recovered in {time.monotonic() - recovered:.2f}s; {len(acked)} sent, "
          f"{len(refusals)} refused with 503")

    # 3. A poll parked on process two through a restart is woken by what process one sent
    #    right after it (two's listener may still be reconnecting: it wakes every poll then).
    cursor = (await bob.poll())["cursor"]
    parked = asyncio.create_task(bob.poll(cursor, timeout=25))
    await asyncio.sleep(0.5)
    cluster.stop()
    await asyncio.sleep(1)
    cluster.start()
    sent = await until_sent(alice, "wake up", to=bob.username)
    acked_at = time.monotonic()
    body = await asyncio.wait_for(parked, 10)
    assert sent in {e["message"]["message_id"] for e in body["events"]}
    assert time.monotonic() - acked_at < 5
    for server in (one, two):
        assert_quiet_log(server, outages=3)


async def test_dropped_listener_reconnects_and_wakes_every_parked_poll(
        cluster: PrivateCluster, database: str,
        server_factory: Callable[..., ServerProcess], http: aiohttp.ClientSession) -> None:
    one, two = pg_servers(server_factory, database, 2)
    assert two.proc is not None
    alice, bob = Api(http, one.url), Api(http, two.url)
    await alice.connect(unique_name("la"))
    await bob.connect(unique_name("lb"))
    for attempt in range(2):
        cursor = (await bob.poll())["cursor"]
        parked = asyncio.create_task(bob.poll(cursor, timeout=20))
        await asyncio.sleep(0.3)
        # End only process two's LISTEN connection, and send through process one at once:
        # the NOTIFY goes out while two is not listening, so only the wake-up after its
        # reconnect can bring the news to the parked poll.
        ended = await cluster.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"messenger-{two.proc.pid} listener")
        assert len(ended) == 1
        sent, _ = await send(alice, f"while deaf {attempt}", to=bob.username)
        assert sent is not None
        acked_at = time.monotonic()
        body = await asyncio.wait_for(parked, 25)
        took = time.monotonic() - acked_at
        assert sent in {e["message"]["message_id"] for e in body["events"]}
        assert took < 3, f"the parked poll waited {took:.1f}s"
    assert two.log().count("listening again") == 2
    assert "Traceback" not in one.log() + two.log()


async def test_frozen_process_does_not_hold_the_others_writes(
        cluster: PrivateCluster, database: str,
        server_factory: Callable[..., ServerProcess], http: aiohttp.ClientSession) -> None:
    frozen, other = pg_servers(server_factory, database, 2)
    assert frozen.proc is not None
    owner = Api(http, frozen.url)
    await owner.connect(unique_name("fo"))
    on_frozen = [Api(http, frozen.url) for _ in range(6)]
    on_other = [Api(http, other.url) for _ in range(2)]
    for api in on_frozen + on_other:
        await api.connect(unique_name("fw"))
    chat_id = (await owner.call("chats.create", title="load", members=[
        a.username for a in on_frozen + on_other]))["chat"]["chat_id"]
    acked: set[str] = set()
    other_sends: list[tuple[float, float]] = []  # (started, took) of the other's sends
    running = asyncio.Event()
    running.set()

    async def keep_sending(api: Api, times: list[tuple[float, float]] | None) -> None:
        i = 0
        while running.is_set():
            i += 1
            started = time.monotonic()
            message_id, _ = await send(api, f"{api.username} {i}", chat_id=chat_id)
            if times is not None:
                times.append((started, time.monotonic() - started))
            if message_id is not None:
                acked.add(message_id)
            else:
                await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(keep_sending(a, None)) for a in on_frozen]
    tasks += [asyncio.create_task(keep_sending(a, other_sends)) for a in on_other]
    await asyncio.sleep(1)
    writer = f"messenger-{frozen.proc.pid} writer"
    for _ in range(20):  # freeze it while its writer holds a transaction (and the write lock)
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(0.2)
        rows = await cluster.admin(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1", writer)
        if rows and rows[0]["state"] == "idle in transaction":
            break
        os.kill(frozen.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.1)
    else:
        pytest.fail("never caught the writer inside a transaction")
    frozen_at = time.monotonic()
    await asyncio.sleep(4)
    os.kill(frozen.proc.pid, signal.SIGCONT)
    thawed_at = time.monotonic()
    # The frozen process lost its transaction; it recovers and sends again by itself.
    count = len(acked)
    await asyncio.sleep(2)
    during = [took for started, took in other_sends if frozen_at <= started < thawed_at - 2.5]
    worst = max(took for started, took in other_sends if started >= frozen_at - 0.5)
    print(f"other process: {len(during)} sends while frozen, worst {worst:.2f}s")
    assert len(during) >= 5, other_sends[-10:]
    assert worst < 2.5, f"a send on the other process took {worst:.2f}s"
    running.clear()
    await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert len(acked) > count
    await until_sent(on_frozen[0], "after the thaw", chat_id=chat_id)
    history = await owner.all_messages(chat_id)
    ids = [m["message_id"] for m in history]
    assert len(ids) == len(set(ids)) and acked <= set(ids)
    assert "Traceback" not in frozen.log() + other.log()


async def test_postgres_unreachable_at_start_is_one_line_and_an_exit(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rpc.server", "--port", str(free_port()), "--data-dir",
        str(tmp_path / "data"), "--store", "postgres", "--database-url",
        f"postgresql://postgres:hunter2@127.0.0.1:{port}/messenger",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    text = err.decode()
    assert f"PostgreSQL unreachable at 127.0.0.1:{port}/messenger" in text
    assert "Traceback" not in text and "hunter2" not in text
    assert len(text.strip().splitlines()) == 1, text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs mounted for one test (unmounted afterwards)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path, leave: int) -> Path:
    """A file taking all but about `leave` bytes of the filesystem."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    filler = directory / "filler"
    with open(filler, "wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


async def test_full_disk_answers_507_and_recovers(
        small_disk: Path, server_factory: Callable[..., ServerProcess],
        http: aiohttp.ClientSession) -> None:
    server = server_factory(data_dir=small_disk)  # its log goes beside it, not onto it
    alice = Api(http, server.url)
    await alice.connect(unique_name("da"))
    acked = [await until_sent(alice, "before", chat_id="general")]

    filler = fill(small_disk, leave=64 * 1024)
    # An upload that does not fit: HTTP 507 with the JSON error body, nothing left behind.
    async with http.post(server.url + "/files", params={"name": "big.bin"},
                         data=b"x" * (512 * 1024), headers=alice.headers()) as r:
        body = await r.json()
        assert (r.status, body["error"]["code"]) == (507, 507), (r.status, body)
    files_dir = small_disk / "files"
    assert list(files_dir.iterdir()) == []
    # Sends: 507 once the database cannot grow, never an internal error; the failed ones
    # leave nothing behind.
    full = 0
    for i in range(400):
        message_id, error = await send(alice, f"{i} " + "y" * 3900, chat_id="general")
        if message_id is not None:
            acked.append(message_id)
        else:
            assert error is not None and error["code"] == 507, error
            full += 1
            if full >= 5:
                break
    assert full >= 5, "the disk never filled up"
    status, body = await get_json(http, server.url + "/health")
    assert (status, body["status"], body["disk"]) == (503, "degraded", "full")

    filler.unlink()
    acked.append(await until_sent(alice, "after", chat_id="general", timeout=10))
    async with http.post(server.url + "/files", params={"name": "ok.bin"},
                         data=b"z" * 1000, headers=alice.headers()) as r:
        assert r.status == 200, await r.text()
    status, body = await get_json(http, server.url + "/health")
    assert (status, body) == (200, {"status": "ok", "database": "ok", "disk": "ok"})
    history = [m["message_id"] for m in await alice.all_messages("general")]
    assert history[-len(acked):] == acked  # every acknowledged send, and nothing else
    db = sqlite3.connect(small_disk / "messenger.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert 1 <= log.count("out of disk space") <= 3, log[-3000:]
    server.stop()


class CommitCutter:
    """A TCP proxy to PostgreSQL that, once armed, passes on the next COMMIT and then cuts
    that connection before the answer comes back: the COMMIT took effect, the client saw
    its connection die. It reads the protocol's framing (a connection's first message has
    no type byte; every later one is a type byte and a length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.cut = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.proxied: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.proxied.add(task)
        task.add_done_callback(self.proxied.discard)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def answers() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await server_r.read(65536):
                    client_w.write(data)
                    await client_w.drain()
            client_w.close()  # the database hung up: so does the proxy

        back = asyncio.create_task(answers())
        try:
            length = int.from_bytes(await client_r.readexactly(4), "big")
            server_w.write(length.to_bytes(4, "big") + await client_r.readexactly(length - 4))
            while True:
                head = await client_r.readexactly(5)
                body = await client_r.readexactly(int.from_bytes(head[1:], "big") - 4)
                server_w.write(head + body)
                if self.armed and head[:1] == b"Q" and body.rstrip(b"\0").endswith(b"COMMIT"):
                    self.armed = False
                    back.cancel()  # its answer never comes back
                    await server_w.drain()
                    await asyncio.sleep(0.3)  # PostgreSQL has committed meanwhile
                    self.cut.set()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            back.cancel()
            client_w.close()
            server_w.close()

    async def close(self) -> None:
        """Stop accepting, and wait for the proxied connections (their clients closed)."""
        if self.server is not None:
            self.server.close()
        await asyncio.wait_for(asyncio.gather(*self.proxied), 10)


async def test_a_batch_whose_connection_died_during_commit_is_found_committed(
        pg_url: str) -> None:
    """Both ways a batch commits (NOTIFY with its COMMIT, after the sends' prefetch; or
    NOTIFY then COMMIT): the connection dies after COMMIT reached the database, and the
    writes are reported done (`txid_status`), once each, never as failures."""
    from store.postgres import PostgresStore
    from tests.test_scale import group, send_job
    from tests.test_store import make_user

    cutter = CommitCutter(int(pg_url.rsplit(":", 1)[1].split("/")[0]))
    port = await cutter.start()
    name = pg_url.rsplit("/", 1)[1]
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/{name}?sslmode=disable")
    await store.open()
    try:
        a, b = [await make_user(store, n) for n in ("ca", "cb")]
        chat_id = await group(store, a, b)
        cutter.armed = True  # one write alone: NOTIFY, then COMMIT
        seq = await store.write(
            lambda tx: tx.add_user_event(a.user_id, "ban", b'{"type":"ban"}'))
        assert cutter.cut.is_set()
        cutter.cut.clear()
        cutter.armed = True  # sends together: prefetched, NOTIFY with the COMMIT
        *sent, seq2 = await asyncio.gather(*[
            store.write(send_job(a, chat_id, f"cut{i}", f"kc{i}"),
                        prefetch=(a.user_id, chat_id, f"kc{i}")) for i in range(4)],
            store.write(lambda tx: tx.add_user_event(a.user_id, "ban", b'{"type":"ban2"}')))
        assert cutter.cut.is_set()
        events = await store.read(lambda tx: tx.read_events(a.user_id, 0, 100, time.time()))
        assert [e.seq for e in events if e.body == b'{"type":"ban"}'] == [seq]  # not run twice
        assert [e.seq for e in events if e.body == b'{"type":"ban2"}'] == [seq2]
        stored = await store.read(lambda tx: tx.db.fetchall(
            "SELECT message_id, text FROM messages WHERE text LIKE 'cut%' ORDER BY text"))
        assert [tuple(r) for r in stored] == [(m.message_id, m.text) for m in sent]
        assert len(stored) == 4
    finally:
        await store.close()
        await cutter.close()
