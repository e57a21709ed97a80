"""Accounts on an open network: client addresses behind proxies, lockouts, registration limits,
first-connect races, password rules, the session cap and hashing under a flood."""
from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pexpect
import pytest

from methods.passwords import HashGate
from tests.helpers import db_rows
from tests.inproc import InProcessServer
from tests.support import REAL_HASHING, Api, ServerProcess, unique_name
from tests.test_repl import Terminal

ServerFactory = Callable[..., ServerProcess]
InProcFactory = Callable[..., Awaitable[InProcessServer]]


class Net:
    """HTTP sessions bound to loopback source addresses (127.0.0.x stand for clients)."""

    def __init__(self) -> None:
        self.sessions: dict[int, aiohttp.ClientSession] = {}

    def http(self, host: int) -> aiohttp.ClientSession:
        """The session whose connections come from 127.0.0.<host>."""
        if host not in self.sessions:
            self.sessions[host] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                force_close=True, local_addr=(f"127.0.0.{host}", 0)))
        return self.sessions[host]

    async def connect(self, url: str, username: str, password: str, host: int = 1,
                      forwarded: str | None = None) -> dict[str, Any]:
        """session.connect from a host (optionally with X-Forwarded-For): the JSON-RPC answer."""
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.connect",
                             "params": {"username": username, "password": password}})
        async with self.http(host).post(url + "/rpc", data=body, headers=headers) as r:
            assert r.status == 200, r.status
            answer: dict[str, Any] = orjson.loads(await r.read())
        assert answer.get("error", {}).get("code") != -32603, answer
        return answer

    async def code(self, url: str, username: str, password: str, host: int = 1,
                   forwarded: str | None = None) -> int:
        """200 for a successful connect, else the error code."""
        answer = await self.connect(url, username, password, host, forwarded)
        return 200 if "result" in answer else int(answer["error"]["code"])

    async def close(self) -> None:
        """Close every session."""
        for s in self.sessions.values():
            await s.close()


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    """Clients from many loopback addresses."""
    n = Net()
    yield n
    await n.close()


def error_of(answer: dict[str, Any], code: int) -> dict[str, Any]:
    """The error of an answer that must have failed with `code`."""
    assert "error" in answer and answer["error"]["code"] == code, answer
    error: dict[str, Any] = answer["error"]
    return error


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
        server_factory: ServerFactory, net: Net) -> None:
    server = server_factory("--trusted-proxies", "127.0.0.5, 127.0.0.9",
                            "--login-max-failures", "2", "--login-window", "30")
    url, victim = server.url, unique_name("xff")
    assert await net.code(url, victim, "right", host=2) == 200
    # Two clients behind the proxy: the one who failed is throttled, the other is not.
    for _ in range(2):
        assert await net.code(url, victim, "wrong", 5, "10.0.0.1") == 401
    error_of(await net.connect(url, victim, "right", 5, "10.0.0.1"), 429)
    assert await net.code(url, victim, "right", 5, "10.0.0.2") == 200
    # Only the right-most entry that is not a trusted proxy counts: a client cannot escape
    # by writing its own entries on the left, and trusted hops on the right are skipped.
    error_of(await net.connect(url, victim, "right", 5, "10.0.0.7, 10.0.0.1"), 429)
    error_of(await net.connect(url, victim, "right", 5, "10.0.0.1, 127.0.0.9"), 429)
    error_of(await net.connect(url, victim, "right", 5, "::ffff:10.0.0.1"), 429)
    # The proxy itself is not throttled for its clients' failures.
    assert await net.code(url, victim, "right", 5) == 200
    # From an untrusted peer the header is ignored: the peer address is the client.
    assert await net.code(url, victim, "right", 6, "10.0.0.1") == 200
    for _ in range(2):
        assert await net.code(url, victim, "wrong", 6, "10.0.0.3") == 401
    error_of(await net.connect(url, victim, "right", 6, "10.0.0.4"), 429)
    assert await net.code(url, victim, "right", 5, "10.0.0.3") == 200


