"""The widget: a page on another site pastes two lines and gets the chat (Botpress v12's inject.js API)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from playwright.async_api import expect

from botpress_py.testing import BotpressServer

SLOW = 15_000


@contextlib.asynccontextmanager
async def host_page(html: str) -> AsyncIterator[str]:
    """Another origin (its own port) serving one page: the site that embeds the chat."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        await runner.cleanup()


def embedding(server_url: str, init: str) -> str:
    return f"""<!doctype html><html><head><title>A shop</title></head><body><h1>A shop</h1>
<script src="{server_url}/assets/modules/channel-web/inject.js"></script>
<script>
  window.seen = [];
  window.botpressWebChat.onEvent(function (e) {{ window.seen.push(e.type); }});
  window.botpressWebChat.init({init});
</script></body></html>"""


async def test_two_lines_embed_the_chat_on_another_site(server: BotpressServer, browser: Any) -> None:
    html = embedding(server.url, f"{{host: '{server.url}', botId: 'welcome-bot', botName: 'Shop helper'}}")
    async with host_page(html) as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        frame_element = page.locator("iframe#bp-web-widget")
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-widget", timeout=SLOW)
        frame = page.frame_locator("iframe#bp-web-widget")
        await frame.locator(".bpw-launcher").click()
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-convo")
        await expect(frame.locator(".bpw-name")).to_have_text("Shop helper")
        await frame.locator(".bpw-botinfo-start").click()
        await frame.locator(".bpw-input").fill("hello")
        await frame.locator(".bpw-input").press("Enter")
        await expect(frame.locator(".bpw-bot .bpw-bubble", has_text="Hi there!")).to_be_visible(timeout=SLOW)

        # the embedding page drives the chat through the same API as Botpress v12
        await page.evaluate("window.botpressWebChat.sendPayload({type: 'text', text: 'help'})")
        await expect(frame.locator(".bpw-bot .bpw-bubble", has_text="I can show you around")).to_be_visible(
            timeout=SLOW)
        await page.evaluate("window.botpressWebChat.sendEvent({type: 'hide'})")
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-widget")
        seen = await page.evaluate("window.seen")
        assert {"LIFECYCLE.LOADED", "UI.OPENED", "UI.CLOSED", "MESSAGE.SENT", "MESSAGE.RECEIVED"} <= set(seen)


async def test_a_hidden_widget_opens_from_the_page(server: BotpressServer, browser: Any) -> None:
    html = embedding(server.url, f"{{host: '{server.url}', botId: 'welcome-bot', hideWidget: true}}")
    async with host_page(html) as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        frame_element = page.locator("iframe#bp-web-widget")
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-hidden")
        await page.wait_for_function("window.seen.indexOf('LIFECYCLE.LOADED') >= 0", timeout=SLOW)
        await page.evaluate("window.botpressWebChat.sendEvent({type: 'show'})")
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-convo", timeout=SLOW)


async def test_only_the_chats_own_iframe_may_resize_it(server: BotpressServer, browser: Any) -> None:
    html = embedding(server.url, f"{{host: '{server.url}', botId: 'welcome-bot'}}")
    async with host_page(html) as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        frame_element = page.locator("iframe#bp-web-widget")
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-widget", timeout=SLOW)
        # Listeners run in the order added: once ours sees the message, inject.js has handled it.
        await page.evaluate("""new Promise(resolve => {
            addEventListener('message', e => { if (e.data && e.data.value === 'evil') resolve(); });
            postMessage({type: 'setClass', value: 'evil', chatId: 'bp-web-widget'}, '*');
        })""")
        await expect(frame_element).to_have_class("bp-widget-web bp-widget-widget")
