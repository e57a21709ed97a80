"""Authorization matrix: every method as owner, member, stranger, banned and logged-out users."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
import pytest_asyncio

import schemas
from tests.support import Api, RpcFailure, ServerProcess, running_server, unique_name

ROLES = ("owner", "member", "stranger", "banned", "anon", "revoked")
OK = 0
BANNED = -403  # 403 with data.reason == "banned"
BLOCKED = -4030  # 403 with data.reason == "blocked"


@dataclass
class World:
    """A group chat (owner, member, banned member), a stranger, and clients for each role."""

    http: aiohttp.ClientSession
    url: str
    apis: dict[str, Api]
    group: str
    general_msg: str
    group_msg: str
    fresh: list[str] = field(default_factory=list)

    async def new_user(self) -> Api:
        """A freshly registered, logged-in user."""
        a = Api(self.http, self.url)
        await a.connect(unique_name("az"))
        return a

    def name(self, role: str) -> str:
        """The username behind a role."""
        return self.apis[role].username


@pytest.fixture(scope="module")
def authz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One report bans; one server for the whole matrix."""
    with running_server(
            tmp_path_factory.mktemp("authz") / "data", "--ban-threshold", "1",
            "--rate-limit", "1000", "--report-min-age", "0") as proc:
        yield proc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(authz_server: ServerProcess) -> AsyncIterator[World]:
    """The roles: owner and member of a group, a banned member, a stranger, no token."""
    url = authz_server.url
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    apis = {role: Api(http, url) for role in ROLES}
    for role in ("owner", "member", "stranger", "banned", "revoked"):
        await apis[role].connect(unique_name(role[:3]))
    group = (await apis["owner"].call("chats.create", title="authz", members=[
        apis["member"].username, apis["banned"].username]))["chat"]["chat_id"]
    group_msg = (await apis["owner"].call("messages.send", chat_id=group, text="in group"))
    general_msg = (await apis["stranger"].call("messages.send", chat_id="general", text="hi"))
    report = await apis["stranger"].call("users.report", username=apis["banned"].username)
    assert report["banned_until"] is not None
    await apis["revoked"].call("session.disconnect")
    yield World(http, url, apis, group, general_msg["message"]["message_id"],
                group_msg["message"]["message_id"])
    await http.close()


def soon() -> str:
    """An RFC 3339 time an hour ahead."""
    return datetime.fromtimestamp(time.time() + 3600, timezone.utc).isoformat()


Params = Callable[[World, str], Awaitable[dict[str, Any]]]
Check = Callable[[World, str, bool], Awaitable[None]]


@dataclass
class Case:
    """One row: a method, how to build its params for a role, what each role gets."""

    label: str
    method: str
    params: Params
    expect: dict[str, int]
    after: Check | None = None


def fixed(**params: Any) -> Params:
    """The same params for every role."""
    async def build(w: World, role: str) -> dict[str, Any]:
        return dict(params)
    return build


def with_group(**extra: Any) -> Params:
    """`chat_id` = the group, plus fixed params."""
    async def build(w: World, role: str) -> dict[str, Any]:
        return {"chat_id": w.group, **extra}
    return build


def expect(owner: int, member: int, stranger: int, banned: int,
           anon: int = 401) -> dict[str, int]:
    """Expected outcome per role (revoked tokens fare like no token)."""
    return {"owner": owner, "member": member, "stranger": stranger, "banned": banned,
            "anon": anon, "revoked": anon}


async def fresh_user_name(w: World, role: str) -> dict[str, Any]:
    user = await w.new_user()
    w.fresh.append(user.username)
    return {"chat_id": w.group, "username": user.username}


async def live_link(w: World, role: str) -> dict[str, Any]:
    """The group's current link (chats.link rows replace it)."""
    return {"link": (await w.apis["owner"].call("chats.link", chat_id=w.group))["link"]}


async def requester(w: World, role: str) -> dict[str, Any]:
    user = await w.new_user()
    assert (await user.call("chats.join", **await live_link(w, role)))["status"] == "pending"
    w.fresh.append(user.username)
    return {"chat_id": w.group, "username": user.username}


async def members_of_group(w: World) -> list[str]:
    status = await w.apis["owner"].call("session.status")
    [chat] = [c for c in status["chats"] if c["chat_id"] == w.group]
    members: list[str] = chat["members"]
    return members


async def invited_iff_ok(w: World, role: str, ok: bool) -> None:
    assert (w.fresh[-1] in await members_of_group(w)) == ok


