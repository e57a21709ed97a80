"""Message rules end to end: lifetime, general-chat quota, comments, scheduling, reports and bans.

Every test talks to a real server over HTTP. Time rules run the real app in-process with a
FakeClock (tests/inproc.py) and production-sized settings, moving time instead of sleeping.
"""
from __future__ import annotations

import math
import time
from typing import Any, Awaitable, Callable

import aiohttp
import pytest

from tests.helpers import (
    all_events_since, chat_of, connect_users, db_rows, events_until, message_texts, rfc3339, ts,
)
from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess

InProcFactory = Callable[..., Awaitable[InProcessServer]]


# -- lifetime -------------------------------------------------------------------------------

TTL = 3600.0


async def test_messages_and_comments_expire_everywhere(
        inproc_factory: InProcFactory, http: aiohttp.ClientSession) -> None:
    """expires_at = sent_at + ttl; afterwards gone from history, poll, unread, and the database."""
    server = await inproc_factory("--message-ttl", str(TTL))
    author, reader, commenter = await connect_users(http, server, 3)
    start = reader.cursor
    assert start is not None

    sent = (await author.call("messages.send", chat_id="general", text="short-lived"))["message"]
    comment = (await commenter.call("messages.send", chat_id="general", text="a comment",
                                    comment_to=sent["message_id"]))["message"]
    direct = (await author.call("messages.send", to=reader.username, text="psst"))["message"]
    ids = {sent["message_id"], comment["message_id"], direct["message_id"]}
    for m in (sent, comment, direct):
        assert ts(m["expires_at"]) - ts(m["sent_at"]) == pytest.approx(TTL, abs=0.002)
    assert comment["comment_to"] == sent["message_id"]

    # Before expiry the messages are everywhere.
    history = await reader.call("messages.history", chat_id="general")
    assert [m["message_id"] for m in history["messages"]] == [sent["message_id"],
                                                              comment["message_id"]]
    events = await all_events_since(reader, start)
    assert {e["message"]["message_id"] for e in events if e["type"] == "message"} == ids
    status = await reader.call("session.status")
    assert chat_of(status, "general") is not None
    assert chat_of(status, "general")["unread"] == 2  # type: ignore[index]
    assert chat_of(status, direct["chat_id"])["unread"] == 1  # type: ignore[index]
    marks = ",".join("?" * len(ids))
    in_db = db_rows(server, f"SELECT message_id FROM messages WHERE message_id IN ({marks})",
                    *ids)
    assert {r[0] for r in in_db} == ids

    # Just before expiry they are still there.
    await server.advance_to(min(ts(m["expires_at"]) for m in (sent, comment, direct)) - 30)
    page = await reader.call("messages.history", chat_id="general")
    assert [m["message_id"] for m in page["messages"]] == [sent["message_id"],
                                                           comment["message_id"]]

    await server.advance_to(max(ts(m["expires_at"]) for m in (sent, comment, direct)) + 0.05)

    # After expiry (and before any purge): not in history, not in a re-poll of the old
    # cursor, not unread.
    for chat_id in ("general", direct["chat_id"]):
        page = await reader.call("messages.history", chat_id=chat_id)
        assert not ids & {m["message_id"] for m in page["messages"]}
    events = await all_events_since(reader, start)
    assert not [e for e in events if e["type"] == "message"]
    status = await reader.call("session.status")
    assert chat_of(status, "general")["unread"] == 0  # type: ignore[index]
    assert chat_of(status, direct["chat_id"])["unread"] == 0  # type: ignore[index]
    # An expired message can be neither commented on nor used as a history anchor.
    failure = await author.error("messages.send", chat_id="general", text="late",
                                 comment_to=sent["message_id"])
    assert failure.code == 404
    failure = await reader.error("messages.history", chat_id="general",
                                 before=sent["message_id"])
    assert failure.code == 404

    # The purge (the background purger's pass) deletes the rows and their events for real.
    # (That the purger runs by itself: tests/test_open_network.py, a real server process.)
    def left() -> int:
        count: int = db_rows(
            server, f"SELECT COUNT(*) FROM messages WHERE message_id IN ({marks})", *ids)[0][0]
        count += db_rows(
            server, f"SELECT COUNT(*) FROM events WHERE message_id IN ({marks})", *ids)[0][0]
        return count

    await server.purge()
    assert left() == 0


# -- general-chat quota ---------------------------------------------------------------------

