"""Private group chats end to end: create, invite, links, join requests, leave, restarts."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterator

import aiohttp
import pytest

from tests.helpers import (
    Event, all_events_since, chat_of, connect_users, drain, events_until, message_texts,
)
from tests.support import Api, ServerProcess, running_server

ServerFactory = Callable[..., ServerProcess]
OWNER_ONLY = ("chats.invite", "chats.link", "chats.approve", "chats.decline")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server for the tests that need no special settings and no restart."""
    with running_server(
            tmp_path_factory.mktemp("groups") / "data") as proc:
        yield proc


def about(events: list[Event], chat_id: str) -> list[Event]:
    """The events that concern one chat."""
    return [e for e in events if e.get("chat_id") == chat_id
            or (e["type"] == "message" and e["message"]["chat_id"] == chat_id)]


def chat_events(events: list[Event], chat_id: str) -> list[tuple[str, str]]:
    """(action, username) of the `chat` events of one chat."""
    return [(e["action"], e["username"]) for e in events
            if e["type"] == "chat" and e["chat_id"] == chat_id]


def owner_only_params(method: str, chat_id: str, username: str) -> dict[str, Any]:
    """Params for one of the owner-only methods."""
    if method == "chats.link":
        return {"chat_id": chat_id}
    return {"chat_id": chat_id, "username": username}


async def test_create_with_members(shared_server: ServerProcess,
                                   http: aiohttp.ClientSession) -> None:
    """The creator owns it; each member gets `added`; status lists it; bad input creates nothing."""
    owner, m1, m2, outsider = await connect_users(http, shared_server, 4)
    created = await owner.call("chats.create", title="  Book club ",
                               members=[m1.username, owner.username, m2.username])
    chat = created["chat"]
    gid = chat["chat_id"]
    assert chat["kind"] == "group" and chat["title"] == "Book club"
    assert chat["owner"] == owner.username
    assert chat["members"] == [owner.username, m1.username, m2.username]

    # Each gets the `added` events from their own on (they were not members before).
    everyone = [("added", u.username) for u in (owner, m1, m2)]
    for n, user in enumerate((owner, m1, m2)):
        seen = await events_until(user, lambda e: e["type"] == "chat"
                                  and e["username"] == m2.username)
        assert chat_events(seen, gid) == everyone[n:]
        view = chat_of(await user.call("session.status"), gid)
        assert view is not None
        assert view["kind"] == "group" and view["title"] == "Book club"
        assert view["owner"] == owner.username and view["unread"] == 0
        assert view["members"] == chat["members"]
    assert about(await drain(outsider), gid) == []
    assert chat_of(await outsider.call("session.status"), gid) is None

    # An unknown member or a blank title: an error, and no chat was created.
    before = len((await owner.call("session.status"))["chats"])
    failure = await owner.error("chats.create", title="ghosts",
                                members=[m1.username, "nobody_by_that_name"])
    assert failure.code == 404
    assert (await owner.error("chats.create", title="   ")).code == -32602
    assert (await owner.error("chats.create", title="twice",
                              members=[m1.username, m1.username])).code == -32602
    assert len((await owner.call("session.status"))["chats"]) == before
    assert [e for e in await drain(m1) if e["type"] == "chat"] == []