async def approved_iff_ok(w: World, role: str, ok: bool) -> None:
    assert (w.fresh[-1] in await members_of_group(w)) == ok
    if not ok:  # the request is still there for the owner to decide
        await w.apis["owner"].call("chats.decline", chat_id=w.group, username=w.fresh[-1])


async def declined_iff_ok(w: World, role: str, ok: bool) -> None:
    assert w.fresh[-1] not in await members_of_group(w)
    outcome = await _outcome(w.apis["owner"], "chats.decline",
                             {"chat_id": w.group, "username": w.fresh[-1]})
    assert outcome == (404 if ok else OK)  # a decided request is gone; a refused one is not


async def owners_schedule(w: World, role: str) -> dict[str, Any]:
    entry = await w.apis["owner"].call("messages.send", chat_id=w.group, text="later",
                                       send_at=soon())
    w.fresh.append(entry["scheduled"]["scheduled_id"])
    return {"scheduled_id": entry["scheduled"]["scheduled_id"]}


async def cancelled_iff_ok(w: World, role: str, ok: bool) -> None:
    pending = await w.apis["owner"].call("messages.scheduled")
    assert (w.fresh[-1] not in [s["scheduled_id"] for s in pending["scheduled"]]) == ok


async def reportee(w: World, role: str) -> dict[str, Any]:
    user = await w.new_user()
    w.fresh.append(user.username)
    return {"username": user.username, "reason": "spam"}


async def own_group(w: World, role: str) -> dict[str, Any]:
    chat = await w.apis["owner"].call("chats.create", title="leavable", members=[
        w.name("member"), w.name("banned")])
    w.fresh.append(chat["chat"]["chat_id"])
    return {"chat_id": chat["chat"]["chat_id"]}


async def left_iff_ok(w: World, role: str, ok: bool) -> None:
    if role in ("anon", "revoked"):
        return
    status = await w.apis[role].call("session.status")
    still_member = w.fresh[-1] in [c["chat_id"] for c in status["chats"]]
    assert still_member == (not ok and role != "stranger")


async def own_credentials(w: World, role: str) -> dict[str, Any]:
    if role in ("anon", "revoked"):
        return {"username": unique_name("anon"), "password": "pw"}
    return {"username": w.name(role), "password": "secret pw"}


async def self_name(w: World, role: str) -> dict[str, Any]:
    return {"username": w.name(role) if w.name(role) else "nobody_here"}


async def comment_on_group(w: World, role: str) -> dict[str, Any]:
    return {"chat_id": w.group, "text": "re", "comment_to": w.group_msg}


async def direct_to_owner(w: World, role: str) -> dict[str, Any]:
    return {"to": w.name("owner" if role != "owner" else "member"), "text": "psst"}


async def blocked_by_fresh_user(w: World, role: str) -> Api | None:
    """A new user who blocks the role's user (None for roles without a user)."""
    user = await w.new_user()
    w.fresh.append(user.username)
    if w.name(role):
        await user.call("users.block", username=w.name(role))
    return user


async def direct_to_blocker(w: World, role: str) -> dict[str, Any]:
    user = await blocked_by_fresh_user(w, role)
    assert user is not None
    return {"to": user.username, "text": "let me in"}


async def invite_blocker(w: World, role: str) -> dict[str, Any]:
    """Invite, as this role, a user who blocks the owner (and this role)."""
    user = await blocked_by_fresh_user(w, role)
    assert user is not None
    await user.call("users.block", username=w.name("owner"))
    return {"chat_id": w.group, "username": user.username}


async def create_with_fresh(w: World, role: str) -> dict[str, Any]:
    user = await w.new_user()
    return {"title": "with members", "members": [user.username]}


async def fresh_name(w: World, role: str) -> dict[str, Any]:
    user = await w.new_user()
    return {"username": user.username}


async def history_before(w: World, role: str) -> dict[str, Any]:
    return {"chat_id": w.group, "before": w.group_msg}


async def own_message(w: World, role: str) -> dict[str, Any]:
    """A fresh message of the role's own (the group's for members, else general); the
    banned member cannot send, so gets one of the owner's group messages."""
    if role in ("owner", "member"):
        sent = await w.apis[role].call("messages.send", chat_id=w.group, text="mine")
    elif role == "stranger":
        sent = await w.apis[role].call("messages.send", chat_id="general", text="mine")
    elif role == "banned":
        sent = await w.apis["owner"].call("messages.send", chat_id=w.group, text="owner's")
    else:
        return {"message_id": w.general_msg}
    w.fresh.append(sent["message"]["message_id"])
    return {"message_id": sent["message"]["message_id"]}


async def own_message_text(w: World, role: str) -> dict[str, Any]:
    return {**await own_message(w, role), "text": "fixed"}


