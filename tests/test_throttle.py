"""Login throttling per (username, address) and per address; a login flood and parked polls."""
from __future__ import annotations

import asyncio
import statistics
import time
from typing import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest

from tests.inproc import InProcessServer
from tests.support import (
    REAL_HASHING, Api, RpcFailure, ServerProcess, running_server, unique_name,
)

ServerFactory = Callable[..., ServerProcess]
InProcFactory = Callable[..., Awaitable[InProcessServer]]
THROTTLE = ("--login-max-failures", "3", "--login-window", "2")


class Clients:
    """HTTP sessions bound to different loopback source addresses (127.0.0.x)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sessions: dict[int, aiohttp.ClientSession] = {}

    def api(self, host: int = 1) -> Api:
        """A logged-out client whose requests come from 127.0.0.<host>."""
        if host not in self.sessions:
            self.sessions[host] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                force_close=True, local_addr=(f"127.0.0.{host}", 0)))
        return Api(self.sessions[host], self.url)

    async def connect(self, username: str, password: str, host: int = 1) -> Api | RpcFailure:
        """A logged-in client, or the failure."""
        a = self.api(host)
        try:
            await a.connect(username, password)
        except RpcFailure as failure:
            return failure
        return a

    async def close(self) -> None:
        """Close every session."""
        for s in self.sessions.values():
            await s.close()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """3 failed logins per username (30 per address) in a 2 s window."""
    with running_server(
            tmp_path_factory.mktemp("throttle") / "data", *THROTTLE) as proc:
        yield proc


@pytest.fixture(scope="module")
def one_try_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """1 failed login per username, so an address reaches its 10 with few attempts."""
    with running_server(
            tmp_path_factory.mktemp("one_try") / "data",
            "--login-max-failures", "1", "--login-window", "3") as proc:
        yield proc


@pytest.fixture
async def throttled(strict_server: ServerProcess) -> AsyncIterator[Clients]:
    """Clients of the strict server from many addresses (each test uses its own)."""
    clients = Clients(strict_server.url)
    yield clients
    await clients.close()


@pytest.fixture
async def one_try(one_try_server: ServerProcess) -> AsyncIterator[Clients]:
    """Clients of the one-try server from many addresses (each test uses its own)."""
    clients = Clients(one_try_server.url)
    yield clients
    await clients.close()


def code(outcome: Api | RpcFailure) -> int:
    """200 for a successful login, else the error code."""
    return 200 if isinstance(outcome, Api) else outcome.code


def retry_after(outcome: Api | RpcFailure, window: int = 2) -> int:
    """data.retry_after of a 429."""
    assert isinstance(outcome, RpcFailure) and outcome.code == 429, outcome
    value = outcome.data["retry_after"]
    assert isinstance(value, int) and 1 <= value <= window, outcome.data
    return value


async def register(clients: Clients, count: int, host: int) -> list[str]:
    """Register `count` users (password "right") from one address."""
    names = [unique_name("t") for _ in range(count)]
    outcomes = await asyncio.gather(*(clients.connect(n, "right", host) for n in names))
    assert [code(o) for o in outcomes] == [200] * count
    return names


async def test_wrong_passwords_throttle_the_username_at_that_address(
        inproc_factory: InProcFactory) -> None:
    """(In-process with a FakeClock: a minute's window, moved through instead of slept.)"""
    window = 60
    server = await inproc_factory("--login-max-failures", "3", "--login-window", str(window))
    throttled = Clients(server.url)
    try:
        await wrong_passwords_throttle(server, throttled, window)
    finally:
        await throttled.close()


async def wrong_passwords_throttle(server: InProcessServer, throttled: Clients,
                                   window: int) -> None:
    """The body of the test above."""
    [victim, bystander] = await register(throttled, 2, host=10)
    first_failure = server.now()
    for _ in range(3):
        assert code(await throttled.connect(victim, "wrong", 11)) == 401
    # That (username, address) is throttled, even for the right password, in any case...
    asked = server.now()
    wait = retry_after(await throttled.connect(victim, "wrong", 11), window)
    retry_after(await throttled.connect(victim, "right", 11), window)
    retry_after(await throttled.connect(victim.upper(), "right", 11), window)  # any case
    # ...but the user from an address that has not been failing is never refused...
    assert code(await throttled.connect(victim, "right", 15)) == 200
    # ...nor are other users from the failing address.
    assert code(await throttled.connect(bystander, "right", 11)) == 200
    # One wrong guess from each of three more addresses: none of them is near its limit.
    for host in (12, 13, 14):
        assert code(await throttled.connect(victim, "wrong", host)) == 401
    assert code(await throttled.connect(victim, "right", 12)) == 200
    # Still throttled just before the window ends...
    await server.advance_to(first_failure + window - 1)
    retry_after(await throttled.connect(victim, "right", 11), window)
    # ...after it, the right password works and clears that pair's failures.
    await server.advance_to(asked + wait + 0.1)
    assert code(await throttled.connect(victim, "right", 11)) == 200
    for _ in range(2):
        assert code(await throttled.connect(victim, "wrong", 11)) == 401
    assert code(await throttled.connect(victim, "right", 11)) == 200
    assert code(await throttled.connect(victim, "wrong", 11)) == 401


async def test_failures_from_one_address_across_usernames_throttle_it(one_try: Clients) -> None:
    names = await register(one_try, 11, host=20)
    for name in names[:10]:
        assert code(await one_try.connect(name, "wrong", 21)) == 401
    # The address is blocked for everyone, the right password and new users included.
    retry_after(await one_try.connect(names[10], "right", 21), window=3)
    retry_after(await one_try.connect(unique_name("new"), "pw", 21), window=3)
    # The same user from another address is fine (its own username has no failures).
    assert code(await one_try.connect(names[10], "right", 22)) == 200


async def test_a_successful_login_does_not_reset_the_address_counter(one_try: Clients) -> None:
    """Otherwise a guesser resets the address limit by registering a throwaway user."""
    names = await register(one_try, 11, host=30)
    for name in names[:9]:
        assert code(await one_try.connect(name, "wrong", 31)) == 401
    assert code(await one_try.connect(unique_name("throwaway"), "pw", 31)) == 200
    assert code(await one_try.connect(names[10], "right", 31)) == 200
    assert code(await one_try.connect(names[9], "wrong", 31)) == 401
    retry_after(await one_try.connect(names[10], "right", 31), window=3)


async def test_concurrent_guesses_cannot_exceed_the_limit(throttled: Clients,
                                                          one_try: Clients) -> None:
    """Guesses sent all at once are counted as strictly as guesses sent one by one."""
    [victim] = await register(throttled, 1, host=40)
    outcomes = await asyncio.gather(*(throttled.connect(victim, f"guess{i}", 41)
                                      for i in range(15)))
    codes = sorted(code(o) for o in outcomes)
    assert codes == [401] * 3 + [429] * 12, codes
    # Spread over addresses, each (username, address) pair gets its own three.
    outcomes = await asyncio.gather(*(throttled.connect(victim, f"guess{i}", 42 + i % 2)
                                      for i in range(10)))
    codes = sorted(code(o) for o in outcomes)
    assert codes == [401] * 6 + [429] * 4, codes
    # Many usernames guessed at once from one address: only the address's 10 are tried.
    names = await register(one_try, 24, host=45)
    outcomes = await asyncio.gather(*(one_try.connect(n, "wrong", 46) for n in names))
    codes = sorted(code(o) for o in outcomes)
    assert codes == [401] * 10 + [429] * 14, codes


async def test_concurrent_right_logins_of_one_user_all_succeed(throttled: Clients) -> None:
    """Holding guesses to the limit must not turn parallel legitimate logins into 429s."""
    [user] = await register(throttled, 1, host=60)
    assert code(await throttled.connect(user, "wrong", 61)) == 401
    outcomes = await asyncio.gather(*(throttled.connect(user, "right", 61) for _ in range(8)))
    assert [code(o) for o in outcomes] == [200] * 8
    registrations = await asyncio.gather(*(throttled.connect(unique_name("c"), "pw", 61)
                                           for _ in range(10)))
    assert [code(o) for o in registrations] == [200] * 10


async def test_poll_wakeup_latency_during_a_login_flood(
        server_factory: ServerFactory, http: aiohttp.ClientSession) -> None:
    """30 concurrent registrations (real scrypt) must not delay waking a parked poll."""
    server = server_factory(*REAL_HASHING)
    listener, sender = Api(http, server.url), Api(http, server.url)
    await listener.connect(unique_name("lis"))
    await sender.connect(unique_name("snd"))
    await sender.call("messages.send", to=listener.username, text="warm-up")
    cursor = (await listener.poll(timeout=0))["cursor"]
    latencies: list[float] = []
    flood_sizes: list[int] = []
    for round_ in range(2):
        flood = [asyncio.create_task(Api(http, server.url).connect(unique_name("fl")))
                 for _ in range(30)]
        parked = asyncio.create_task(listener.poll(cursor, timeout=10))
        await asyncio.sleep(0.15)  # the flood is hashing passwords now
        assert not parked.done()
        started = time.monotonic()
        await sender.call("messages.send", to=listener.username, text=f"during flood {round_}")
        body = await parked
        latencies.append(time.monotonic() - started)
        flood_sizes.append(sum(1 for t in flood if not t.done()))
        assert [e["message"]["text"] for e in body["events"]] == [f"during flood {round_}"]
        cursor = body["cursor"]
        await asyncio.gather(*flood)
    print(f"\npoll wake-up during login flood: "
          f"max {max(latencies) * 1000:.0f} ms, median {statistics.median(latencies) * 1000:.0f}"
          f" ms, logins still running at wake-up: {flood_sizes}")
    assert min(flood_sizes) > 0, "the flood ended before the poll woke: not measured under load"
    assert max(latencies) < 0.5, latencies