async def test_invite_is_owner_only(shared_server: ServerProcess,
                                    http: aiohttp.ClientSession) -> None:
    """The owner invites; members and strangers cannot; the invitee and members are told."""
    owner, member, invitee, stranger = await connect_users(http, shared_server, 4)
    gid = (await owner.call("chats.create", title="invites",
                            members=[member.username]))["chat"]["chat_id"]
    await drain(member)

    assert (await member.error("chats.invite", chat_id=gid,
                               username=stranger.username)).code == 403
    code = (await stranger.error("chats.invite", chat_id=gid, username=stranger.username)).code
    assert code in (403, 404)
    assert (await owner.error("chats.invite", chat_id=gid,
                              username="nobody_by_that_name")).code == 404
    assert (await owner.error("chats.invite", chat_id="g_nosuchchat",
                              username=invitee.username)).code == 404
    assert (await owner.error("chats.invite", chat_id="general",
                              username=invitee.username)).code in (403, 404)
    assert about(await drain(stranger), gid) == []

    assert await owner.call("chats.invite", chat_id=gid, username=invitee.username) == {}
    for user in (invitee, member):
        seen = await events_until(user, lambda e: e["type"] == "chat")
        assert chat_events(seen, gid) == [("added", invitee.username)]
    view = chat_of(await invitee.call("session.status"), gid)
    assert view is not None and view["members"] == [owner.username, member.username,
                                                    invitee.username]
    # Inviting a member again changes nothing and tells nobody.
    assert await owner.call("chats.invite", chat_id=gid, username=invitee.username) == {}
    assert chat_events(await drain(member), gid) == []
    await invitee.call("messages.send", chat_id=gid, text="thanks for having me")
    seen = await events_until(member, lambda e: e["type"] == "message")
    assert message_texts(seen, gid) == ["thanks for having me"]


async def test_links_join_approve_decline(shared_server: ServerProcess,
                                          http: aiohttp.ClientSession) -> None:
    """One live link; join is pending and invisible until approved; decline says no."""
    owner, member, joiner, refused = await connect_users(http, shared_server, 4)
    joiner_start, refused_start = joiner.cursor, refused.cursor
    assert joiner_start is not None and refused_start is not None
    gid = (await owner.call("chats.create", title="by invitation",
                            members=[member.username]))["chat"]["chat_id"]
    await drain(owner)

    old = (await owner.call("chats.link", chat_id=gid))["link"]
    link = (await owner.call("chats.link", chat_id=gid))["link"]
    assert old != link and len(link) >= 16
    assert (await joiner.error("chats.join", link=old)).code == 404
    assert (await joiner.error("chats.join", link="not-a-real-link")).code == 404

    assert await joiner.call("chats.join", link=link) == {"status": "pending", "chat_id": gid}
    seen = await events_until(owner, lambda e: e["type"] == "join_request")
    assert [(e["chat_id"], e["username"]) for e in seen if e["type"] == "join_request"] == [
        (gid, joiner.username)]
    # Asking again is still pending and does not pester the owner.
    assert (await joiner.call("chats.join", link=link))["status"] == "pending"
    assert await joiner.call("chats.join", link=link) == {"status": "pending", "chat_id": gid}
    assert await refused.call("chats.join", link=link) == {"status": "pending", "chat_id": gid}
    seen = await events_until(owner, lambda e: e["type"] == "join_request")
    assert [e["username"] for e in seen if e["type"] == "join_request"] == [refused.username]
    # Only the owner hears of requests.
    assert [e for e in await drain(member) if e["type"] == "join_request"] == []

    # Pending: nothing of the chat is visible.
    await member.call("messages.send", chat_id=gid, text="members only")
    await owner.call("messages.send", chat_id=gid, text="still members only")
    failure = await joiner.error("messages.history", chat_id=gid)
    assert failure.code == 403
    assert (await joiner.error("messages.send", chat_id=gid, text="let me in")).code == 403
    assert chat_of(await joiner.call("session.status"), gid) is None
    assert about(await all_events_since(joiner, joiner_start), gid) == []

    assert await owner.call("chats.approve", chat_id=gid, username=joiner.username) == {}
    assert (await owner.error("chats.approve", chat_id=gid,
                              username=joiner.username)).code == 404  # no longer pending
    seen = await events_until(joiner, lambda e: e["type"] == "join_decided")
    assert [(e["chat_id"], e["approved"]) for e in seen if e["type"] == "join_decided"] == [
        (gid, True)]
    for user in (owner, member):
        seen = await events_until(user, lambda e: e["type"] == "chat")
        assert chat_events(seen, gid) == [("joined", joiner.username)]
    view = chat_of(await joiner.call("session.status"), gid)
    assert view is not None and joiner.username in view["members"]
    history = await joiner.call("messages.history", chat_id=gid)
    assert [m["text"] for m in history["messages"]] == ["members only", "still members only"]
    await member.call("messages.send", chat_id=gid, text="welcome")
    seen = await events_until(joiner, lambda e: e["type"] == "message")
    assert message_texts(seen, gid) == ["welcome"]
    assert await joiner.call("chats.join", link=link) == {"status": "member", "chat_id": gid}

    # Decline: the requester is told and stays outside; asking again is a new request.
    assert await owner.call("chats.decline", chat_id=gid, username=refused.username) == {}
    seen = await events_until(refused, lambda e: e["type"] == "join_decided")
    assert [(e["chat_id"], e["approved"]) for e in seen if e["type"] == "join_decided"] == [
        (gid, False)]
    assert [e["type"] for e in about(await all_events_since(refused, refused_start), gid)] == [
        "join_decided"]
    assert (await refused.error("messages.history", chat_id=gid)).code == 403
    assert chat_of(await refused.call("session.status"), gid) is None
    assert (await owner.error("chats.approve", chat_id=gid,
                              username=refused.username)).code == 404
    assert [e for e in await drain(member) if e["type"] == "chat"] == []
    assert (await refused.call("chats.join", link=link))["status"] == "pending"
    seen = await events_until(owner, lambda e: e["type"] == "join_request")
    assert [e["username"] for e in seen if e["type"] == "join_request"] == [refused.username]