async def members_message(w: World, role: str) -> dict[str, Any]:
    sent = await w.apis["member"].call("messages.send", chat_id=w.group, text="member's")
    w.fresh.append(sent["message"]["message_id"])
    return {"message_id": sent["message"]["message_id"]}


async def strangers_general_message(w: World, role: str) -> dict[str, Any]:
    sent = await w.apis["stranger"].call("messages.send", chat_id="general", text="hi all")
    w.fresh.append(sent["message"]["message_id"])
    return {"message_id": sent["message"]["message_id"]}


async def gone_iff_ok(w: World, role: str, ok: bool) -> None:
    if role in ("anon", "revoked"):
        return
    found = [m for chat in (w.group, "general") for m in await w.apis["owner"].all_messages(chat)
             if m["message_id"] == w.fresh[-1]]
    assert bool(found) == (not ok)


async def group_message_text(w: World, role: str) -> dict[str, Any]:
    return {"message_id": w.group_msg, "text": "in group, edited"}


async def fresh_retry_key(w: World, role: str) -> dict[str, Any]:
    return {"chat_id": "general", "text": "retry", "client_msg_id": unique_name("k")}


ESSENTIALS = [
    Case("send-retry-key", "messages.send", fresh_retry_key, expect(OK, OK, OK, BANNED)),
    Case("edit-own", "messages.edit", own_message_text, expect(OK, OK, OK, 403)),
    Case("edit-owners", "messages.edit", group_message_text, expect(OK, 403, 404, 403)),
    Case("edit-nothing", "messages.edit", fixed(message_id="m_nonexistent", text="x"),
         expect(404, 404, 404, 404)),
    Case("delete-own", "messages.delete", own_message, expect(OK, OK, OK, 403), gone_iff_ok),
    Case("delete-members", "messages.delete", members_message, expect(OK, OK, 404, 403),
         gone_iff_ok),
    Case("delete-general", "messages.delete", strangers_general_message,
         expect(403, 403, OK, 403), gone_iff_ok),
    Case("delete-nothing", "messages.delete", fixed(message_id="m_nonexistent"),
         expect(404, 404, 404, 404)),
    Case("search", "messages.search", fixed(query="group"), expect(OK, OK, OK, OK)),
    Case("search-group", "messages.search", with_group(query="group"),
         expect(OK, OK, 403, OK)),
    Case("search-nowhere", "messages.search", fixed(chat_id="g_nonexistent", query="x"),
         expect(404, 404, 404, 404)),
    Case("read-group", "chats.read", with_group(), expect(OK, OK, 403, OK)),
    Case("read-general", "chats.read", fixed(chat_id="general"), expect(OK, OK, OK, OK)),
    Case("read-nowhere", "chats.read", fixed(chat_id="g_nonexistent"),
         expect(404, 404, 404, 404)),
    Case("read-no-message", "chats.read", with_group(message_id="m_nonexistent"),
         expect(404, 404, 403, 404)),
]

