"""Passwords (scrypt, off the event loop), session tokens (random, stored hashed), throttling."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import math
import secrets
from typing import AsyncIterator

from methods import errors
from methods.context import Caller, Services
from store.models import UserId
from store.sql import SqlTx

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
ADDRESS_FACTOR = 10


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=128 * n * r * p + 1024 * 1024)


async def hash_password(password: str) -> str:
    """A salted scrypt hash, computed in a worker thread."""
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(_scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


async def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash (constant-time compare)."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = await asyncio.to_thread(_scrypt, password, base64.b64decode(salt),
                                         int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(expected, actual)


def new_token() -> str:
    """A fresh bearer token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


async def authenticate(services: Services, token: str | None) -> Caller:
    """The caller a bearer token belongs to, or 401."""
    # Tokens are URL-safe ASCII; anything else (raw header bytes arrive as lone surrogates,
    # which cannot even be hashed) is simply not a token.
    if not token or not token.isascii():
        raise errors.unauthorized()
    hashed = token_hash(token)
    cache = services.session_cache
    if cache is not None:
        hit = cache.get(hashed)
        if hit is not None:
            _note_activity(services, hashed)
            return hit

    async def lookup(tx: SqlTx) -> Caller | None:
        s = await tx.get_session(hashed)
        return None if s is None else Caller(UserId(s.user_id), s.username, hashed)

    caller = await services.store.read(lookup)
    if caller is None:
        raise errors.unauthorized()
    if cache is not None:
        cache.put(hashed, caller)
    _note_activity(services, hashed)
    return caller


def _note_activity(services: Services, hashed: str) -> None:
    """Record the session's use now and then (feeds idle expiry and users_online)."""
    now = services.now()
    # At most once a minute, and often enough that a session in use never looks idle.
    every = min(60.0, services.limits.session_idle / 4)
    if now - services.session_touches.get(hashed, 0.0) < every:
        return
    services.session_touches[hashed] = now

    async def touch(tx: SqlTx) -> None:
        await tx.touch_session(hashed, now)

    services.store.write_soon(touch)


def allowed_failures(services: Services, key: str) -> int:
    """Failed logins a throttle key may have within the window."""
    # One address (a NAT, an office) may hold many users: it gets ten times the room.
    factor = ADDRESS_FACTOR if key.startswith("addr:") else 1
    return services.limits.login_max_failures * factor


async def check_login_throttle(tx: SqlTx, services: Services,
                               keys: list[str]) -> dict[str, int]:
    """429 when a username or an address has too many recent failed logins; else the counts."""
    limits = services.limits
    now = services.now()
    counts: dict[str, int] = {}
    for key in keys:
        allowed = allowed_failures(services, key)
        failures = await tx.login_failures(key, now - limits.login_window)
        if len(failures) >= allowed:
            retry = failures[-allowed] + limits.login_window - now
            raise errors.too_many("too many failed logins; try again later",
                                  max(1, math.ceil(retry)))
        counts[key] = len(failures)
    return counts


@contextlib.asynccontextmanager
async def password_attempt(services: Services, keys: list[str]) -> AsyncIterator[None]:
    """Admit one password check under the throttle, counting it as a failure until it ends.

    Checks already under way could all still fail, so a key is admitted only while its
    recorded failures plus its checks in flight stay under the limit; otherwise the attempt
    waits for one to finish (and is refused if that one failed). Callers must record a
    failure before leaving the block.
    """
    flight = services.logins_in_flight
    while True:
        released = flight.released
        counts = await services.store.read(lambda tx: check_login_throttle(tx, services, keys))
        if all(counts[k] + flight.counts.get(k, 0) < allowed_failures(services, k)
               for k in keys):
            break
        await released.wait()
    for key in keys:
        flight.counts[key] = flight.counts.get(key, 0) + 1
    try:
        yield
    finally:
        for key in keys:
            left = flight.counts.pop(key) - 1
            if left:
                flight.counts[key] = left
        flight.released.set()
        flight.released = asyncio.Event()