async def test_owner_only_methods_refused(shared_server: ServerProcess,
                                          http: aiohttp.ClientSession) -> None:
    """invite/link/approve/decline: 403 to members; strangers learn no more than a link does."""
    owner, member, stranger, requester = await connect_users(http, shared_server, 4)
    gid = (await owner.call("chats.create", title="owner's business",
                            members=[member.username]))["chat"]["chat_id"]
    link = (await owner.call("chats.link", chat_id=gid))["link"]
    await requester.call("chats.join", link=link)

    for method in OWNER_ONLY:
        failure = await member.error(method, **owner_only_params(method, gid,
                                                                 requester.username))
        assert failure.code == 403, method
    codes: dict[str, set[int]] = {"stranger": set(), "requester": set(), "nochat": set()}
    for method in OWNER_ONLY:
        for who, user in (("stranger", stranger), ("requester", requester)):
            failure = await user.error(method, **owner_only_params(method, gid,
                                                                   requester.username))
            codes[who].add(failure.code)
            leaked = f"{failure.message} {failure.data}"
            assert owner.username not in leaked and member.username not in leaked, leaked
        failure = await stranger.error(method, **owner_only_params(
            method, "g_nosuchchat00", requester.username))
        codes["nochat"].add(failure.code)
    assert codes["nochat"] == {404}
    assert len(codes["stranger"]) == 1 and codes["stranger"] <= {403, 404}, codes
    assert codes["requester"] == codes["stranger"], codes
    history_code = (await stranger.error("messages.history", chat_id=gid)).code
    assert history_code in (403, 404)

    # None of the refused calls changed anything: same link, same members, request pending.
    assert (await stranger.call("chats.join", link=link))["status"] == "pending"
    view = chat_of(await owner.call("session.status"), gid)
    assert view is not None and view["members"] == [owner.username, member.username]
    assert view["owner"] == owner.username
    assert await owner.call("chats.approve", chat_id=gid, username=requester.username) == {}


