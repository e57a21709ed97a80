"""session.connect, session.disconnect, session.status."""
from __future__ import annotations

import logging
from typing import Required, TypedDict

from methods import errors
from methods.auth import (
    check_address_failures, claim_password_check, drop_password_check, fail_password_check,
    new_token, release_registration, reserve_registration, token_hash,
)
from methods.base import PublicMethod, Result, UserMethod
from methods.context import Caller, Request, Services, rfc3339
from methods.logsafe import clean
from methods.passwords import hash_password, verify_password
from methods.rules import banned_until, caller_user, quota_window, register_user
from methods.views import chat_view, message_view
from store.models import GENERAL_CHAT, User, UserId
from store.sql import SqlTx, username_key

log = logging.getLogger(__name__)


class ConnectParams(TypedDict, total=False):
    """session.connect's params."""

    username: Required[str]
    password: Required[str]
    client: str


class Connect(PublicMethod[ConnectParams]):
    """Log in, registering the username on first use; returns a token and recent history."""

    name = "session.connect"

    async def call(self, services: Services, params: ConnectParams,
                   request: Request) -> Result:
        username: str = params["username"]
        password: str = params["password"]
        client: str | None = params.get("client")
        address = request.remote
        # A registration that loses a race for its name becomes a login against the
        # winner's password (users are never deleted, so the second look finds it).
        for _ in range(3):
            user = await services.store.read(lambda tx: tx.find_user(username))
            if user is None:
                result = await self._register(services, username, password, client, address)
                if result is not None:
                    return result
            else:
                return await self._login(services, user, password, client, address)
        raise errors.conflict("the username is being registered; try again")

    async def _register(self, services: Services, username: str, password: str,
                        client: str | None, address: str) -> Result | None:
        """A new account; None if someone registered the name meanwhile."""
        need = services.limits.min_password
        if len(password) < need:
            raise errors.invalid_params(
                f"a new account's password needs at least {need} characters", "/password")
        await services.store.read(lambda tx: check_address_failures(tx, services, address))
        window = await services.store.write(
            lambda tx: reserve_registration(tx, services, address))
        token = new_token()

        async def register(tx: SqlTx) -> Result | None:
            now = services.now()
            user = await register_user(tx, username, pw_hash, now)
            if user is None:
                await release_registration(tx, address, window)
                return None
            await tx.create_session(token_hash(token), user.user_id, client, now)
            return await _connected(tx, services, user, token, created=True)

        try:
            pw_hash = await hash_password(services.logins_in_flight.gate, address, password,
                                          services.limits.password_cost)
            result = await services.store.write(register)
        except BaseException:
            # No account came of it: the reserved registration does not count.
            services.store.write_soon(lambda tx: release_registration(tx, address, window))
            raise
        if result is not None:
            log.info("registered %s (client %s)", result["username"], clean(client))
        return result

    async def _login(self, services: Services, user: User, password: str,
                     client: str | None, address: str) -> Result:
        """A session of an existing account, its password checked under the throttle."""
        key = username_key(user.username)
        attempt = await claim_password_check(services, key, address)
        try:
            ok = await verify_password(services.logins_in_flight.gate, address, password,
                                       user.pw_hash)
        except BaseException:
            drop_password_check(services, attempt)
            raise
        if not ok:
            await fail_password_check(services, attempt, key, address)
            log.warning("wrong password for %s", user.username)
            raise errors.unauthorized("wrong password")
        token = new_token()
        now = services.now()
        keep = max(1, services.limits.max_sessions)

        async def login(tx: SqlTx) -> tuple[Result, list[str]]:
            await tx.drop_login_attempt(attempt)
            fresh = await tx.get_user(user.user_id)  # its read marker may have moved
            assert fresh is not None and fresh.pw_hash == user.pw_hash
            # Only this pair's failures: a login of one's own must not wipe out the
            # address's failures against other usernames.
            await tx.clear_login_failures(key, address)
            await tx.create_session(token_hash(token), user.user_id, client, now)
            ended = await tx.end_sessions_over(user.user_id, keep)
            return await _connected(tx, services, fresh, token, created=False), ended

        try:
            result, ended = await services.store.write(login)
        except BaseException:
            drop_password_check(services, attempt)
            raise
        services.logins_in_flight.notify_ended()
        for hashed in ended:
            forget_session(services, hashed)
        if ended:
            log.info("%s: ended %d least recently used session(s) past --max-sessions",
                     user.username, len(ended))
        log.info("connected %s (client %s)", user.username, clean(client))
        return result