CASES = [
    Case("connect", "session.connect", own_credentials, expect(OK, OK, OK, OK, anon=OK)),
    Case("status", "session.status", fixed(), expect(OK, OK, OK, OK)),
    Case("disconnect", "session.disconnect", fixed(), expect(OK, OK, OK, OK)),
    Case("discover", "rpc.discover", fixed(), expect(OK, OK, OK, OK, anon=OK)),
    Case("send-group", "messages.send", with_group(text="hello"),
         expect(OK, OK, 403, BANNED)),
    Case("send-general", "messages.send", fixed(chat_id="general", text="hello"),
         expect(OK, OK, OK, BANNED)),
    Case("send-direct", "messages.send", direct_to_owner, expect(OK, OK, OK, BANNED)),
    Case("send-comment", "messages.send", comment_on_group, expect(OK, OK, 403, BANNED)),
    Case("send-nowhere", "messages.send", fixed(chat_id="g_nonexistent", text="x"),
         expect(404, 404, 404, BANNED)),
    Case("schedule-group", "messages.send", with_group(text="later", send_at=soon()),
         expect(OK, OK, 403, BANNED)),
    Case("history-group", "messages.history", with_group(), expect(OK, OK, 403, OK)),
    Case("history-before", "messages.history", history_before, expect(OK, OK, 403, OK)),
    Case("history-general", "messages.history", fixed(chat_id="general"),
         expect(OK, OK, OK, OK)),
    Case("history-nowhere", "messages.history", fixed(chat_id="g_nonexistent"),
         expect(404, 404, 404, 404)),
    Case("scheduled", "messages.scheduled", fixed(), expect(OK, OK, OK, OK)),
    Case("cancel-owners", "messages.cancel", owners_schedule, expect(OK, 404, 404, 404),
         cancelled_iff_ok),
    Case("report", "users.report", reportee, expect(OK, OK, OK, OK)),
    Case("report-self", "users.report", self_name, expect(409, 409, 409, 409)),
    Case("report-nobody", "users.report", fixed(username="nobody_here"),
         expect(404, 404, 404, 404)),
    Case("create", "chats.create", fixed(title="mine"), expect(OK, OK, OK, OK)),
    Case("create-members", "chats.create", create_with_fresh, expect(OK, OK, OK, BANNED)),
    Case("invite-blocker", "chats.invite", invite_blocker, expect(BLOCKED, 403, 403, 403),
         lambda w, role, ok: invited_iff_ok(w, role, False)),
    Case("send-direct-blocked", "messages.send", direct_to_blocker,
         expect(BLOCKED, BLOCKED, BLOCKED, BANNED)),
    Case("block", "users.block", fresh_name, expect(OK, OK, OK, OK)),
    Case("block-self", "users.block", self_name, expect(-32602, -32602, -32602, -32602)),
    Case("block-nobody", "users.block", fixed(username="nobody_here"),
         expect(404, 404, 404, 404)),
    Case("unblock", "users.unblock", fresh_name, expect(OK, OK, OK, OK)),
    Case("unblock-self", "users.unblock", self_name, expect(-32602, -32602, -32602, -32602)),
    Case("blocked", "users.blocked", fixed(), expect(OK, OK, OK, OK)),
    Case("poll", "events.poll", fixed(timeout=0), expect(OK, OK, OK, OK)),
    Case("poll-beyond", "events.poll", fixed(cursor=2 ** 62, timeout=0),
         expect(-32602, -32602, -32602, -32602)),
    Case("invite", "chats.invite", fresh_user_name, expect(OK, 403, 403, 403), invited_iff_ok),
    Case("invite-general", "chats.invite", fixed(chat_id="general", username="nobody_here"),
         expect(403, 403, 403, 403)),
    Case("invite-nowhere", "chats.invite", fixed(chat_id="g_nonexistent", username="abc"),
         expect(404, 404, 404, 404)),
    Case("link", "chats.link", with_group(), expect(OK, 403, 403, 403)),
    Case("join", "chats.join", live_link, expect(OK, OK, OK, OK)),
    Case("join-bad-link", "chats.join", fixed(link="not-a-link"), expect(404, 404, 404, 404)),
    Case("approve", "chats.approve", requester, expect(OK, 403, 403, 403), approved_iff_ok),
    Case("decline", "chats.decline", requester, expect(OK, 403, 403, 403), declined_iff_ok),
    Case("approve-no-request", "chats.approve", with_group(username="nobody_here"),
         expect(404, 403, 403, 403)),
    Case("leave", "chats.leave", own_group, expect(OK, OK, 403, OK), left_iff_ok),
    Case("leave-general", "chats.leave", fixed(chat_id="general"),
         expect(403, 403, 403, 403)),
    Case("leave-nowhere", "chats.leave", fixed(chat_id="g_nonexistent"),
         expect(404, 404, 404, 404)),
    *ESSENTIALS,
]


async def _outcome(api: Api, method: str, params: dict[str, Any]) -> int:
    """OK, or the error code (BANNED for a 403 because of a ban)."""
    try:
        await api.call(method, **params)
    except RpcFailure as failure:
        if failure.code == 403 and (failure.data or {}).get("reason") == "banned":
            assert failure.data["until"], failure.data
            return BANNED
        if failure.code == 403 and (failure.data or {}).get("reason") == "blocked":
            return BLOCKED
        return failure.code
    return OK


def test_every_method_is_in_the_matrix() -> None:
    assert {c.method for c in CASES} == set(schemas.method_schemas())


# One world for the whole matrix (every row leaves the roles as they were), hence one loop.
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_authorization_matrix(world: World, case: Case) -> None:
    for role in ROLES:
        api = world.apis[role]
        if case.method == "session.disconnect" and role not in ("anon", "revoked"):
            api = Api(world.http, world.url)  # a second session, so the role keeps its own
            await api.connect(world.name(role))
        params = await case.params(world, role)
        outcome = await _outcome(api, case.method, params)
        assert outcome == case.expect[role], (case.label, role, outcome)
        if case.after is not None:
            await case.after(world, role, outcome == OK)
        if case.method == "session.disconnect" and outcome == OK:
            assert await _outcome(api, "session.status", {}) == 401
