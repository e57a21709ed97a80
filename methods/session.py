"""session.connect, session.disconnect, session.status."""
from __future__ import annotations

import logging
import math

from methods import errors
from methods.auth import (
    check_login_throttle, hash_password, new_token, password_attempt, token_hash,
    verify_password,
)
from methods.base import Method, Params, Result
from methods.context import Caller, Request, Services, rfc3339
from methods.views import chat_view, message_view
from store.models import GENERAL_CHAT, User, UserId
from store.sql import SqlTx, username_key

log = logging.getLogger(__name__)


class Connect(Method):
    """Log in, registering the username on first use; returns a token and recent history."""

    name = "session.connect"
    auth = False

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        username: str = params["username"]
        password: str = params["password"]
        client: str | None = params.get("client")
        keys = [f"user:{username_key(username)}", f"addr:{request.remote}"]
        existing = await services.store.read(lambda tx: tx.find_user(username))
        if existing is None:
            await services.store.read(lambda tx: check_login_throttle(tx, services, keys))
            pw_hash = await hash_password(password)
        else:
            pw_hash = existing.pw_hash
            async with password_attempt(services, keys):
                if not await verify_password(password, pw_hash):
                    await self._fail(services, keys, username)
        token = new_token()
        now = services.now()
        limit = services.limits.history_size

        async def login(tx: SqlTx) -> tuple[User, bool, Result]:
            user = await tx.find_user(username)
            created = False
            if user is None:
                user = await tx.create_user(username, pw_hash, now)
                assert user is not None
                created = True
            elif user.pw_hash != pw_hash:
                # Registered by someone else between our check and this write.
                raise errors.unauthorized("wrong password")
            await tx.create_session(token_hash(token), user.user_id, client, now)
            # Only the username's count: a login of one's own (or a fresh registration) must
            # not wipe out an address's failures against other usernames.
            await tx.clear_login_failures(keys[0])
            history = await tx.history(GENERAL_CHAT, None, limit, now)
            return user, created, {
                "token": token,
                "username": user.username,
                "cursor": user.read_seq,
                "general_chat_id": GENERAL_CHAT,
                "history": [message_view(m) for m in history],
            }

        user, created, result = await services.store.write(login)
        log.info("%s %s (client %s)", "registered" if created else "connected",
                 user.username, client)
        return result

    async def _fail(self, services: Services, keys: list[str], username: str) -> None:
        now = services.now()

        async def record(tx: SqlTx) -> None:
            for key in keys:
                await tx.add_login_failure(key, now)

        await services.store.write(record)
        log.warning("wrong password for %s", username)
        raise errors.unauthorized("wrong password")


class Disconnect(Method):
    """End this session: its token stops working."""

    name = "session.disconnect"

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        assert caller is not None
        await services.store.write(lambda tx: tx.delete_session(caller.token_hash))
        services.session_touches.pop(caller.token_hash, None)
        if services.session_cache is not None:
            services.session_cache.drop(caller.token_hash)
        log.info("%s disconnected a session", caller.username)
        return {}


def quota_window(services: Services, now: float) -> float:
    """Start of the fixed general-chat quota window containing `now`."""
    period = services.limits.rate_period
    return math.floor(now / period) * period


class Status(Method):
    """Who I am, my chats with unread counts, my sessions, ban, quota and server facts."""

    name = "session.status"

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        assert caller is not None
        now = services.now()
        limits = services.limits
        window = quota_window(services, now)

        async def gather(tx: SqlTx) -> Result:
            user = await tx.get_user(caller.user_id)
            assert user is not None
            unread = await tx.unread_counts(user.user_id, user.read_seq, now)
            chats = []
            for chat in await tx.user_chats(user.user_id):
                members = await tx.member_names(chat.chat_id)
                owner = await _owner_name(tx, chat.owner_id)
                view = chat_view(chat, members, owner, user.username)
                view["unread"] = unread.get(chat.chat_id, 0)
                chats.append(view)
            sessions = [{"client": s.client, "connected_at": rfc3339(s.created_at),
                         "last_seen": rfc3339(s.last_seen),
                         "current": s.token_hash == caller.token_hash}
                        for s in await tx.list_sessions(user.user_id)]
            used = await tx.quota_used(user.user_id, window)
            banned = user.banned_until if user.banned_until and user.banned_until > now else None
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