async def test_attackers_cannot_lock_out_other_addresses(server_factory: ServerFactory,
                                                         net: Net) -> None:
    """Issue 14's lockout: failures for alice elsewhere never refuse alice's right password."""
    server = server_factory("--login-max-failures", "5", "--login-window", "60")
    url = server.url
    alice, bob = unique_name("alice"), unique_name("bob")
    assert await net.code(url, alice, "alice's pw", host=3) == 200
    assert await net.code(url, bob, "bob's pw", host=5) == 200
    # The attacker fails five times for alice (case variants are the same user)...
    for name in (alice, alice.upper(), alice, alice.upper(), alice):
        assert await net.code(url, name, "guess", host=2) == 401
    error_of(await net.connect(url, alice, "guess", host=2), 429)
    error_of(await net.connect(url, alice, "alice's pw", host=2), 429)
    # ...and alice, from her own address, is not refused.
    assert await net.code(url, alice, "alice's pw", host=3) == 200
    # Fifty failures against the attacker's own throwaway accounts from one address: that
    # address is throttled for everything, including registrations...
    throwaways = [unique_name("throw") for _ in range(10)]
    for name in throwaways:
        assert await net.code(url, name, "throwaway pw", host=4) == 200
    codes = await asyncio.gather(*(net.code(url, name, f"wrong{i}", host=4)
                                   for name in throwaways for i in range(5)))
    assert sorted(codes) == [401] * 50, codes
    error = error_of(await net.connect(url, throwaways[0], "throwaway pw", host=4), 429)
    assert 1 <= error["data"]["retry_after"] <= 60
    error_of(await net.connect(url, unique_name("new"), "new user pw", host=4), 429)
    error_of(await net.connect(url, alice, "alice's pw", host=4), 429)
    # ...and nobody else: alice, bob and a newcomer from other addresses are fine.
    assert await net.code(url, alice, "alice's pw", host=3) == 200
    assert await net.code(url, bob, "bob's pw", host=5) == 200
    assert await net.code(url, unique_name("newcomer"), "newcomer pw", host=6) == 200
    assert await net.code(url, throwaways[1], "throwaway pw", host=7) == 200


async def test_simultaneous_first_connects_both_succeed(server_factory: ServerFactory,
                                                        net: Net) -> None:
    server = server_factory(*REAL_HASHING)  # ~50 ms hashes: the two surely overlap
    for trial in range(10):
        name = unique_name("twin")
        answers = await asyncio.gather(*(net.connect(server.url, name, "same password", host)
                                         for host in (2, 3)))
        assert all("result" in a for a in answers), (trial, answers)
        assert sorted(a["result"]["created"] for a in answers) == [False, True], answers
        assert answers[0]["result"]["token"] != answers[1]["result"]["token"]
    # With different passwords the loser's is checked against the winner's: 401.
    name = unique_name("twin")
    rivals = await asyncio.gather(net.connect(server.url, name, "one password", 2),
                                  net.connect(server.url, name, "another password", 3))
    assert sorted("result" in a for a in rivals) == [False, True], rivals
    assert [a["error"]["code"] for a in rivals if "error" in a] == [401]


async def test_new_accounts_need_min_password(server_factory: ServerFactory,
                                              net: Net) -> None:
    old = server_factory("--min-password", "1")
    veteran = unique_name("veteran")
    assert await net.code(old.url, veteran, "x") == 200
    old.stop()
    server = server_factory("--min-password", "8", data_dir=old.data_dir)
    url = server.url
    name = unique_name("short")
    error = error_of(await net.connect(url, name, "seven77"), -32602)
    assert error["data"]["path"] == "/password"
    assert "8 characters" in error["data"]["detail"]
    # Characters are code points, not bytes: eight accented letters or emoji are enough...
    assert await net.code(url, name, "é" * 7) == -32602
    assert await net.code(url, name, "é" * 8) == 200
    assert await net.code(url, unique_name("emoji"), "\U0001F600" * 8) == 200
    # ...and an existing account keeps its old short password.
    assert await net.code(url, veteran, "x") == 200
    assert await net.code(url, veteran, "y") == 401


async def test_password_cost_applies_to_new_hashes_and_old_ones_still_work(
        server_factory: ServerFactory, net: Net) -> None:
    old = server_factory("--password-cost", "10")
    veteran = unique_name("veteran")
    assert await net.code(old.url, veteran, "old password") == 200
    old.stop()
    server = server_factory("--password-cost", "11", data_dir=old.data_dir)
    newcomer = unique_name("newcomer")
    assert await net.code(server.url, newcomer, "new password") == 200
    hashes = dict(db_rows(server, "SELECT username, pw_hash FROM users"))
    assert hashes[veteran].startswith("scrypt$1024$8$1$")
    assert hashes[newcomer].startswith("scrypt$2048$8$1$")
    assert await net.code(server.url, veteran, "old password") == 200
    assert await net.code(server.url, veteran, "wrong password") == 401
    assert await net.code(server.url, newcomer, "new password") == 200