async def test_general_chat_quota(inproc_factory: InProcFactory,
                                  http: aiohttp.ClientSession) -> None:
    """3 general messages per hour window; the 4th is 429 with retry_after; other chats are free."""
    limit, period = 3, 3600.0
    server = await inproc_factory("--rate-limit", str(limit), "--rate-period", str(period))
    sender, other = await connect_users(http, server, 2)
    group = (await sender.call("chats.create", title="no quota here",
                               members=[other.username]))["chat"]

    # Direct and group chats are not limited and do not use up the general quota.
    for n in range(limit + 2):
        await sender.call("messages.send", to=other.username, text=f"direct {n}")
        await sender.call("messages.send", chat_id=group["chat_id"], text=f"group {n}")

    quota = (await sender.call("session.status"))["quota"]
    assert quota["limit"] == limit and quota["remaining"] == limit
    resets = ts(quota["resets_at"])
    assert 0 < resets - server.now() <= period + 0.01
    # Start a little after a window began, so the window ends while the test runs.
    await server.advance_to(resets + 0.05)
    quota = (await sender.call("session.status"))["quota"]
    assert quota["remaining"] == limit
    assert ts(quota["resets_at"]) == pytest.approx(resets + period, abs=0.002)
    resets = ts(quota["resets_at"])

    for n in range(limit):
        await sender.call("messages.send", chat_id="general", text=f"general {n}")
        quota = (await sender.call("session.status"))["quota"]
        assert quota["remaining"] == limit - 1 - n
        assert ts(quota["resets_at"]) == pytest.approx(resets, abs=0.002)

    # Late in the window: retry_after counts down to its end.
    await server.advance_to(resets - 600.4)
    failure = await sender.error("messages.send", chat_id="general", text="one too many")
    now = server.now()
    assert failure.code == 429
    retry = failure.data["retry_after"]
    assert isinstance(retry, int) and 1 <= retry <= math.ceil(period)
    assert abs(retry - math.ceil(resets - now)) <= 1
    assert 600 <= retry <= 602
    # Scheduling into the general chat is checked against the quota too.
    failure = await sender.error("messages.send", chat_id="general", text="later",
                                 send_at=rfc3339(server.now() + 30))
    assert failure.code == 429
    # The refused messages left nothing behind.
    history = await other.call("messages.history", chat_id="general")
    assert [m["text"] for m in history["messages"]] == [f"general {n}" for n in range(limit)]
    assert (await sender.call("messages.scheduled"))["scheduled"] == []
    # A used-up general quota does not block other chats, nor other users.
    await sender.call("messages.send", to=other.username, text="still fine")
    await sender.call("messages.send", chat_id=group["chat_id"], text="still fine")
    await other.call("messages.send", chat_id="general", text="my own quota")
    assert server.now() < resets, "the checks above must run inside one quota window"
    # Still refused shortly before the window ends.
    await server.advance_to(resets - 30)
    assert (await sender.error("messages.send", chat_id="general", text="x")).code == 429

    await server.advance_to(resets + 0.05)
    await sender.call("messages.send", chat_id="general", text="new window")
    quota = (await sender.call("session.status"))["quota"]
    assert quota["remaining"] == limit - 1
    assert ts(quota["resets_at"]) == pytest.approx(resets + period, abs=0.002)


# -- comments -------------------------------------------------------------------------------

