"""The admin page in a real browser (Debian's Chromium through Playwright), as an operator uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from botpress_py.browser_testing import browser_unavailable_reason, launch_browser
from botpress_py.server import BotpressServer
from botpress_py.testing import make_bot, wait_for, write_json

from .admin_page_kit import SLOW, AdminBrowser, ChatBrowser, shipped_data, shipped_server
from .admin_support import TOKEN
from .failed_events_support import FAST_RETRIES, Database

HOSTILE = "<img src=x onerror=\"window.pwned = 1\"><script>window.pwned = 2</script>"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (playwright Browser); the test is skipped when there is none."""
    reason = browser_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with launch_browser() as launched:
        yield launched


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[BotpressServer]:
    async with shipped_server(shipped_data(tmp_path)) as running:
        yield running


async def logged_in(browser: Any, server: BotpressServer) -> AdminBrowser:
    admin = await AdminBrowser.open(await browser.new_context(), server.url)
    await admin.log_in()
    await admin.logged_in()
    return admin


async def test_disable_and_enable_welcome_bot_from_the_page_while_a_visitor_chats(server: BotpressServer,
                                                                                  browser: Any) -> None:
    admin = await logged_in(browser, server)
    row = admin.bot_row("welcome-bot")
    await expect(row.locator(".badge")).to_have_text("mounted", timeout=SLOW)
    await expect(row.locator(".chips")).to_contain_text("channel-web on")
    chat = await ChatBrowser.open(await browser.new_context(), server.url)
    await chat.connected()

    await row.locator("button.disable").click()
    await expect(row.locator(".badge")).to_have_text("disabled", timeout=SLOW)
    assert server.registry.records["welcome-bot"].state == "disabled"
    banner = chat.page.locator(".bpw-banner-unavailable")
    await expect(banner).to_contain_text("Welcome Bot is unavailable", timeout=SLOW)

    await row.locator("button.enable").click()
    await expect(row.locator(".badge")).to_have_text("mounted", timeout=SLOW)
    await expect(banner).to_be_hidden(timeout=SLOW)
    await chat.connected()
    await chat.say("hello")
    await expect(chat.bot_text("Hi there!")).to_be_visible(timeout=SLOW)
    assert admin.errors == []


async def test_a_wrong_token_is_refused_and_logging_out_ends_the_session(server: BotpressServer,
                                                                        browser: Any) -> None:
    context = await browser.new_context()
    admin = await AdminBrowser.open(context, server.url)
    await admin.log_in("not-the-token")
    await expect(admin.page.locator("#login-error")).to_contain_text("Wrong token", timeout=SLOW)
    await expect(admin.page.locator("#app")).to_be_hidden()
    assert await context.cookies() == []

    await admin.log_in()
    await admin.logged_in()
    [cookie] = await context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "admin-page-test-token" not in cookie["value"]
    assert await admin.page.evaluate("document.cookie") == ""  # scripts never see the session
    await admin.page.reload()
    await admin.logged_in()  # a reload keeps the session
    await admin.page.click("#logout")
    await expect(admin.page.locator("#login")).to_be_visible(timeout=SLOW)
    await admin.page.reload()
    await expect(admin.page.locator("#login")).to_be_visible(timeout=SLOW)
    assert admin.errors == []


async def test_the_live_view_shows_a_message_sent_through_the_chat_page(tmp_path: Path, browser: Any) -> None:
    data = shipped_data(tmp_path)
    make_bot(data, "other-bot")
    async with shipped_server(data) as server:
        admin = await logged_in(browser, server)
        await admin.tab("live")
        state = admin.page.locator(".live-state")
        await expect(state).to_contain_text("connected", timeout=SLOW)
        chat = await ChatBrowser.open(await browser.new_context(), server.url)
        await chat.connected()
        await chat.say("hello")
        rows = admin.page.locator("#view-live tr.live-event")
        received = rows.filter(has_text="hello").filter(has=admin.page.locator(".stage.received"))
        await expect(received).to_have_count(1, timeout=SLOW)
        await expect(received).to_contain_text("welcome-bot")
        sent = rows.filter(has_text="Hi there!").filter(has=admin.page.locator(".stage.sent"))
        await expect(sent).to_have_count(1, timeout=SLOW)

        # Filtered to another bot, the view shows none of welcome-bot's events; back to it, it does.
        await admin.page.select_option("#view-live select.bot", "other-bot")
        await expect(state).to_contain_text("other-bot", timeout=SLOW)
        await chat.say("what can you do?")
        await expect(chat.page.locator(".bpw-bot .bpw-bubble")).to_have_count(4, timeout=SLOW)
        await admin.page.select_option("#view-live select.bot", "welcome-bot")
        await expect(state).to_contain_text("welcome-bot", timeout=SLOW)
        await chat.say("about you")
        await expect(rows.filter(has_text="about you")).to_have_count(1, timeout=SLOW)
        assert await rows.filter(has_text="what can you do?").count() == 0
        assert admin.errors == []


