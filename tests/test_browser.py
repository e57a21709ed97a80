"""The browser client at /, driven in a real Chromium through accessible names (PROTOCOL.md).

Playwright for Python drives Debian's /usr/bin/chromium (never `playwright install`). Without
Chromium the tests skip on a developer's machine and fail in CI (CI=true), where .ci/run
installs it.
"""
from __future__ import annotations

import asyncio
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import (Browser, ConsoleMessage, Error, FilePayload, Locator, Page,
                                  Request, async_playwright, expect)

from tests.support import Api, ServerProcess, share_niceness, unique_name

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PASSWORD = "correct horse battery"

expect.set_options(timeout=15_000)  # two cores shared by many test processes

# One Chromium for the whole module (its tabs reused from test to test, see `tabs`): all
# tests and the async fixtures here share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium; a missing one fails in CI instead of skipping."""
    if not os.path.exists(CHROMIUM):
        why = f"needs {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests {why}")
        pytest.skip(why)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        share_niceness()
        yield chromium
        await chromium.close()


class Person:
    """One browser tab of one person, collecting what would be a bug if it happened."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.foreign: list[str] = []

        def on_error(err: Error) -> None:
            self.page_errors.append(str(err))

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.console_errors.append(msg.text)

        def on_request(req: Request) -> None:
            if not req.url.startswith((base + "/", "blob:")):
                self.foreign.append(req.url)

        self.listeners = {"pageerror": on_error, "console": on_console, "request": on_request}
        for event, listener in self.listeners.items():
            page.on(event, listener)  # type: ignore[call-overload]

    def leave(self) -> None:
        """Stop watching the tab (it goes back to the pool for another test's person)."""
        for event, listener in self.listeners.items():
            self.page.remove_listener(event, listener)

    def assert_clean(self, console: bool = True) -> None:
        """No uncaught script error, no request to another origin (and no console error)."""
        assert self.page_errors == []
        assert self.foreign == []
        if console:
            assert self.console_errors == []

    async def sign_in(self, name: str, password: str = PASSWORD) -> None:
        """Fill the sign-in form; the general chat's log shows up."""
        await self.page.get_by_label("Username").fill(name)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_role("log")).to_be_visible()
        await expect(self.page.get_by_role("status")).to_have_text("Connected")

    async def say(self, text: str, enter: bool = False) -> None:
        """Type into the Message box and send (the Send button, or Enter)."""
        box = self.page.get_by_role("textbox", name="Message")
        await box.fill(text)
        if enter:
            await box.press("Enter")
        else:
            await self.page.get_by_role("button", name="Send").click()
        await expect(box).to_have_value("")

    def log(self) -> Locator:
        """The open chat's messages."""
        return self.page.get_by_role("log")

    def chat_button(self, title: str) -> Locator:
        """A chat in the chat list."""
        return self.page.get_by_role("navigation", name="Chats").get_by_role("button", name=title)

    def notice(self) -> Locator:
        """The alert line where errors and confirmations appear."""
        return self.page.locator("#notice")