async def test_comments_stay_in_their_chat(server: ServerProcess,
                                           http: aiohttp.ClientSession) -> None:
    """A comment names a live message of the same chat; members get it as a message event."""
    a, b, c = await connect_users(http, server, 3)
    c_start = c.cursor
    assert c_start is not None
    group = (await a.call("chats.create", title="commenters", members=[b.username]))["chat"]
    gid = group["chat_id"]

    root = (await a.call("messages.send", chat_id="general", text="root"))["message"]
    comment = (await b.call("messages.send", chat_id="general", text="re: root",
                            comment_to=root["message_id"]))["message"]
    assert comment["comment_to"] == root["message_id"] and comment["chat_id"] == "general"
    for member in (a, c):
        seen = await events_until(member, lambda e: e["type"] == "message"
                                  and e["message"]["message_id"] == comment["message_id"])
        event = next(e for e in seen if e["type"] == "message"
                     and e["message"]["message_id"] == comment["message_id"])
        assert event["message"]["comment_to"] == root["message_id"]

    g_root = (await a.call("messages.send", chat_id=gid, text="group root"))["message"]
    g_comment = (await b.call("messages.send", chat_id=gid, text="re: group root",
                              comment_to=g_root["message_id"]))["message"]
    assert g_comment["comment_to"] == g_root["message_id"]
    seen = await events_until(a, lambda e: e["type"] == "message"
                              and e["message"]["message_id"] == g_comment["message_id"])
    assert g_root["message_id"] in [e["message"]["comment_to"] for e in seen
                                    if e["type"] == "message"]
    # c is not in the group: none of it reaches c.
    assert message_texts(await all_events_since(c, c_start), gid) == []

    # A message of another chat, or an unknown id, is 404 wherever the comment goes.
    for params in (dict(chat_id=gid, comment_to=root["message_id"]),
                   dict(chat_id="general", comment_to=g_root["message_id"]),
                   dict(chat_id="general", comment_to="m_doesnotexist"),
                   dict(chat_id="general", comment_to=g_root["message_id"],
                        send_at=rfc3339(time.time() + 60))):
        failure = await b.error("messages.send", text="misplaced", **params)
        assert failure.code == 404, params

    # Direct chats: a comment on the pair's own message works, one on a general message not,
    # not even as the first message that would create the direct chat.
    hello = (await a.call("messages.send", to=b.username, text="hello"))["message"]
    reply = (await b.call("messages.send", to=a.username, text="re: hello",
                          comment_to=hello["message_id"]))["message"]
    assert reply["chat_id"] == hello["chat_id"] and reply["comment_to"] == hello["message_id"]
    failure = await b.error("messages.send", to=a.username, text="x",
                            comment_to=root["message_id"])
    assert failure.code == 404
    failure = await a.error("messages.send", to=c.username, text="first words",
                            comment_to=root["message_id"])
    assert failure.code == 404
    # ...and the refused first message created no direct chat.
    assert [ch["kind"] for ch in (await c.call("session.status"))["chats"]] == ["general"]
    general = await c.call("messages.history", chat_id="general")
    assert [m["message_id"] for m in general["messages"]] == [root["message_id"],
                                                              comment["message_id"]]


# -- scheduled messages ---------------------------------------------------------------------

