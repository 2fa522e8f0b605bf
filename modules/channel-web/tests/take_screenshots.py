"""Screenshots of the chat page for the docs, taken in Chromium on a copy of the shipped data.

    python modules/channel-web/tests/take_screenshots.py      # writes docs/img/webchat-*.png
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

# Run as a script, this folder is on sys.path: the test kits import as in the tests.
from test_widget import embedding, host_page
from webchat_testkit import REPO_ROOT, ChatPage, shipped_data, start_web_server

from botpress_py.browser_testing import launch_browser

OUT = REPO_ROOT / "docs" / "img"
VIEWPORT = {"width": 760, "height": 620}


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with start_web_server(shipped_data(Path(tmp))) as server, launch_browser() as browser:
            context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
            chat = await ChatPage.open(context, server.url)
            await chat.page.screenshot(path=OUT / "webchat-info.png")
            await chat.start_chatting()
            await chat.say("hello")
            await chat.choices().filter(has_text="Take the tour").wait_for()
            await chat.choices().filter(has_text="Take the tour").click()
            await chat.page.locator(".bpw-carousel .bpw-card").nth(2).wait_for()
            await chat.page.wait_for_function("document.querySelectorAll('.bpw-sending').length === 0")
            await chat.page.screenshot(path=OUT / "webchat-chat.png")

            html = embedding(server.url, f"{{host: '{server.url}', botId: 'welcome-bot'}}").replace(
                "<h1>A shop</h1>", "<h1 style='font-family:sans-serif;margin:40px'>Your site</h1>"
                "<p style='font-family:sans-serif;margin:40px;color:#555'>The chat below is two lines of HTML.</p>")
            async with host_page(html) as url:
                page = await (await browser.new_context(viewport={"width": 900, "height": 700})).new_page()
                await page.goto(url)
                frame = page.frame_locator("iframe#bp-web-widget")
                await frame.locator(".bpw-launcher").click()
                await frame.locator(".bpw-botinfo-start").click()
                await frame.locator(".bpw-input").fill("help")
                await frame.locator(".bpw-input").press("Enter")
                await frame.locator(".bpw-choice", has_text="About you").wait_for()
                await page.screenshot(path=OUT / "webchat-widget.png")
    for name in ("webchat-info.png", "webchat-chat.png", "webchat-widget.png"):
        print(OUT / name)


if __name__ == "__main__":
    asyncio.run(main())