async def test_registrations_per_address_per_window(inproc_factory: InProcFactory,
                                                    net: Net) -> None:
    """(In-process with a FakeClock: windows of an hour, moved through instead of slept.)"""
    period = 3600
    server = await inproc_factory("--register-limit", "3", "--register-period", str(period),
                                  "--min-password", "4")
    url = server.url
    existing = unique_name("old")
    assert await net.code(url, existing, "existing", host=9) == 200
    # Start at the beginning of a fixed window so the whole test fits in it.
    await server.advance(period - server.now() % period + 0.05)
    assert await net.code(url, unique_name("tiny"), "pw", host=8) == -32602  # not counted
    codes = await asyncio.gather(*(net.code(url, unique_name("reg"), "password", host=8)
                                   for _ in range(3)))
    assert codes == [200] * 3
    refused = [await net.connect(url, unique_name("reg"), "password", host=8)
               for _ in range(5)]
    waits = [error_of(a, 429)["data"]["retry_after"] for a in refused]
    assert all(1 <= w <= period for w in waits), waits
    # Logins are not registrations, and other addresses have their own count.
    assert await net.code(url, existing, "existing", host=8) == 200
    assert await net.code(url, unique_name("other"), "password", host=10) == 200
    # Still refused late in the window; refused attempts did not count: the next window
    # gives the full three again.
    await server.advance(period - server.now() % period - 30)
    error_of(await net.connect(url, unique_name("reg"), "password", host=8), 429)
    await server.advance(period - server.now() % period + 0.05)
    codes = await asyncio.gather(*(net.code(url, unique_name("reg"), "password", host=8)
                                   for _ in range(4)))
    assert sorted(codes) == [200] * 3 + [429], codes


async def raw_poll(http: aiohttp.ClientSession, url: str, token: str,
                   timeout: float) -> int:
    """GET /poll as a token's holder; the HTTP status."""
    async with http.get(url + "/poll", params={"timeout": str(timeout)},
                        headers={"Authorization": f"Bearer {token}"}) as r:
        await r.read()
        return r.status


async def test_max_sessions_ends_the_least_recently_used(
        server_factory: ServerFactory, http: aiohttp.ClientSession) -> None:
    server = server_factory("--max-sessions", "2")
    name = unique_name("many")
    first, second, third = (Api(http, server.url) for _ in range(3))
    await first.connect(name)
    await second.connect(name)
    parked = asyncio.create_task(raw_poll(http, server.url, str(second.token), 10))
    await asyncio.sleep(0.3)
    assert not parked.done()
    await first.call("session.status")  # first is now more recently used than second
    started = time.monotonic()
    await third.connect(name)
    assert await asyncio.wait_for(parked, 5) == 401  # answered at once, not after 10 s
    assert time.monotonic() - started < 2
    assert (await second.error("session.status")).code == 401
    status = await third.call("session.status")
    assert len(status["sessions"]) == 2
    await first.call("session.status")
    # Another user's sessions are not touched.
    other = Api(http, server.url)
    await other.connect(unique_name("other"))
    await first.call("session.status")
    await third.call("session.status")


async def test_hash_gate_keeps_a_slot_for_logins_and_lets_addresses_take_turns() -> None:
    gate = HashGate(2)
    started: list[str] = []
    running = {"all": 0, "reg": 0, "max_all": 0, "max_reg": 0}
    lock = threading.Lock()

    def work(tag: str) -> str:
        with lock:
            started.append(tag)
            running["all"] += 1
            running["reg"] += tag.startswith("r")
            running["max_all"] = max(running["max_all"], running["all"])
            running["max_reg"] = max(running["max_reg"], running["reg"])
        time.sleep(0.03)
        with lock:
            running["all"] -= 1
            running["reg"] -= tag.startswith("r")
        return tag

    jobs = [("r1", "A", True), ("r2", "A", True), ("r3", "A", True), ("r4", "B", True),
            ("l1", "C", False)]
    tasks = []
    for tag, address, registration in jobs:
        tasks.append(asyncio.create_task(gate.run(address, registration, work, tag)))
        await asyncio.sleep(0)
    assert await asyncio.gather(*tasks) == [tag for tag, _, _ in jobs]
    # The login did not wait behind the registrations; B, which had not hashed lately,
    # went before A's second and third.
    assert started == ["r1", "l1", "r4", "r2", "r3"], started
    assert running["max_all"] == 2 and running["max_reg"] == 1, running
    assert gate.running == [0, 0] and gate.waiting() == 0