async def test_leave_and_ownership(shared_server: ServerProcess,
                                   http: aiohttp.ClientSession) -> None:
    """Members are told who left; the owner's chat goes to the longest-standing member."""
    # `heir` registers after `later` but is added first: standing, not user id, decides.
    owner, later = await connect_users(http, shared_server, 2)
    heir, leaver, stranger = await connect_users(http, shared_server, 3)
    gid = (await owner.call("chats.create", title="succession",
                            members=[heir.username]))["chat"]["chat_id"]
    await owner.call("chats.invite", chat_id=gid, username=later.username)
    await owner.call("chats.invite", chat_id=gid, username=leaver.username)
    for user in (owner, heir, later, leaver):
        await drain(user)

    assert (await owner.error("chats.leave", chat_id="general")).code == 403
    assert (await stranger.error("chats.leave", chat_id=gid)).code in (403, 404)
    assert (await stranger.error("chats.leave", chat_id="g_nosuchchat00")).code == 404

    assert await leaver.call("chats.leave", chat_id=gid) == {}
    for user in (owner, heir, later, leaver):
        seen = await events_until(user, lambda e: e["type"] == "chat")
        assert chat_events(seen, gid) == [("left", leaver.username)]
    assert chat_of(await leaver.call("session.status"), gid) is None
    assert (await leaver.error("messages.history", chat_id=gid)).code == 403
    assert (await leaver.error("messages.send", chat_id=gid, text="hello?")).code == 403
    assert (await leaver.error("chats.leave", chat_id=gid)).code == 403
    await owner.call("messages.send", chat_id=gid, text="after you left")
    assert (await later.poll(later.cursor, timeout=0))["events"]

    assert await owner.call("chats.leave", chat_id=gid) == {}
    for user in (heir, later):
        seen = await events_until(user, lambda e: e["type"] == "chat")
        assert chat_events(seen, gid) == [("left", owner.username)]
    view = chat_of(await later.call("session.status"), gid)
    assert view is not None
    assert view["owner"] == heir.username
    assert view["members"] == [heir.username, later.username]
    assert "link" in await heir.call("chats.link", chat_id=gid)
    assert (await later.error("chats.link", chat_id=gid)).code == 403
    assert (await owner.error("chats.link", chat_id=gid)).code in (403, 404)
    assert (await owner.error("chats.invite", chat_id=gid,
                              username=owner.username)).code in (403, 404)
    # The new owner can bring the old one back, as a plain member.
    assert await heir.call("chats.invite", chat_id=gid, username=owner.username) == {}
    view = chat_of(await owner.call("session.status"), gid)
    assert view is not None and view["owner"] == heir.username
    assert view["members"] == [heir.username, later.username, owner.username]
    assert "after you left" not in message_texts(await drain(leaver))


async def test_last_member_leaving_closes_the_door(shared_server: ServerProcess,
                                                   http: aiohttp.ClientSession) -> None:
    """The sole owner leaves: pending requests are declined and the link stops working."""
    owner, requester, latecomer = await connect_users(http, shared_server, 3)
    gid = (await owner.call("chats.create", title="solo"))["chat"]["chat_id"]
    link = (await owner.call("chats.link", chat_id=gid))["link"]
    await requester.call("chats.join", link=link)
    assert await owner.call("chats.leave", chat_id=gid) == {}
    seen = await events_until(requester, lambda e: e["type"] == "join_decided")
    assert [(e["chat_id"], e["approved"]) for e in seen if e["type"] == "join_decided"] == [
        (gid, False)]
    assert (await latecomer.error("chats.join", link=link)).code == 404


async def test_join_by_link_with_parked_polls(shared_server: ServerProcess,
                                              http: aiohttp.ClientSession) -> None:
    """Three users with real parked long polls: each step wakes the right poll promptly."""
    owner, member, joiner = await connect_users(http, shared_server, 3)
    gid = (await owner.call("chats.create", title="live",
                            members=[member.username]))["chat"]["chat_id"]
    link = (await owner.call("chats.link", chat_id=gid))["link"]
    for user in (owner, member, joiner):
        await drain(user)

    async def parked(user: Api) -> tuple[float, list[Event]]:
        body = await user.poll(user.cursor, timeout=5)
        return time.monotonic(), body["events"]

    owner_poll = asyncio.create_task(parked(owner))
    await asyncio.sleep(0.3)  # the poll is parked by now
    assert not owner_poll.done()
    asked = time.monotonic()
    await joiner.call("chats.join", link=link)
    woke, events = await owner_poll
    assert woke - asked < 1.5
    assert [(e["type"], e["username"]) for e in events] == [("join_request", joiner.username)]

    joiner_poll = asyncio.create_task(parked(joiner))
    member_poll = asyncio.create_task(parked(member))
    await asyncio.sleep(0.3)
    assert not joiner_poll.done() and not member_poll.done()
    approved = time.monotonic()
    await owner.call("chats.approve", chat_id=gid, username=joiner.username)
    (joiner_woke, joiner_events), (member_woke, member_events) = await asyncio.gather(
        joiner_poll, member_poll)
    assert joiner_woke - approved < 1.5 and member_woke - approved < 1.5
    assert [(e["type"], e["chat_id"], e["approved"]) for e in joiner_events
            if e["type"] == "join_decided"] == [("join_decided", gid, True)]
    assert chat_events(member_events, gid) == [("joined", joiner.username)]

    await drain(joiner)
    joiner_poll = asyncio.create_task(parked(joiner))
    await asyncio.sleep(0.3)
    sent = time.monotonic()
    await member.call("messages.send", chat_id=gid, text="glad you made it")
    woke, events = await joiner_poll
    assert woke - sent < 1.5
    assert message_texts(events, gid) == ["glad you made it"]


