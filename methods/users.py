"""users.report (distinct reporters ban a user from sending for a while) and block lists."""
from __future__ import annotations

import logging
from typing import Required, TypedDict

from methods import errors
from methods.base import Result, UserMethod
from methods.context import Caller, Limits, Request, Services, rfc3339
from methods.logsafe import info_per_account
from methods.rules import banned_until, caller_user, existing_user
from methods.views import event_body
from store.models import User
from store.sql import SqlTx

log = logging.getLogger(__name__)


class ReportParams(TypedDict, total=False):
    """users.report's params."""

    username: Required[str]
    reason: str


class Report(UserMethod[ReportParams]):
    """Report an abusive user; at the threshold of distinct reporters they are banned."""

    name = "users.report"

    async def call(self, services: Services, caller: Caller, params: ReportParams,
                   request: Request) -> Result:
        username: str = params["username"]
        reason: str | None = params.get("reason")
        limits = services.limits
        now = services.now()

        async def report(tx: SqlTx) -> tuple[int, float | None, bool]:
            target = await existing_user(tx, username)
            if target.user_id == caller.user_id:
                raise errors.conflict("you cannot report yourself")
            reporter = await caller_user(tx, caller)
            banned = banned_until(target, now)
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


def report_state(limits: Limits, reporter: User, ban_end: float | None, now: float) -> str:
    """Whether a report counts toward a ban: not while the user is banned already (it would
    extend the ban), and not from an account younger than --report-min-age (throwaways)."""
    if ban_end is not None:
        return "banned"
    if now - reporter.created_at < limits.report_min_age:
        return "young"
    return "counts"


# -- block lists -------------------------------------------------------------------------

async def _other_user(tx: SqlTx, caller: Caller, username: str) -> User:
    """The user a block list call names: 404 unknown, -32602 yourself."""
    user = await existing_user(tx, username)
    if user.user_id == caller.user_id:
        raise errors.invalid_params("you cannot block yourself", "/username")
    return user


class BlockParams(TypedDict):
    """users.block's params."""

    username: str


class Block(UserMethod[BlockParams]):
    """Stop a user from messaging you 1-to-1, inviting you or adding you to chats."""

    name = "users.block"

    async def call(self, services: Services, caller: Caller, params: BlockParams,
                   request: Request) -> Result:
        now = services.now()

        async def block(tx: SqlTx) -> str:
            user = await _other_user(tx, caller, params["username"])
            await tx.block(caller.user_id, user.user_id, now)
            return user.username

        blocked = await services.store.write(block)
        info_per_account(log, caller.username, "%s blocked %s", caller.username, blocked)
        return {}


class UnblockParams(TypedDict):
    """users.unblock's params."""

    username: str


class Unblock(UserMethod[UnblockParams]):
    """Lift a block."""

    name = "users.unblock"

    async def call(self, services: Services, caller: Caller, params: UnblockParams,
                   request: Request) -> Result:

        async def unblock(tx: SqlTx) -> str:
            user = await _other_user(tx, caller, params["username"])
            await tx.unblock(caller.user_id, user.user_id)
            return user.username

        unblocked = await services.store.write(unblock)
        info_per_account(log, caller.username, "%s unblocked %s", caller.username, unblocked)
        return {}


class BlockedParams(TypedDict):
    """users.blocked's params (none)."""


class Blocked(UserMethod[BlockedParams]):
    """The usernames the caller blocks."""

    name = "users.blocked"

    async def call(self, services: Services, caller: Caller, params: BlockedParams,
                   request: Request) -> Result:
        names = await services.store.read(lambda tx: tx.blocked_names(caller.user_id))
        return {"usernames": names}


METHODS = (Report, Block, Unblock, Blocked)