async def test_a_failed_event_is_retried_from_the_page(tmp_path: Path, browser: Any) -> None:
    data = shipped_data(tmp_path)
    async with shipped_server(data, storage=FAST_RETRIES) as server:
        database = Database("sqlite", {}, data)
        await database.refuse_history_of()
        chat = await ChatBrowser.open(await browser.new_context(), server.url)
        await chat.connected()
        await chat.say("refuse me")
        await wait_for(lambda: server.pipeline.failed_counts.status()["total"] == 1, 10)

        admin = await logged_in(browser, server)
        await admin.tab("failed")
        failed = admin.page.locator("#view-failed tr.failed-event")
        await expect(failed).to_have_count(1, timeout=SLOW)
        await expect(failed).to_contain_text("refuse me")
        await expect(failed).to_contain_text("history refused (injected fault)")

        await database.stop_refusing()
        await failed.locator("button.retry").click()
        await expect(admin.page.locator("#notice")).to_contain_text("Retried incoming event", timeout=SLOW)
        await expect(failed).to_have_count(0, timeout=SLOW)
        await expect(chat.bot_text("Sorry, I didn't catch that")).to_be_visible(timeout=SLOW)

        async def processed() -> bool:
            rows = await database.query("SELECT status FROM inbox WHERE event LIKE '%refuse me%'")
            return rows == [("done",)]

        await wait_for(processed, 10)
        assert admin.errors == []


async def test_hostile_texts_show_as_text_everywhere(tmp_path: Path, browser: Any) -> None:
    data = shipped_data(tmp_path)
    make_bot(data, "broken")
    write_json(data / "bots" / "broken" / "bot.config.json", {"id": "broken", HOSTILE: True})
    async with shipped_server(data) as server:
        admin = await logged_in(browser, server)
        broken = admin.bot_row("broken")
        await expect(broken.locator(".badge")).to_have_text("error", timeout=SLOW)
        await expect(broken.locator(".error-text")).to_contain_text("<script>window.pwned = 2</script>")
        await broken.locator("button.problems-button").click()
        problems = admin.page.locator("#view-bots tr.details")
        await expect(problems).to_contain_text("bot.config.json#/", timeout=SLOW)
        await expect(problems).to_contain_text("<img src=x")

        await admin.tab("live")
        await expect(admin.page.locator(".live-state")).to_contain_text("connected", timeout=SLOW)
        async with aiohttp.ClientSession() as s:
            base = f"{server.url}/api/v1/bots/welcome-bot/mod/channel-web"
            async with s.post(f"{base}/visitors") as r:
                token = (await r.json())["token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with s.post(f"{base}/conversations", headers=headers) as r:
                conversation = (await r.json())["conversationId"]
            async with s.post(f"{base}/messages", headers=headers,
                              json={"conversationId": conversation, "payload": {"type": "text", "text": HOSTILE}}) as r:
                assert r.status == 200
        shown = admin.page.locator("#view-live tr.live-event td.preview", has_text="<script>")
        await expect(shown).to_have_count(1, timeout=SLOW)
        assert HOSTILE in await shown.inner_text()

        await admin.tab("conversations")
        await admin.page.select_option("#view-conversations select.bot", "welcome-bot")
        await admin.page.locator("#view-conversations tr.conversation").first.click()
        bubble = admin.page.locator(".msg.incoming .bubble")
        await expect(bubble).to_have_text(HOSTILE, timeout=SLOW)
        assert await admin.page.locator("main script, main img").count() == 0
        assert await admin.page.evaluate("window.pwned") is None
        assert admin.errors == []


async def test_the_page_asks_for_the_token_again_when_the_session_expires(tmp_path: Path, browser: Any) -> None:
    async with shipped_server(shipped_data(tmp_path), admin={"token": TOKEN, "sessionLifetime": "2s"}) as server:
        admin = await logged_in(browser, server)
        await expect(admin.page.locator("#login-error")).to_have_text("Your session expired: log in again.",
                                                                      timeout=SLOW)
        await expect(admin.page.locator("#app")).to_be_hidden()
        await admin.log_in()
        await admin.logged_in()
        assert admin.errors == []