async def _connected(tx: SqlTx, services: Services, user: User, token: str,
                     created: bool) -> Result:
    """The result of a successful connect."""
    history = await tx.history(GENERAL_CHAT, None, services.limits.history_size, services.now())
    return {
        "token": token,
        "username": user.username,
        "cursor": user.read_seq,
        "general_chat_id": GENERAL_CHAT,
        "history": [message_view(m) for m in history],
        "created": created,
    }


def forget_session(services: Services, hashed: str) -> None:
    """Drop what this process remembers of an ended session (its parked polls are answered
    401 by the store's notifier once the deletion commits)."""
    services.session_touches.pop(hashed, None)
    if services.session_cache is not None:
        services.session_cache.drop(hashed)


class DisconnectParams(TypedDict):
    """session.disconnect's params (none)."""


class Disconnect(UserMethod[DisconnectParams]):
    """End this session: its token stops working."""

    name = "session.disconnect"

    async def call(self, services: Services, caller: Caller, params: DisconnectParams,
                   request: Request) -> Result:
        await services.store.write(lambda tx: tx.delete_session(caller.token_hash))
        forget_session(services, caller.token_hash)
        log.info("%s disconnected a session", caller.username)
        return {}


class StatusParams(TypedDict):
    """session.status's params (none)."""


class Status(UserMethod[StatusParams]):
    """Who I am, my chats with unread counts, my sessions, ban, quota and server facts."""

    name = "session.status"

    async def call(self, services: Services, caller: Caller, params: StatusParams,
                   request: Request) -> Result:
        now = services.now()
        limits = services.limits
        window = quota_window(services, now)

        async def gather(tx: SqlTx) -> Result:
            user = await caller_user(tx, caller)
            unread = await tx.unread_counts(user.user_id, user.read_seq, now)
            read_up_to = await tx.read_positions(user.user_id)
            chats = []
            for chat in await tx.user_chats(user.user_id):
                members = await tx.member_names(chat.chat_id)
                owner = await _owner_name(tx, chat.owner_id)
                view = chat_view(chat, members, owner, user.username)
                view["unread"] = unread.get(chat.chat_id, 0)
                view["read_up_to"] = read_up_to.get(chat.chat_id)
                chats.append(view)
            sessions = [{"client": s.client, "connected_at": rfc3339(s.created_at),
                         "last_seen": rfc3339(s.last_seen),
                         "current": s.token_hash == caller.token_hash}
                        for s in await tx.list_sessions(user.user_id)]
            used = await tx.quota_used(user.user_id, window)
            banned = banned_until(user, now)
            online = await tx.users_online(now - max(90.0, limits.poll_timeout_max + 30))
            return {
                "username": user.username,
                "cursor": user.read_seq,
                "chats": chats,
                "sessions": sessions,
                "banned_until": None if banned is None else rfc3339(banned),
                "quota": {"limit": limits.rate_limit,
                          "remaining": max(0, limits.rate_limit - used),
                          "resets_at": rfc3339(window + limits.rate_period)},
                "server": {"version": services.version,
                           "started_at": rfc3339(services.started_at),
                           "users_online": online},
            }

        return await services.store.read(gather)


async def _owner_name(tx: SqlTx, owner_id: UserId | None) -> str | None:
    if owner_id is None:
        return None
    owner = await tx.get_user(owner_id)
    return None if owner is None else owner.username


METHODS = (Connect, Disconnect, Status)
