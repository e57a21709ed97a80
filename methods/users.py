"""users.report (distinct reporters ban a user from sending for a while) and block lists."""
from __future__ import annotations

import logging

from methods import errors
from methods.base import Method, Params, Result
from methods.context import Caller, Limits, Request, Services, rfc3339
from methods.views import event_body
from store.models import Chat, User, UserId
from store.sql import SqlTx

log = logging.getLogger(__name__)


class Report(Method):
    """Report an abusive user; at the threshold of distinct reporters they are banned."""

    name = "users.report"

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        assert caller is not None
        username: str = params["username"]
        reason: str | None = params.get("reason")
        limits = services.limits
        now = services.now()

        async def report(tx: SqlTx) -> tuple[int, float | None, bool]:
            target = await tx.find_user(username)
            if target is None:
                raise errors.not_found("user", username=username)
            if target.user_id == caller.user_id:
                raise errors.conflict("you cannot report yourself")
            reporter = await tx.get_user(caller.user_id)
            assert reporter is not None
            banned = target.banned_until if (target.banned_until or 0) > now else None
            state = report_state(limits, reporter, banned, now)
            previous = await tx.report_state(target.user_id, caller.user_id)
            # Reporting again changes nothing unless the report would now count differently
            # (the reporter grew old enough, a ban ended, or the last report caused a ban).
            if previous == "counts" or previous == state:
                raise errors.conflict("you already reported this user", username=target.username)
            await tx.put_report(target.user_id, caller.user_id, reason, now, state)
            count = await tx.count_reports(target.user_id)
            started = False
            if state == "counts" and count >= limits.ban_threshold:
                banned = now + limits.ban_duration
                await tx.set_banned_until(target.user_id, banned)
                await tx.use_reports(target.user_id)  # a ban uses up the reports behind it
                await tx.add_user_event(target.user_id, "ban",
                                        event_body("ban", until=rfc3339(banned)))
                started = True
            return count, banned, started

        count, banned, started = await services.store.write(report)
        if started:
            log.info("%s banned until %s after %d reports", username, rfc3339(banned or 0), count)
        return {"reports": count, "banned_until": None if banned is None else rfc3339(banned)}


def report_state(limits: Limits, reporter: User, banned_until: float | None, now: float) -> str:
    """Whether a report counts toward a ban: not while the user is banned already (it would
    extend the ban), and not from an account younger than --report-min-age (throwaways)."""
    if banned_until is not None:
        return "banned"
    if now - reporter.created_at < limits.report_min_age:
        return "young"
    return "counts"


# -- block lists -------------------------------------------------------------------------

def blocked_error(username: str) -> errors.RpcError:
    """403 with reason `blocked`: the other user blocks the caller."""
    return errors.forbidden(f"{username} does not accept this from you", reason="blocked",
                            username=username)


async def check_not_blocked(tx: SqlTx, user: User, by: UserId) -> None:
    """403 `blocked` when `user` blocks `by` (the one who writes, invites or adds)."""
    if user.user_id != by and await tx.blocks(user.user_id, by):
        raise blocked_error(user.username)


async def check_direct_allowed(tx: SqlTx, author: User, chat: Chat | None,
                               to: str | None) -> None:
    """A 1-to-1 message (by username, or into a direct chat) is refused when the other
    person blocks the author; group and general chats are unaffected."""
    peers: list[User] = []
    if to is not None:
        peer = await tx.find_user(to)
        peers = [] if peer is None else [peer]
    elif chat is not None and chat.kind == "direct":
        for uid in await tx.direct_pair(chat.chat_id):
            other = await tx.get_user(uid)
            if other is not None:
                peers.append(other)
    for peer in peers:
        await check_not_blocked(tx, peer, author.user_id)


async def _other_user(tx: SqlTx, caller: Caller, username: str) -> User:
    """The user a block list call names: 404 unknown, -32602 yourself."""
    user = await tx.find_user(username)
    if user is None:
        raise errors.not_found("user", username=username)
    if user.user_id == caller.user_id:
        raise errors.invalid_params("you cannot block yourself", "/username")
    return user


class Block(Method):
    """Stop a user from messaging you 1-to-1, inviting you or adding you to chats."""

    name = "users.block"

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        assert caller is not None
        now = services.now()

        async def block(tx: SqlTx) -> str:
            user = await _other_user(tx, caller, params["username"])
            await tx.block(caller.user_id, user.user_id, now)
            return user.username

        blocked = await services.store.write(block)
        log.info("%s blocked %s", caller.username, blocked)
        return {}


class Unblock(Method):
    """Lift a block."""

    name = "users.unblock"

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        assert caller is not None

        async def unblock(tx: SqlTx) -> str:
            user = await _other_user(tx, caller, params["username"])
            await tx.unblock(caller.user_id, user.user_id)
            return user.username

        unblocked = await services.store.write(unblock)
        log.info("%s unblocked %s", caller.username, unblocked)
        return {}


class Blocked(Method):
    """The usernames the caller blocks."""

    name = "users.blocked"

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        assert caller is not None
        names = await services.store.read(lambda tx: tx.blocked_names(caller.user_id))
        return {"usernames": names}
