"""users.report: distinct reporters ban a user from sending for a while."""
from __future__ import annotations

import logging

from methods import errors
from methods.base import Method, Params, Result
from methods.context import Caller, Request, Services, rfc3339
from methods.views import event_body
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
            if not await tx.add_report(target.user_id, caller.user_id, reason, now):
                raise errors.conflict("you already reported this user", username=target.username)
            count = await tx.count_reports(target.user_id)
            banned = target.banned_until if (target.banned_until or 0) > now else None
            started = False
            if count >= limits.ban_threshold:
                banned = max(banned or 0.0, now + limits.ban_duration)
                await tx.set_banned_until(target.user_id, banned)
                await tx.clear_reports(target.user_id)
                await tx.add_user_event(target.user_id, "ban",
                                        event_body("ban", until=rfc3339(banned)))
                started = True
            return count, banned, started

        count, banned, started = await services.store.write(report)
        if started:
            log.info("%s banned until %s after %d reports", username, rfc3339(banned or 0), count)
        return {"reports": count, "banned_until": None if banned is None else rfc3339(banned)}