async def test_a_login_stays_quick_during_a_registration_flood(
        server_factory: ServerFactory, net: Net) -> None:
    """Hashing is bounded and fair: a flood of registrations from one address (limit
    raised so that it really hashes) delays another user's login by about one hash."""
    server = server_factory(*REAL_HASHING)
    url, name = server.url, unique_name("legit")
    assert await net.code(url, name, "legit password", host=3) == 200

    async def timed_login() -> float:
        started = time.monotonic()
        assert await net.code(url, name, "legit password", host=3) == 200
        return time.monotonic() - started

    quiet = [await timed_login() for _ in range(5)]
    flood = [asyncio.create_task(net.code(url, unique_name("fl"), "flood password", host=2))
             for _ in range(80)]
    await asyncio.sleep(0.3)
    loaded = []
    for _ in range(5):
        loaded.append(await timed_login())
    still_running = sum(1 for t in flood if not t.done())
    flood_started = time.monotonic()
    assert sorted(set(await asyncio.gather(*flood))) == [200]
    flood_rest = time.monotonic() - flood_started
    print(f"\nlogin latency: quiet median {statistics.median(quiet) * 1000:.0f} ms "
          f"(max {max(quiet) * 1000:.0f}); during a flood of 80 registrations from one "
          f"address median {statistics.median(loaded) * 1000:.0f} ms "
          f"(max {max(loaded) * 1000:.0f}); {still_running} registrations still queued "
          f"after the logins, which took {flood_rest * 1000:.0f} ms more "
          f"({flood_rest / max(1, still_running) * 1000:.0f} ms per registration)")
    assert still_running > 10, "the flood ended before the logins: not measured under load"
    # Queued behind the flood (first come, first served), a login would wait for dozens
    # of hashes; fairly served it costs about one more (the machine's cores are shared).
    per_hash = flood_rest / still_running
    assert max(loaded) < statistics.median(quiet) + max(0.3, 4 * per_hash), (
        quiet, loaded, per_hash)


async def test_throttle_and_first_connects_across_processes(
        server_factory: ServerFactory, pg_url: str, net: Net) -> None:
    """On one PostgreSQL, checks in flight on every process count toward the limit."""
    processes = 2
    flags = ("--store", "postgres", "--database-url", pg_url,
             "--login-max-failures", "5", "--login-window", "60", *REAL_HASHING)
    servers = [server_factory(*flags) for _ in range(processes)]
    victim = unique_name("victim")
    assert await net.code(servers[0].url, victim, "the password") == 200
    codes = await asyncio.gather(*(net.code(servers[i % processes].url, victim, f"guess{i}")
                                   for i in range(30)))
    assert sorted(codes) == [401] * 5 + [429] * 25, codes
    checked = sum(s.log().count(f"wrong password for {victim}") for s in servers)
    assert checked == 5, checked
    # The right password from another address still works, on either process.
    for s in servers:
        assert await net.code(s.url, victim, "the password", host=2) == 200
    # Two first connects of one new name, one on each process: both succeed.
    for trial in range(20):
        name = unique_name("twin")
        answers = await asyncio.gather(*(net.connect(s.url, name, "same password", host)
                                         for host, s in enumerate(servers, start=3)))
        assert all("result" in a for a in answers), (trial, answers)
        assert sorted(a["result"]["created"] for a in answers) == [False, True], answers


def test_repl_says_when_a_connect_created_an_account(server: ServerProcess) -> None:
    name = unique_name("fresh")
    term = Terminal(server.url, name, password="new password")
    try:
        term.see(f"new account created for {name}")
        term.see("#general>")
        term.child.sendeof()
        term.child.expect(pexpect.EOF)
    finally:
        term.close()
    again = Terminal(server.url, name, password="new password")
    try:
        again.see("#general>")
        again.child.sendeof()
        again.child.expect(pexpect.EOF)
        assert "new account created" not in again.transcript.getvalue()
    finally:
        again.close()
