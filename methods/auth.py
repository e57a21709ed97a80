"""Passwords (scrypt, off the event loop), session tokens (random, stored hashed), throttling."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets

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
    if not token:
        raise errors.unauthorized()
    hashed = token_hash(token)

    async def lookup(tx: SqlTx) -> Caller | None:
        s = await tx.get_session(hashed)
        return None if s is None else Caller(UserId(s.user_id), s.username, hashed)

    caller = await services.store.read(lookup)
    if caller is None:
        raise errors.unauthorized()
    _note_activity(services, hashed)
    return caller


def _note_activity(services: Services, hashed: str) -> None:
    """Record the session's use at most once a minute (feeds idle expiry and users_online)."""
    now = services.now()
    if now - services.session_touches.get(hashed, 0.0) < 60:
        return
    services.session_touches[hashed] = now

    async def touch(tx: SqlTx) -> None:
        await tx.touch_session(hashed, now)

    services.store.write_soon(touch)


async def check_login_throttle(tx: SqlTx, services: Services, keys: list[str]) -> None:
    """429 when a username or an address has too many recent failed logins."""
    limits = services.limits
    now = services.now()
    for key in keys:
        # One address (a NAT, an office) may hold many users: it gets ten times the room.
        allowed = limits.login_max_failures * (ADDRESS_FACTOR if key.startswith("addr:") else 1)
        failures = await tx.login_failures(key, now - limits.login_window)
        if len(failures) >= allowed:
            retry = failures[-allowed] + limits.login_window - now
            raise errors.too_many("too many failed logins; try again later",
                                  max(1, math.ceil(retry)))
