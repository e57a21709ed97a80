"""What every method gets: the store, the limits, the clock, and who is calling."""
from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from methods.passwords import HashGate
from store.base import Store
from store.models import UserId


@dataclass(frozen=True)
class Limits:
    """Every rule's number; each one is a server setting."""

    history_size: int = 20
    message_ttl: float = 3600
    rate_limit: int = 20
    rate_period: float = 3600
    ban_threshold: int = 3
    ban_duration: float = 14400
    max_file_size: int = 5 * 1024 * 1024
    max_text: int = 4000
    poll_timeout: float = 30
    poll_timeout_max: float = 60
    max_schedule_ahead: float = 366 * 86400
    login_max_failures: int = 5
    login_window: float = 300
    session_idle: float = 30 * 86400
    polls_per_user: int = 20
    polls_per_session: int = 4
    user_storage: int = 100 * 1024 * 1024
    register_limit: int = 10
    register_period: float = 3600
    max_sessions: int = 50
    max_scheduled: int = 100
    report_min_age: float = 3600
    min_password: int = 8
    # scrypt's work factor for new passwords, log2 of N (14: 16 MiB and ~50 ms of a core).
    password_cost: int = 14
    send_limit: int = 600
    send_period: float = 600
    # --max-response (an HTTP setting) also bounds what one poll answer carries.
    max_response: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request."""

    user_id: UserId
    username: str
    token_hash: str


class Request:
    """Transport facts a method may need (for throttling), nothing about HTTP itself.

    Each fact is given as its value or as a function that works it out, called the first
    time a method asks (most methods ask for neither; sends are the hot path).
    """

    def __init__(self, remote: str | Callable[[], str],
                 rpc_url: str | None | Callable[[], str | None] = None) -> None:
        self._remote = remote
        self._rpc_url = rpc_url
        # Bytes the answer may still take (set by a batch for each call; None: the whole
        # --max-response). A poll fits its events into it instead of answering 413.
        self.response_budget: int | None = None

    @functools.cached_property
    def remote(self) -> str:
        """The client address (`--trusted-proxies` applied)."""
        return self._remote if isinstance(self._remote, str) else self._remote()

    @functools.cached_property
    def rpc_url(self) -> str | None:
        """The absolute URL clients reach JSON-RPC at (rpc.discover names it as the server)."""
        return self._rpc_url() if callable(self._rpc_url) else self._rpc_url


def rfc3339(ts: float) -> str:
    """A UTC RFC 3339 timestamp with milliseconds."""
    whole = int(ts)
    millis = int(round((ts - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return f"{_rfc3339_second(whole)}.{millis:03d}Z"


@functools.lru_cache(maxsize=1024)
def _rfc3339_second(whole: int) -> str:
    """The seconds part of `rfc3339` (a batch's timestamps share a few seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch, or None if `text` is not an RFC 3339 date-time with offset."""
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


@dataclass
class LoginsInFlight:
    """Password checks: the hashing gate, and a signal whenever a claimed check has ended."""

    gate: HashGate = field(default_factory=HashGate)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def notify_ended(self) -> None:
        """Wake logins waiting for a check in flight to end (they claim again)."""
        self.ended.set()
        self.ended = asyncio.Event()


class SessionCache:
    """Recently authenticated tokens, so a busy client costs no session lookup per call.

    With SQLite this process sees every disconnect and expiry and drops the entry itself;
    on a shared database another process's disconnect arrives by NOTIFY (checked through
    `Notifier.recently_ended`) and entries age out within seconds. Entries also age out.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Caller, float]] = {}

    def get(self, token_hash: str) -> Caller | None:
        """The cached caller of a token hash, if fresh."""
        hit = self._entries.get(token_hash)
        if hit is None or time.monotonic() - hit[1] > self.ttl:
            return None
        return hit[0]

    def put(self, token_hash: str, caller: Caller) -> None:
        """Remember a successful lookup."""
        self._entries[token_hash] = (caller, time.monotonic())

    def drop(self, token_hash: str) -> None:
        """Forget a token (it was disconnected)."""
        self._entries.pop(token_hash, None)

    def prune(self) -> None:
        """Forget everything (sessions were expired) and keep memory bounded."""
        self._entries.clear()


@dataclass
class SendCounts:
    """Sends per user in the current --send-period window (this process's share)."""

    window: float = 0.0
    used: dict[UserId, int] = field(default_factory=dict)

    def count(self, user_id: UserId, window: float) -> int:
        """Sends of a user so far in `window` (a new window forgets the last one at once)."""
        if window != self.window:
            self.window, self.used = window, {}
        return self.used.get(user_id, 0)

    def add(self, user_id: UserId, delta: int = 1) -> None:
        """Count a send (or give one back with -1)."""
        left = self.used.get(user_id, 0) + delta
        if left > 0:
            self.used[user_id] = left
        else:
            self.used.pop(user_id, None)


@dataclass
class Services:
    """Long-lived collaborators shared by all methods (one per app, no globals)."""

    store: Store
    limits: Limits
    files_dir: Path
    version: str = "0.1.0"
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    openrpc: dict[str, Any] = field(default_factory=dict)
    schedule_changed: asyncio.Event = field(default_factory=asyncio.Event)
    session_touches: dict[str, float] = field(default_factory=dict)
    session_cache: SessionCache | None = None
    logins_in_flight: LoginsInFlight = field(default_factory=LoginsInFlight)
    files_in_database: bool = False  # --file-store database: uploads live in the database
    # --send-limit: per user, the start of the current window and messages sent in it.
    send_counts: SendCounts = field(default_factory=lambda: SendCounts())

    def now(self) -> float:
        """The current time (injectable for tests)."""
        return self.clock()