async def test_non_member_never_sees_group_messages(shared_server: ServerProcess,
                                                    http: aiohttp.ClientSession) -> None:
    """Neither poll nor history nor sending works for someone outside the group."""
    owner, member, outsider = await connect_users(http, shared_server, 3)
    start = outsider.cursor
    assert start is not None
    gid = (await owner.call("chats.create", title="secret",
                            members=[member.username]))["chat"]["chat_id"]
    for n in range(3):
        await owner.call("messages.send", chat_id=gid, text=f"secret {n}")
        await member.call("messages.send", chat_id=gid, text=f"reply {n}")
    await owner.call("messages.send", chat_id="general", text="public")
    # A poll parked by the outsider is woken by the general message, never by the group's.
    seen = await events_until(outsider, lambda e: e["type"] == "message")
    assert message_texts(seen) == ["public"]
    assert about(await all_events_since(outsider, start), gid) == []
    assert (await outsider.error("messages.history", chat_id=gid)).code == 403
    assert (await outsider.error("messages.send", chat_id=gid, text="hi")).code == 403
    assert len((await member.call("messages.history", chat_id=gid))["messages"]) == 6


async def test_group_state_survives_restart(server_factory: ServerFactory,
                                            http: aiohttp.ClientSession) -> None:
    """Chats, owners, members, messages, live links and pending requests outlive a restart."""
    server = server_factory()
    owner, member, requester, late = await connect_users(http, server, 4)
    gid = (await owner.call("chats.create", title="durable",
                            members=[member.username]))["chat"]["chat_id"]
    link = (await owner.call("chats.link", chat_id=gid))["link"]
    await requester.call("chats.join", link=link)
    await member.call("messages.send", chat_id=gid, text="before restart")

    server.restart()

    view = chat_of(await member.call("session.status"), gid)
    assert view is not None
    assert view["owner"] == owner.username
    assert view["members"] == [owner.username, member.username] and view["title"] == "durable"
    history = await member.call("messages.history", chat_id=gid)
    assert [m["text"] for m in history["messages"]] == ["before restart"]
    assert await owner.call("chats.approve", chat_id=gid, username=requester.username) == {}
    assert await late.call("chats.join", link=link) == {"status": "pending", "chat_id": gid}
    assert (await member.error("chats.link", chat_id=gid)).code == 403
    seen = await events_until(requester, lambda e: e["type"] == "join_decided")
    assert [e["approved"] for e in seen if e["type"] == "join_decided"] == [True]
    assert chat_of(await requester.call("session.status"), gid) is not None


async def test_new_owner_inherits_pending_join_requests(shared_server: ServerProcess,
                                                        http: aiohttp.ClientSession) -> None:
    """Requests waiting when the owner leaves reach the heir, who can decide them."""
    owner, heir, requester = await connect_users(http, shared_server, 3)
    gid = (await owner.call("chats.create", title="handover",
                            members=[heir.username]))["chat"]["chat_id"]
    link = (await owner.call("chats.link", chat_id=gid))["link"]
    await drain(heir)
    assert (await requester.call("chats.join", link=link))["status"] == "pending"
    await owner.call("chats.leave", chat_id=gid)
    seen = await events_until(heir, lambda e: e["type"] == "join_request")
    assert [(e["chat_id"], e["username"]) for e in seen if e["type"] == "join_request"] == [
        (gid, requester.username)]
    assert await heir.call("chats.approve", chat_id=gid, username=requester.username) == {}
    view = chat_of(await requester.call("session.status"), gid)
    assert view is not None and requester.username in view["members"]
