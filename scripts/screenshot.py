"""Drive the browser client with a few users; save docs/screenshot.png (scripts/screenshot)."""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import Api, ServerProcess  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PASSWORD = "correct horse battery"


async def upload(api: Api, name: str, content: bytes, content_type: str) -> str:
    """POST /files; the new file id."""
    async with api.http.post(f"{api.url}/files", params={"name": name}, data=content,
                             headers={**api.headers(), "Content-Type": content_type}) as r:
        r.raise_for_status()
        file_id: str = (await r.json())["file_id"]
        return file_id


async def scene(url: str, out: Path) -> None:
    """Three people talking, a fourth asking to join, photographed from alice's browser."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        bob, carol, dave = Api(http, url), Api(http, url), Api(http, url)
        for api, name in ((bob, "bob"), (carol, "carol"), (dave, "dave")):
            await api.connect(name, PASSWORD)
        await bob.call("messages.send", chat_id="general",
                       text="Morning all! Coffee machine on floor 2 is fixed.")
        await carol.call("messages.send", chat_id="general", text="Finally. Thanks, Bob!")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(url + "/")
            await page.get_by_label("Username").fill("alice")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.get_by_role("status")).to_have_text("Connected")

            await page.get_by_label("New group").fill("Weekend hike")
            await page.get_by_role("button", name="Create group").click()
            for name in ("bob", "carol"):
                await page.get_by_label("Invite").fill(name)
                await page.get_by_role("button", name="Add to group").click()
                await expect(page.locator("#chat-members")).to_contain_text(name)
            status = await bob.call("session.status")
            chat_id = next(c["chat_id"] for c in status["chats"] if c["kind"] == "group")

            await page.get_by_role("textbox", name="Message").fill(
                "Who is in for the ridge trail on Saturday? Start 8:00 at the station.")
            await page.get_by_role("button", name="Send").click()
            sent = await bob.call("messages.send", chat_id=chat_id,
                                  text="In! I will bring the map and snacks.")
            gpx = await upload(bob, "ridge-trail.gpx", b"<gpx/>" * 2000,
                               "application/gpx+xml")
            await bob.call("messages.send", chat_id=chat_id, attachments=[gpx],
                           text="Here is the route, 14 km.")
            await carol.call("messages.send", chat_id=chat_id, comment_to=sent["message"]
                             ["message_id"], text="Bring the good chocolate please")
            await carol.call("messages.send", to="alice", text="Can I borrow your poles?")
            await carol.call("messages.send", to="alice", text="Mine broke last time")
            await bob.call("messages.send", chat_id="general", text="Lunch at 12:30?")

            await page.get_by_role("button", name="Make join link").click()
            share = page.get_by_label("Share this link")
            await expect(share).to_have_value(re.compile("#join=."))
            link = await share.input_value()
            await dave.call("chats.join", link=link.rpartition("#join=")[2])
            await expect(page.get_by_role("button", name="Approve")).to_be_visible()

            later = (datetime.now(timezone.utc) + timedelta(days=1)).replace(
                hour=6, minute=30, second=0, microsecond=0)
            await page.get_by_role("textbox", name="Message").fill("Leaving in 30 minutes!")
            await page.get_by_label("Deliver at").fill(
                later.astimezone().strftime("%Y-%m-%dT%H:%M"))
            await page.get_by_role("button", name="Schedule", exact=True).click()
            await expect(page.get_by_role("region", name="Scheduled")).to_contain_text("Leaving")
            await page.locator("#notice-close").click()
            await page.get_by_role("textbox", name="Message").fill("Count me in, see you there")
            await page.mouse.move(0, 0)
            await page.wait_for_timeout(300)
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out))
            await browser.close()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data").start()
        try:
            asyncio.run(scene(server.url, args.out))
        finally:
            server.stop()
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