def scheduled_events(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(action, scheduled_id) of the `scheduled` events."""
    return [(e["action"], e["scheduled"]["scheduled_id"]) for e in events
            if e["type"] == "scheduled"]


async def test_scheduled_messages(inproc_factory: InProcFactory,
                                  http: aiohttp.ClientSession) -> None:
    """Delivered within a second after send_at, never before; listing, cancelling, limits."""
    server = await inproc_factory()
    author, recipient, stranger = await connect_users(http, server, 3)
    second_client = Api(http, server.url)  # another client of the author: same stream
    second_client.cursor = (await second_client.connect(author.username))["cursor"]
    start = recipient.cursor
    assert start is not None

    due = server.now() + 90
    kept = await author.call("messages.send", to=recipient.username, text="on time",
                             send_at=rfc3339(due))
    assert list(kept) == ["scheduled"]
    kept_s = kept["scheduled"]
    assert kept_s["to"] == recipient.username and kept_s["chat_id"] is None
    assert ts(kept_s["send_at"]) == pytest.approx(due, abs=0.002)
    due = ts(kept_s["send_at"])
    dropped_s = (await author.call("messages.send", chat_id="general", text="never",
                                   send_at=rfc3339(due)))["scheduled"]
    listing = (await author.call("messages.scheduled"))["scheduled"]
    assert [s["scheduled_id"] for s in listing] == [kept_s["scheduled_id"],
                                                    dropped_s["scheduled_id"]]
    assert (await recipient.call("messages.scheduled"))["scheduled"] == []

    # Only the author may cancel; an unknown id is 404 as well.
    failure = await stranger.error("messages.cancel", scheduled_id=kept_s["scheduled_id"])
    assert failure.code == 404
    failure = await author.error("messages.cancel", scheduled_id="s_nosuchthing")
    assert failure.code == 404
    assert await author.call("messages.cancel", scheduled_id=dropped_s["scheduled_id"]) == {}
    failure = await author.error("messages.cancel", scheduled_id=dropped_s["scheduled_id"])
    assert failure.code == 409
    listing = (await author.call("messages.scheduled"))["scheduled"]
    assert [s["scheduled_id"] for s in listing] == [kept_s["scheduled_id"]]

    # Every client of the author sees created, created, cancelled; the recipient sees none.
    seen = await events_until(second_client, lambda e: e["type"] == "scheduled"
                              and e["action"] == "cancelled")
    assert scheduled_events(seen) == [("created", kept_s["scheduled_id"]),
                                      ("created", dropped_s["scheduled_id"]),
                                      ("cancelled", dropped_s["scheduled_id"])]

    # Not before send_at (the scheduler has woken up at this time and run a pass)...
    await server.advance_to(due - 30)
    assert await server.fire_due() == 0
    seen = (await recipient.poll(recipient.cursor, timeout=0.3))["events"]
    assert server.now() < due
    assert seen == []
    # ...but within about a second after it: the scheduler notices without being asked.
    await server.advance_to(due)
    seen = await events_until(recipient, lambda e: e["type"] == "message", timeout=4)
    arrived = server.now()
    delivered = [e["message"] for e in seen if e["type"] == "message"]
    assert [m["text"] for m in delivered] == ["on time"]
    assert 0 <= ts(delivered[0]["sent_at"]) - due < 1.0
    assert arrived - due < 2.5
    assert scheduled_events(seen) == []

    assert (await author.call("messages.scheduled"))["scheduled"] == []
    failure = await author.error("messages.cancel", scheduled_id=kept_s["scheduled_id"])
    assert failure.code == 409

    # The cancelled one never arrives, and the sent one arrived once.
    await server.advance_to(due + 0.8)
    assert await server.fire_due() == 0
    general = await stranger.call("messages.history", chat_id="general")
    assert "never" not in [m["text"] for m in general["messages"]]
    assert message_texts(await all_events_since(recipient, start)) == ["on time"]

    # send_at in the past: delivered now.
    past = await author.call("messages.send", to=recipient.username, text="overdue",
                             send_at=rfc3339(server.now() - 60))
    assert list(past) == ["message"]
    assert ts(past["message"]["sent_at"]) == pytest.approx(server.now(), abs=2)
    seen = await events_until(recipient, lambda e: e["type"] == "message")
    assert message_texts(seen) == ["overdue"]

    # Up to a year ahead is fine; beyond it, or without a time zone, is invalid.
    far = await author.call("messages.send", to=recipient.username, text="next year",
                            send_at=rfc3339(server.now() + 360 * 86400))
    await author.call("messages.cancel", scheduled_id=far["scheduled"]["scheduled_id"])
    for send_at in (rfc3339(server.now() + 400 * 86400), "2030-01-01T00:00:00"):
        failure = await author.error("messages.send", to=recipient.username, text="too far",
                                     send_at=send_at)
        assert failure.code == -32602, send_at
    assert (await author.call("messages.scheduled"))["scheduled"] == []


async def test_scheduled_message_survives_restart(
        inproc_factory: InProcFactory, http: aiohttp.ClientSession) -> None:
    """Due while the server is down: sent at start-up, exactly once, also after more restarts.

    (The app restarts in this process on the same database file; real process restarts and
    kill -9 are tests/test_crash.py's.)
    """
    server = await inproc_factory()
    author, recipient = await connect_users(http, server, 2)
    start = recipient.cursor
    assert start is not None
    due = server.now() + 120
    entry = (await author.call("messages.send", to=recipient.username, text="while you slept",
                               send_at=rfc3339(due)))["scheduled"]

    await server.stop()
    server.clock.advance(due + 0.3 - server.now())
    restarted = server.now()
    await server.start()

    seen = await events_until(recipient, lambda e: e["type"] == "message", timeout=3)
    message = next(e["message"] for e in seen if e["type"] == "message")
    assert message["text"] == "while you slept"
    assert ts(message["sent_at"]) >= restarted
    assert (await author.call("messages.scheduled"))["scheduled"] == []
    failure = await author.error("messages.cancel", scheduled_id=entry["scheduled_id"])
    assert failure.code == 409

    await server.advance(1.2)
    assert await server.fire_due() == 0  # at least one more scheduler pass: nothing again
    await server.restart()
    assert await server.fire_due() == 0
    history = await recipient.call("messages.history", chat_id=message["chat_id"])
    assert [m["text"] for m in history["messages"]] == ["while you slept"]
    assert message_texts(await all_events_since(recipient, start)) == ["while you slept"]


# -- reports and bans -----------------------------------------------------------------------

async def test_reports_and_bans(inproc_factory: InProcFactory,
                                http: aiohttp.ClientSession) -> None:
    """3 distinct reporters ban for an hour: every send is 403 banned; reports reset; ban lifts."""
    duration = 3600.0
    server = await inproc_factory("--ban-threshold", "3", "--ban-duration", str(duration),
                                  "--report-min-age", "0")
    target, r1, r2, r3, r4 = await connect_users(http, server, 5)
    r1_start = r1.cursor
    assert r1_start is not None
    group = (await target.call("chats.create", title="before the ban",
                               members=[r1.username]))["chat"]
    root = (await r1.call("messages.send", chat_id="general", text="root"))["message"]

    assert (await target.error("users.report", username=target.username)).code == 409
    assert (await r1.error("users.report", username="nobody_here_at_all")).code == 404
    first = await r1.call("users.report", username=target.username)
    assert first == {"reports": 1, "banned_until": None}
    assert (await r1.error("users.report", username=target.username)).code == 409
    second = await r2.call("users.report", username=target.username, reason="spam")
    assert second == {"reports": 2, "banned_until": None}  # the duplicate was not counted

    # Scheduled before the ban, due while it lasts: refused when it fires.
    pending = (await target.call("messages.send", chat_id="general", text="from a banned user",
                                 send_at=rfc3339(server.now() + 60)))["scheduled"]

    asked = server.now()
    third = await r3.call("users.report", username=target.username)
    assert third["reports"] == 3 and third["banned_until"] is not None
    until_text = third["banned_until"]
    until = ts(until_text)
    assert asked + duration - 0.002 <= until <= server.now() + duration

    seen = await events_until(target, lambda e: e["type"] == "ban")
    assert [e["until"] for e in seen if e["type"] == "ban"] == [until_text]
    for params in (dict(chat_id="general", text="x"), dict(to=r1.username, text="x"),
                   dict(chat_id=group["chat_id"], text="x"),
                   dict(chat_id="general", text="x", comment_to=root["message_id"]),
                   dict(chat_id="general", text="x", send_at=rfc3339(server.now() + 60))):
        failure = await target.error("messages.send", **params)
        assert failure.code == 403, params
        assert failure.data["reason"] == "banned" and failure.data["until"] == until_text
    status = await target.call("session.status")
    assert status["banned_until"] == until_text
    assert (await r1.call("session.status"))["banned_until"] is None
    await r1.call("messages.send", chat_id="general", text="reporters may still talk")

    # A report during the ban is recorded but neither extends the ban nor counts.
    assert await r4.call("users.report", username=target.username) == {
        "reports": 0, "banned_until": until_text}
    assert (await r4.error("users.report", username=target.username)).code == 409

    await server.advance(60)  # the scheduled message is due now, the ban still lasts
    seen = await events_until(target, lambda e: e["type"] == "scheduled"
                              and e["action"] == "cancelled", timeout=3)
    cancelled = [e for e in seen if e["type"] == "scheduled" and e["action"] == "cancelled"]
    assert cancelled[0]["scheduled"]["scheduled_id"] == pending["scheduled_id"]
    assert cancelled[0]["reason"] == "banned"
    assert "from a banned user" not in message_texts(await all_events_since(r1, r1_start))

    # Still banned shortly before the end; the ban lifts by itself.
    await server.advance_to(until - 30)
    assert (await target.error("messages.send", chat_id="general", text="x")).code == 403
    await server.advance_to(until + 0.05)
    await target.call("messages.send", chat_id="general", text="I am back")
    assert (await target.call("session.status"))["banned_until"] is None

    # The ban used up the reports behind it: r1 and r2 may report again, and r4's report
    # from during the ban did not carry over: it takes three new ones. Across a restart.
    assert (await r1.call("users.report", username=target.username))["reports"] == 1
    assert (await r2.call("users.report", username=target.username))["reports"] == 2
    again = await r4.call("users.report", username=target.username)
    assert again["reports"] == 3 and again["banned_until"] is not None
    until = ts(again["banned_until"])
    await server.restart()
    assert server.now() < until - 0.3
    failure = await target.error("messages.send", chat_id="general", text="x")
    assert failure.code == 403 and failure.data["reason"] == "banned"
    assert (await target.call("session.status"))["banned_until"] == again["banned_until"]
    await server.advance_to(until + 0.05)
    await target.call("messages.send", chat_id="general", text="back again")
    assert (await target.call("session.status"))["banned_until"] is None
