"""Users, sessions, login throttling, registrations, message quota and reports."""
from __future__ import annotations

from typing import Sequence

from store.models import Session, User, UserId
from store.sql_base import USER_COLS, user_from, username_key
from store.sql_events import EventsSql


class UsersSql(EventsSql):
    """`SqlTx`, one area: users, sessions, logins, registrations, quota, reports."""

    # -- users -----------------------------------------------------------------------------
    async def find_user(self, username: str) -> User | None:
        """A user by name (case-insensitive)."""
        r = await self.db.fetchone(f"SELECT {USER_COLS} FROM users WHERE username_key = ?",
                                   username_key(username))
        return None if r is None else user_from(r)

    async def get_user(self, user_id: UserId) -> User | None:
        """A user by id."""
        if self._memo and ("user", user_id) in self._memo:
            return self._memo.pop(("user", user_id))  # type: ignore[no-any-return]
        r = await self.db.fetchone(f"SELECT {USER_COLS} FROM users WHERE user_id = ?", user_id)
        return None if r is None else user_from(r)

    async def create_user(self, username: str, pw_hash: str, now: float) -> User | None:
        """Register a user (nothing else: joining chats is the methods' rule); None if the
        name is taken."""
        changed = await self.db.execute(
            "INSERT INTO users (username, username_key, pw_hash, read_seq, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (username_key) DO NOTHING",
            username, username_key(username), pw_hash, await self.last_seq(), now)
        if not changed:
            return None
        user = await self.find_user(username)
        assert user is not None
        return user

    async def set_read_marker(self, user_id: UserId, seq: int) -> None:
        """Move the user's read marker forward (never back)."""
        await self.db.execute("UPDATE users SET read_seq = ? WHERE user_id = ? AND read_seq < ?",
                              seq, user_id, seq)

    async def set_read_markers(self, markers: dict[UserId, int]) -> None:
        """Move several users' read markers forward (never back), each to at most the newest
        event: what many polls acknowledged, written at once."""
        if self.db.dialect != "postgres":
            newest = await self.last_seq()
            for user_id, seq in markers.items():
                await self.set_read_marker(user_id, min(seq, newest))
            return
        await self.db.execute(
            "UPDATE users AS u SET read_seq = v.seq FROM (SELECT a.user_id,"
            " LEAST(a.seq, (SELECT COALESCE(MAX(seq), 0) FROM events)) AS seq"
            " FROM unnest(?::bigint[], ?::bigint[]) AS a(user_id, seq)) AS v"
            " WHERE u.user_id = v.user_id AND u.read_seq < v.seq",
            list(markers), list(markers.values()))

    async def set_banned_until(self, user_id: UserId, until: float | None) -> None:
        """Ban a user until a time, or lift the ban (None)."""
        await self.db.execute("UPDATE users SET banned_until = ? WHERE user_id = ?",
                              until, user_id)

    async def lock_user(self, user_id: UserId) -> None:
        """Serialize this transaction with others that lock the same user (a no-op update)."""
        await self.db.execute("UPDATE users SET read_seq = read_seq WHERE user_id = ?", user_id)

    # -- sessions --------------------------------------------------------------------------
    async def create_session(self, token_hash: str, user_id: UserId, client: str | None,
                             now: float) -> None:
        """Store a new session under the hash of its token."""
        await self.db.execute(
            "INSERT INTO sessions (token_hash, user_id, client, created_at, last_seen)"
            " VALUES (?, ?, ?, ?, ?)", token_hash, user_id, client, now, now)

    async def get_session(self, token_hash: str) -> Session | None:
        """The session a token hash names, with its user's name."""
        r = await self.db.fetchone(
            "SELECT s.token_hash, s.user_id, u.username, s.client, s.created_at, s.last_seen"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id WHERE s.token_hash = ?",
            token_hash)
        if r is None:
            return None
        return Session(r[0], UserId(r[1]), r[2], r[3], r[4], r[5])

    async def get_sessions(self, token_hashes: Sequence[str]) -> list[Session | None]:
        """`get_session` of several token hashes in one query, in order."""
        if self.db.dialect != "postgres":
            return [await self.get_session(h) for h in token_hashes]
        rows = await self.db.fetchall(
            "SELECT s.token_hash, s.user_id, u.username, s.client, s.created_at, s.last_seen"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id"
            " WHERE s.token_hash = ANY(?::text[])", list(token_hashes))
        found = {r[0]: Session(r[0], UserId(r[1]), r[2], r[3], r[4], r[5]) for r in rows}
        return [found.get(h) for h in token_hashes]

    async def touch_session(self, token_hash: str, now: float) -> None:
        """Record that a session was used."""
        await self.db.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                              now, token_hash)

    async def delete_session(self, token_hash: str) -> bool:
        """End a session; whether it existed. Its parked polls answer 401 after the commit."""
        self.wakeups.ended.add(token_hash)
        return bool(await self.db.execute("DELETE FROM sessions WHERE token_hash = ?",
                                          token_hash))

    async def delete_idle_sessions(self, before: float) -> int:
        """End sessions unused since `before`."""
        return await self.db.execute("DELETE FROM sessions WHERE last_seen < ?", before)

    async def users_online(self, since: float) -> int:
        """Distinct users with a session used since a time."""
        r = await self.db.fetchone(
            "SELECT COUNT(DISTINCT user_id) FROM sessions WHERE last_seen >= ?", since)
        return int(r[0]) if r else 0

    async def list_sessions(self, user_id: UserId) -> list[Session]:
        """A user's sessions, oldest first."""
        rows = await self.db.fetchall(
            "SELECT s.token_hash, s.user_id, u.username, s.client, s.created_at, s.last_seen"
            " FROM sessions s JOIN users u ON u.user_id = s.user_id WHERE s.user_id = ?"
            " ORDER BY s.created_at", user_id)
        return [Session(r[0], UserId(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    async def end_sessions_over(self, user_id: UserId, keep: int) -> list[str]:
        """End a user's least recently used sessions beyond `keep`; their token hashes."""
        rows = await self.db.fetchall(
            "SELECT token_hash FROM sessions WHERE user_id = ?"
            " ORDER BY last_seen DESC, created_at DESC LIMIT 1000 OFFSET ?", user_id, keep)
        ended = [str(r[0]) for r in rows]
        for token_hash in ended:
            await self.delete_session(token_hash)
        return ended

    # -- login throttling, registrations ---------------------------------------------------
    async def login_attempts(self, key: str, address: str,
                             since: float) -> tuple[list[tuple[float, bool]],
                                                    list[tuple[float, bool]]]:
        """(time, failed) of password checks since a time, oldest first: those of the
        (username key, address) pair, and those of the address for any username."""
        rows = await self.db.fetchall(
            "SELECT at, failed, username_key FROM login_attempts WHERE address = ? AND at > ?"
            " ORDER BY at", address, since)
        everyone = [(float(r[0]), bool(r[1])) for r in rows]
        pair = [(float(r[0]), bool(r[1])) for r in rows if r[2] == key]
        return pair, everyone

    async def claim_login_attempt(self, attempt_id: str, key: str, address: str,
                                  now: float) -> None:
        """Record a password check that is about to run (it counts until it ends)."""
        await self.db.execute(
            "INSERT INTO login_attempts (attempt_id, username_key, address, failed, at)"
            " VALUES (?, ?, ?, 0, ?)", attempt_id, key, address, now)

    async def fail_login_attempt(self, attempt_id: str, key: str, address: str,
                                 now: float) -> None:
        """The claimed check found a wrong password: it stays, as a failure at `now`."""
        changed = await self.db.execute(
            "UPDATE login_attempts SET failed = 1, at = ? WHERE attempt_id = ?", now, attempt_id)
        if not changed:  # pruned while the check ran: the failure still counts
            await self.db.execute(
                "INSERT INTO login_attempts (attempt_id, username_key, address, failed, at)"
                " VALUES (?, ?, ?, 1, ?)", attempt_id, key, address, now)

    async def drop_login_attempt(self, attempt_id: str) -> None:
        """The claimed check succeeded or never ran: it no longer counts."""
        await self.db.execute("DELETE FROM login_attempts WHERE attempt_id = ?", attempt_id)

    async def clear_login_failures(self, key: str, address: str) -> None:
        """Forget a pair's failures (after a correct password from that address)."""
        await self.db.execute(
            "DELETE FROM login_attempts WHERE username_key = ? AND address = ? AND failed = 1",
            key, address)

    async def prune_login_attempts(self, before: float) -> None:
        """Forget password checks older than a time."""
        await self.db.execute("DELETE FROM login_attempts WHERE at < ?", before)

    async def registrations_used(self, address: str, window_start: float) -> int:
        """New usernames an address registered in a registration window."""
        r = await self.db.fetchone(
            "SELECT used FROM registrations WHERE address = ? AND window_start = ?",
            address, window_start)
        return int(r[0]) if r else 0

    async def add_registrations(self, address: str, window_start: float, count: int) -> None:
        """Count (or, negative, uncount) registrations of an address in a window."""
        await self.db.execute(
            "INSERT INTO registrations (address, window_start, used) VALUES (?, ?, ?)"
            " ON CONFLICT (address, window_start) DO UPDATE"
            " SET used = registrations.used + excluded.used", address, window_start, count)

    async def prune_registrations(self, before: float) -> None:
        """Forget registration windows that started before a time."""
        await self.db.execute("DELETE FROM registrations WHERE window_start < ?", before)

    # -- quota -----------------------------------------------------------------------------
    async def quota_used(self, user_id: UserId, window_start: float) -> int:
        """Messages counted against the user's general-chat quota in a window."""
        r = await self.db.fetchone(
            "SELECT used FROM quota WHERE user_id = ? AND window_start = ?",
            user_id, window_start)
        return int(r[0]) if r else 0

    async def quota_add(self, user_id: UserId, window_start: float) -> None:
        """Count one more message in the window (older windows are dropped)."""
        await self.db.execute("DELETE FROM quota WHERE user_id = ? AND window_start < ?",
                              user_id, window_start)
        await self.db.execute(
            "INSERT INTO quota (user_id, window_start, used) VALUES (?, ?, 1)"
            " ON CONFLICT (user_id, window_start) DO UPDATE SET used = quota.used + 1",
            user_id, window_start)

    # -- reports ---------------------------------------------------------------------------
    async def report_state(self, reported: UserId, reporter: UserId) -> str | None:
        """The state of this reporter's report of this user (counts/young/banned/used)."""
        r = await self.db.fetchone(
            "SELECT state FROM reports WHERE reported_id = ? AND reporter_id = ?",
            reported, reporter)
        return None if r is None else str(r[0])

    async def put_report(self, reported: UserId, reporter: UserId, reason: str | None,
                         now: float, state: str) -> None:
        """Record a report in a state, replacing this reporter's earlier one."""
        await self.db.execute(
            "INSERT INTO reports (reported_id, reporter_id, reason, created_at, state)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (reported_id, reporter_id) DO UPDATE"
            " SET reason = excluded.reason, created_at = excluded.created_at,"
            " state = excluded.state", reported, reporter, reason, now, state)

    async def count_reports(self, reported: UserId) -> int:
        """Distinct reporters of a user whose reports count toward the next ban."""
        r = await self.db.fetchone(
            "SELECT COUNT(*) FROM reports WHERE reported_id = ? AND state = 'counts'", reported)
        return int(r[0]) if r else 0

    async def use_reports(self, reported: UserId) -> None:
        """The counting reports caused a ban: they count no more."""
        await self.db.execute(
            "UPDATE reports SET state = 'used' WHERE reported_id = ? AND state = 'counts'",
            reported)
