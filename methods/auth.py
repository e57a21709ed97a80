"""Session tokens (random, stored hashed), the login throttle and the registration limit."""
from __future__ import annotations

import asyncio
import hashlib
import math
import secrets

from methods import errors
from methods.context import Caller, Services
from store.models import UserId
from store.sql import SqlTx

ADDRESS_FACTOR = 10
# A claimed check still unfinished after this long was lost with its process: it counts as
# a failure from then on (until it leaves the window) instead of as a check in flight.
CLAIM_STALE = 30.0
# How long a login waits for checks in flight to end when only they hold its limit.
CLAIM_WAIT = 10.0
# Another process's checks end without telling us: look again this often while waiting.
CLAIM_RECHECK = 0.1


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
        # A session another process ended is known here through its NOTIFY.
        if hit is not None and not services.store.notifier.recently_ended(hashed):
            _note_activity(services, hashed)
            return hit

    s = await services.store.get_session(hashed)  # concurrent lookups share a query
    if s is None:
        raise errors.unauthorized()
    caller = Caller(UserId(s.user_id), s.username, hashed)
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


async def claim_password_check(services: Services, key: str, address: str) -> str:
    """Claim one password check of username key `key` from `address`: its attempt id, or 429.

    The claim is a row written in a write transaction (serialized across processes), so
    checks in flight anywhere count: a pair may have `--login-max-failures` failures plus
    checks in flight, an address ten times as many. When only checks in flight stand in the
    way (they may still succeed), the login waits for them to end and claims again. The
    caller must end the claim: `fail_password_check`, or `drop_password_check` /
    dropping it in the login's own transaction.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLAIM_WAIT
    flight = services.logins_in_flight
    while True:
        ended = flight.ended
        attempt_id = secrets.token_hex(12)
        claimed = await services.store.write(
            lambda tx: _claim(tx, services, attempt_id, key, address))
        if claimed:
            return attempt_id
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise errors.too_many("too many logins under way; try again shortly", 1)
        # Ours end with a signal; another process's are seen by looking again.
        try:
            await asyncio.wait_for(ended.wait(), min(remaining, CLAIM_RECHECK))
        except asyncio.TimeoutError:
            pass


async def _claim(tx: SqlTx, services: Services, attempt_id: str, key: str,
                 address: str) -> bool:
    now = services.now()
    limits = services.limits
    pair, everyone = await tx.login_attempts(key, address, now - limits.login_window)
    in_flight = False
    for attempts, allowed in ((pair, limits.login_max_failures),
                              (everyone, limits.login_max_failures * ADDRESS_FACTOR)):
        failed = [at for at, f in attempts if f or at < now - CLAIM_STALE]
        if len(failed) >= allowed:
            retry = failed[-allowed] + limits.login_window - now
            raise errors.too_many("too many failed logins; try again later",
                                  max(1, math.ceil(retry)))
        in_flight = in_flight or len(attempts) >= allowed
    if in_flight:
        return False
    await tx.claim_login_attempt(attempt_id, key, address, now)
    return True


async def fail_password_check(services: Services, attempt_id: str, key: str,
                              address: str) -> None:
    """The claimed check found a wrong password: it counts as a failure from now on."""
    now = services.now()
    try:
        await services.store.write(
            lambda tx: tx.fail_login_attempt(attempt_id, key, address, now))
    finally:
        services.logins_in_flight.notify_ended()


def drop_password_check(services: Services, attempt_id: str) -> None:
    """The claimed check did not run to an answer (the caller went away, or a bug)."""
    async def drop(tx: SqlTx) -> None:
        await tx.drop_login_attempt(attempt_id)

    services.store.write_soon(drop)
    services.logins_in_flight.notify_ended()


async def check_address_failures(tx: SqlTx, services: Services, address: str) -> None:
    """429 when an address is over its failed-login limit (it may not register either)."""
    now = services.now()
    limits = services.limits
    _, everyone = await tx.login_attempts("", address, now - limits.login_window)
    allowed = limits.login_max_failures * ADDRESS_FACTOR
    failed = [at for at, f in everyone if f or at < now - CLAIM_STALE]
    if len(failed) >= allowed:
        retry = failed[-allowed] + limits.login_window - now
        raise errors.too_many("too many failed logins; try again later",
                              max(1, math.ceil(retry)))


def registration_window(services: Services, now: float) -> float:
    """Start of the fixed registration window containing `now`."""
    period = services.limits.register_period
    return math.floor(now / period) * period


async def reserve_registration(tx: SqlTx, services: Services, address: str) -> float:
    """Count one new username for `address` in this window (429 past the limit); the window.

    Reserved before the password is hashed, so a flood of registrations costs no hashing
    past the limit; `release_registration` gives it back if no account came of it.
    """
    now = services.now()
    window = registration_window(services, now)
    limit = services.limits.register_limit
    if await tx.registrations_used(address, window) >= limit:
        retry = window + services.limits.register_period - now
        raise errors.too_many("too many new accounts from this address; try again later",
                              max(1, math.ceil(retry)))
    await tx.add_registrations(address, window, 1)
    return window


async def release_registration(tx: SqlTx, address: str, window: float) -> None:
    """Give back a reserved registration (the name was taken meanwhile, or hashing failed)."""
    await tx.add_registrations(address, window, -1)


async def prune_logins(tx: SqlTx, services: Services, now: float) -> None:
    """Forget password checks and registration windows nobody counts any more."""
    limits = services.limits
    await tx.prune_login_attempts(now - max(limits.login_window, CLAIM_STALE))
    await tx.prune_registrations(registration_window(services, now))