OpenPerson = Callable[[ServerProcess], Awaitable[Person]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tabs() -> list[Page]:
    """Tabs free for the next test, each in a browser context of its own.

    A new context and tab cost Chromium ~1.8 s of CPU (a renderer process starts); a tab
    that goes to another test's server instead costs a page load. Each test's server has a
    port (an origin) of its own, so its sessionStorage starts empty all the same, and a
    returned tab's storage is cleared in case a later server gets the same port.
    """
    return []


@pytest_asyncio.fixture(loop_scope="module")
async def people(browser: Browser, tabs: list[Page]) -> AsyncIterator[OpenPerson]:
    """Open the client of a server in a tab of its own browser context (own sessionStorage)."""
    opened: list[Person] = []

    async def open_person(server: ServerProcess) -> Person:
        if tabs:
            page = tabs.pop()
        else:
            context = await browser.new_context(viewport={"width": 1200, "height": 800})
            page = await context.new_page()
        person = Person(page, server.url)
        opened.append(person)
        await page.goto(server.url + "/")
        return person
    yield open_person
    for person in opened:
        person.leave()
        try:
            await person.page.evaluate("sessionStorage.clear(); localStorage.clear()")
            await person.page.goto("about:blank")  # its polls and timers end with the page
        except Error:  # a tab left odd (closed, crashed): not reused
            await person.page.context.close()
        else:
            tabs.append(person.page)


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session on the module's loop (tests restart servers: no keep-alive)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def test_page_headers_and_static_files(server: ServerProcess,
                                             http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "/") as r:
        assert r.status == 200
        assert r.headers["Content-Security-Policy"] == "default-src 'self'"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.content_type == "text/html"
        page = await r.text()
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        async with http.get(server.url + path) as r:
            assert r.status == 200, path
            assert r.headers["Content-Security-Policy"] == "default-src 'self'"
            etag = r.headers["ETag"]
        async with http.get(server.url + path, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
    assert "<script>" not in page and "style=" not in page  # nothing inline for the CSP to block
    async with http.get(server.url + "/static/js/app.js") as r:
        assert r.content_type == "text/javascript"
    for missing in ("/static/nope.js", "/static/../app.py"):
        async with http.get(server.url + missing) as r:
            assert r.status == 404


async def test_two_browsers_chat_live(server: ServerProcess, people: OpenPerson,
                                      http: aiohttp.ClientSession) -> None:
    alice: Person = await people(server)
    bob: Person = await people(server)
    a_name, b_name = unique_name("ann"), unique_name("bo")
    await alice.sign_in(a_name)
    await bob.sign_in(b_name)

    await alice.say("hello from the browser", enter=True)
    await expect(bob.log()).to_contain_text("hello from the browser")  # live
    await bob.say("hi back")
    await expect(alice.log()).to_contain_text("hi back")

    attack = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
    await alice.say(attack)
    await expect(bob.log()).to_contain_text(attack)  # shown as the text it is
    assert await bob.log().locator("img, b").count() == 0
    assert await bob.page.evaluate("window.__pwned") is None

    # A reload keeps the session (sessionStorage) and shows the history again.
    await bob.page.reload()
    await expect(bob.log()).to_contain_text("hi back")

    # Sign out ends the session on the server, not just in the page.
    token = await alice.page.evaluate("sessionStorage.getItem('token')")
    await alice.page.get_by_role("button", name="Sign out").click()
    await expect(alice.page.get_by_label("Username")).to_be_visible()
    assert await alice.page.evaluate("sessionStorage.getItem('token')") is None
    failure = await Api(http, server.url, token).error("session.status")
    assert failure.code == 401
    alice.assert_clean()
    bob.assert_clean()


async def test_wrong_password_is_said_plainly(server: ServerProcess,
                                              people: OpenPerson,
                                              http: aiohttp.ClientSession) -> None:
    name = unique_name("pw")
    await Api(http, server.url).connect(name, PASSWORD)
    person: Person = await people(server)
    await person.page.get_by_label("Username").fill(name)
    await person.page.get_by_label("Password").fill("not the password")
    await person.page.get_by_role("button", name="Sign in").click()
    await expect(person.page.get_by_role("alert").first).to_have_text(
        "Wrong password for this username.")
    person.assert_clean(console=False)


async def test_direct_chat_with_an_api_user(server: ServerProcess, people: OpenPerson,
                                            http: aiohttp.ClientSession) -> None:
    person: Person = await people(server)
    me = unique_name("web")
    await person.sign_in(me)
    api = Api(http, server.url)
    await api.connect(unique_name("api"))

    await api.call("messages.send", to=me, text="psst, a direct message")
    chat = person.chat_button(api.username)
    await expect(chat).to_have_accessible_name(re.compile(r"1 unread"))  # appeared live
    await chat.click()
    await expect(person.log()).to_contain_text("psst, a direct message")
    await expect(person.page.get_by_role("heading", name=api.username)).to_be_visible()
    await person.say("got it")
    status = await api.call("session.status")
    direct = next(c for c in status["chats"] if c["kind"] == "direct")
    assert [m["text"] for m in await api.all_messages(direct["chat_id"])] == [
        "psst, a direct message", "got it"]

    # "New chat with" starts a direct chat the other person has never written in.
    other = Api(http, server.url)
    await other.connect(unique_name("new"))
    await person.page.get_by_label("New chat with").fill(other.username)
    await person.page.get_by_role("button", name="Start chat").click()
    await person.say("first words")
    await expect(person.chat_button(other.username)).to_be_visible()
    events = await other.poll(timeout=5)
    assert [e["message"]["text"] for e in events["events"] if e["type"] == "message"
            and e["message"]["chat_id"] != "general"] == ["first words"]

    # Block the API user from the direct chat's header, then unblock.
    await person.chat_button(api.username).click()
    await person.page.get_by_role("button", name="Block", exact=True).click()
    await expect(person.page.get_by_role("button", name="Unblock")).to_be_visible()
    refused = await api.error("messages.send", to=me, text="let me in")
    assert refused.code == 403 and refused.data["reason"] == "blocked"
    await person.page.get_by_role("button", name="Unblock").click()
    await expect(person.page.get_by_role("button", name="Block", exact=True)).to_be_visible()
    await api.call("messages.send", to=me, text="thanks")
    await expect(person.log()).to_contain_text("thanks")
    person.assert_clean()


async def test_group_joined_by_link_with_approval(server: ServerProcess,
                                                  people: OpenPerson) -> None:
    owner: Person = await people(server)
    joiner: Person = await people(server)
    await owner.sign_in(unique_name("own"))
    joiner_name = unique_name("join")
    await joiner.sign_in(joiner_name)

    await owner.page.get_by_label("New group").fill("Hiking club")
    await owner.page.get_by_role("button", name="Create group").click()
    await expect(owner.chat_button("Hiking club")).to_have_attribute("aria-current", "true")
    await owner.page.get_by_role("button", name="Make join link").click()
    share = owner.page.get_by_label("Share this link")
    await expect(share).to_have_value(re.compile(r"^http://.+/#join=."))
    link = await share.input_value()

    await joiner.page.get_by_label("Join link").fill(link)
    await joiner.page.get_by_role("button", name="Join", exact=True).click()
    await expect(joiner.notice()).to_contain_text("Request sent")

    request = owner.page.locator("#request-list li").filter(has_text=joiner_name)
    await request.get_by_role("button", name="Approve").click()
    await expect(request).to_have_count(0)

    await joiner.chat_button("Hiking club").click()
    await joiner.say("thanks for having me")
    await expect(owner.log()).to_contain_text("thanks for having me")
    await expect(owner.page.locator("#chat-members")).to_contain_text(joiner_name)
    owner.assert_clean()
    joiner.assert_clean()


async def test_upload_with_progress_and_download(server: ServerProcess,
                                                 people: OpenPerson,
                                                 tmp_path: Path) -> None:
    sender: Person = await people(server)
    reader: Person = await people(server)
    await sender.sign_in(unique_name("up"))
    await reader.sign_in(unique_name("down"))
    content = os.urandom(300_000)

    # Record what the progress bar showed (an upload on loopback is over in a blink).
    await sender.page.evaluate("""() => {
        const bar = document.getElementById('upload-progress');
        window.__progress = [];
        new MutationObserver(() => window.__progress.push([bar.hidden, bar.value]))
            .observe(bar, {attributes: true});
    }""")
    await sender.page.get_by_label("Attach file").set_input_files(
        files=FilePayload(name="notes.bin", mimeType="application/octet-stream", buffer=content))
    await expect(sender.page.get_by_role("button", name="Remove notes.bin")).to_be_visible()
    progress = await sender.page.evaluate("window.__progress")
    assert [False, 100] in progress and progress[-1][0] is True  # shown, full, then hidden
    await sender.say("the file you asked for")

    download_button = reader.log().get_by_role(
        "button", name="Download notes.bin")
    await expect(download_button).to_be_visible()
    async with reader.page.expect_download() as info:
        await download_button.click()
    download = await info.value
    assert download.suggested_filename == "notes.bin"
    saved = tmp_path / "got.bin"
    await download.save_as(saved)
    assert saved.read_bytes() == content
    sender.assert_clean()
    reader.assert_clean()


async def test_reconnect_after_server_restart_catches_up(
        server_factory: Callable[..., ServerProcess], people: OpenPerson,
        http: aiohttp.ClientSession) -> None:
    server = server_factory()
    person: Person = await people(server)
    await person.sign_in(unique_name("rc"))
    api = Api(http, server.url)
    await api.connect(unique_name("talk"))

    await asyncio.to_thread(server.stop)
    await expect(person.page.get_by_role("status")).to_contain_text("Reconnecting")
    await asyncio.to_thread(server.start)  # same port, same data directory
    await api.call("messages.send", chat_id="general", text="sent while you were away")
    await expect(person.log()).to_contain_text("sent while you were away")
    await expect(person.page.get_by_role("status")).to_have_text("Connected")
    await person.say("and I am back")
    history = await api.call("messages.history", chat_id="general")
    assert [m["text"] for m in history["messages"]][-2:] == [
        "sent while you were away", "and I am back"]
    person.assert_clean(console=False)  # refused connections are console noise, not bugs


async def test_comments_schedules_reports_and_limits(
        server_factory: Callable[..., ServerProcess], people: OpenPerson) -> None:
    # A quota window of ~3 years: a window boundary never falls inside the test.
    server = server_factory("--rate-limit", "3", "--rate-period", "100000000",
                            "--ban-threshold", "1",
                            "--report-min-age", "0")
    ann: Person = await people(server)
    ben: Person = await people(server)
    ben_name = unique_name("ben")
    await ann.sign_in(unique_name("ann"))
    await ben.sign_in(ben_name)

    # A comment on a message shows what it answers.
    await ben.say("the original")
    original = ann.log().get_by_role("article").filter(
        has_text="the original")
    await original.get_by_role("button", name="Reply").click()
    await ann.say("a comment on it")
    comment = ben.log().get_by_role("article").filter(
        has_text="a comment on it")
    await expect(comment).to_contain_text(f"reply to {ben_name}")

    # A scheduled message is listed until cancelled.
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    await ann.page.get_by_role("textbox", name="Message").fill("see you tomorrow")
    await ann.page.get_by_label("Deliver at").fill(tomorrow)
    await ann.page.get_by_role("button", name="Schedule", exact=True).click()
    scheduled = ann.page.get_by_role("region", name="Scheduled")
    await expect(scheduled).to_contain_text("see you tomorrow")
    await scheduled.get_by_role("button", name="Cancel").click()
    await expect(scheduled).to_contain_text("Nothing scheduled.")

    # Over the general chat's quota (3: the comment and two more): when it will work again.
    # Each send is awaited (the box clears) before the next: a click while a send is in
    # flight is ignored by the page, and would not count.
    for _ in range(2):
        await ann.say("chatty")
    await ann.page.get_by_role("textbox", name="Message").fill("one too many")
    await ann.page.get_by_role("button", name="Send").click()
    await expect(ann.notice()).to_contain_text(re.compile(r"try again at (\w{3} \d+, )?\d"))
    await expect(ann.page.get_by_role("textbox", name="Message")).to_have_value("one too many")

    # A report (threshold 1) bans the reported user, who is told until when.
    await ann.log().get_by_role("article").filter(
        has_text="the original").get_by_role("button", name="Report").click()
    await ann.page.get_by_label("Reason").fill("spam")
    await ann.page.get_by_role("button", name="Report user").click()
    await expect(ann.notice()).to_contain_text("banned from sending until")
    await expect(ben.notice()).to_contain_text("You are banned from sending until")
    await ben.page.get_by_role("textbox", name="Message").fill("can I still talk?")
    await ben.page.get_by_role("button", name="Send").click()
    await expect(ben.notice()).to_contain_text("You are banned from sending until")
    ann.assert_clean()
    ben.assert_clean()


async def test_edit_delete_search_and_read_receipts(server: ServerProcess,
                                                    people: OpenPerson) -> None:
    ann: Person = await people(server)
    ben: Person = await people(server)
    ann_name, ben_name = unique_name("ann"), unique_name("ben")
    await ann.sign_in(ann_name)
    await ben.sign_in(ben_name)

    await ann.page.get_by_label("New chat with").fill(ben_name)
    await ann.page.get_by_role("button", name="Start chat").click()
    await ann.say("banana bread recipe")
    await ann.say("oops, wrong chat")

    # Ben opens the chat: Ann gets a read receipt.
    await ben.chat_button(ann_name).click()
    await expect(ben.log()).to_contain_text("oops, wrong chat")
    mine = ann.log().get_by_role("article")
    await expect(mine.filter(has_text="oops, wrong chat")).to_contain_text("Seen")

    # Ann edits one message and deletes the other; Ben sees both live.
    await mine.filter(has_text="banana bread").get_by_role("button", name="Edit").click()
    await ann.say("banana cake recipe")
    edited = ben.log().get_by_role("article").filter(has_text="banana cake recipe")
    await expect(edited).to_contain_text("edited")
    await mine.filter(has_text="oops").get_by_role("button", name="Delete").click()
    await expect(ben.log()).not_to_contain_text("oops, wrong chat")

    # Search finds whole words in Ben's chats, and opens the chat it is in.
    await ben.chat_button("General").click()
    await ben.page.get_by_role("searchbox", name="Search").fill("banana")
    await ben.page.get_by_role("button", name="Find").click()
    found = ben.page.get_by_role("region", name="Found")
    await found.get_by_role("button", name=re.compile("banana cake recipe")).click()
    await expect(ben.page.get_by_role("heading", name=ann_name)).to_be_visible()
    ann.assert_clean()
    ben.assert_clean()


async def test_backlog_keeps_order_and_older_pages_load(
        server_factory: Callable[..., ServerProcess], people: OpenPerson,
        http: aiohttp.ClientSession) -> None:
    server = server_factory("--rate-limit", "100")
    me = unique_name("late")
    await Api(http, server.url).connect(me, PASSWORD)  # registered, then away for a while
    talker = Api(http, server.url)
    await talker.connect(unique_name("talk"))
    for i in range(60):
        await talker.call("messages.send", chat_id="general", text=f"m{i:02d}")

    person = await people(server)
    await person.sign_in(me)  # 60 unacknowledged events; the log shows the newest 50
    await talker.call("messages.send", chat_id="general", text="live one")
    articles = person.log().get_by_role("article")
    await expect(articles.last).to_contain_text("live one")
    await expect(articles).to_have_count(51)
    await expect(articles.first).to_contain_text("m10")
    await person.page.get_by_role("button", name="Show older").click()
    await expect(articles).to_have_count(61)
    await expect(articles.first).to_contain_text("m00")
    await expect(person.page.get_by_role("button", name="Show older")).to_be_hidden()
    person.assert_clean()
