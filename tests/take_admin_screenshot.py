"""The admin page's screenshot for the docs, taken in Chromium on a copy of the shipped data.

    python -m tests.take_admin_screenshot      # from the repository root: writes docs/img/admin-*.png
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from botpress_py.browser_testing import launch_browser
from botpress_py.testing import make_bot, write_json

from .admin_page_kit import REPO_ROOT, AdminBrowser, ChatBrowser, shipped_data, shipped_server

OUT = REPO_ROOT / "docs" / "img"
VIEWPORT = {"width": 1180, "height": 470}
# A short, fixed folder: its paths show in the problems of the screenshot.
DEMO = Path(tempfile.gettempdir()) / "botpress-py"


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(DEMO, ignore_errors=True)
    try:
        await take(shipped_data(DEMO))
    finally:
        shutil.rmtree(DEMO, ignore_errors=True)
    for name in ("admin-bots.png", "admin-live.png"):
        print(OUT / name)


async def take(data: Path) -> None:
    """A disabled bot, one with a broken qna.json, welcome-bot chatting: the bots view and the live view."""
    make_bot(data, "shop-assistant", disabled=True)
    make_bot(data, "support")
    write_json(data / "bots" / "support" / "qna.json", {"entries": [{"id": "x"}]})  # a config problem to show
    async with shipped_server(data) as server, launch_browser() as browser:
        chat = await ChatBrowser.open(await browser.new_context(), server.url)
        await chat.connected()
        admin = await AdminBrowser.open(await browser.new_context(viewport=VIEWPORT, device_scale_factor=1),
                                        server.url)
        await admin.log_in()
        await admin.logged_in()
        await admin.bot_row("support").locator("button.problems-button").click()
        await admin.page.locator("#view-bots tr.details li").first.wait_for()
        await admin.page.screenshot(path=OUT / "admin-bots.png")

        await admin.tab("live")
        await admin.page.locator(".live-state.ok").wait_for()
        await chat.say("hello")
        await chat.page.locator(".bpw-choice", has_text="Take the tour").click()
        await admin.page.locator("#view-live tr.live-event").nth(4).wait_for()
        await admin.page.set_viewport_size({"width": 1180, "height": 360})
        await admin.page.screenshot(path=OUT / "admin-live.png")


if __name__ == "__main__":
    asyncio.run(main())
