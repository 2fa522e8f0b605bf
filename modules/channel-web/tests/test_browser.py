"""The chat page in a real browser (Debian's Chromium through Playwright), as a visitor uses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from webchat_testkit import ChatPage, shipped_data, start_web_server, web_channel

from botpress_py.sdk import IOEvent
from botpress_py.testing import BotpressServer, make_bot, wait_for

SLOW = 15_000  # ms: a condition waited for, never a sleep


async def test_first_chat_hello_quick_reply_then_history_after_reload(server: BotpressServer, browser: Any) -> None:
    context = await browser.new_context()
    chat = await ChatPage.open(context, server.url)
    info = chat.page.locator(".bpw-botinfo")
    await expect(info).to_be_visible()
    await expect(info.locator(".bpw-botinfo-name")).to_have_text("Welcome Bot")
    await expect(info.locator("strong")).to_have_text("Welcome Bot")  # the markdown of infoPage.description
    await chat.start_chatting()
    await chat.connected()

    await chat.say("hello")
    await expect(chat.bot_text("Hi there!")).to_be_visible(timeout=SLOW)
    await expect(chat.choices()).to_have_text(["Take the tour", "What can you do?", "About you"], timeout=SLOW)
    await chat.choices().filter(has_text="Take the tour").click()
    await expect(chat.user_text("Take the tour")).to_be_visible()
    await expect(chat.bot_text("Here's the short tour")).to_be_visible(timeout=SLOW)
    cards = chat.page.locator(".bpw-carousel .bpw-card")
    await expect(cards).to_have_count(3, timeout=SLOW)
    await expect(cards.first.locator(".bpw-card-title")).to_have_text("Bots are folders")

    await chat.page.reload()
    await chat.page.wait_for_selector(".bpw-ready", timeout=SLOW)
    await expect(chat.page.locator(".bpw-botinfo")).to_be_hidden()  # a returning visitor goes straight to the chat
    await expect(chat.user_text("hello")).to_be_visible()
    await expect(chat.bot_text("Hi there!")).to_be_visible()
    await expect(chat.page.locator(".bpw-carousel .bpw-card")).to_have_count(3)
    assert chat.errors == []


async def test_a_second_browser_cannot_read_the_first_visitors_conversation(server: BotpressServer,
                                                                           browser: Any) -> None:
    first = await ChatPage.open(await browser.new_context(), server.url)
    await first.start_chatting()
    await first.say("hello")
    await expect(first.bot_text("Hi there!")).to_be_visible(timeout=SLOW)
    stolen = await first.page.evaluate("localStorage.getItem('bp-webchat:welcome-bot')")
    victim = json.loads(stolen)

    second = await ChatPage.open(await browser.new_context(), server.url)
    await second.start_chatting()
    await second.connected()
    await expect(second.page.locator(".bpw-list .bpw-row")).to_have_count(0)
    mine = json.loads(await second.page.evaluate("localStorage.getItem('bp-webchat:welcome-bot')"))
    assert mine["userId"] != victim["userId"]
    # From the second browser: the first visitor's conversation id with its own token reads nothing,
    # and a token it forges is refused.
    script = """async ([conversation, token]) => {
        const r = await fetch(`/api/v1/bots/welcome-bot/mod/channel-web/conversations/${conversation}/messages`,
                              {headers: {Authorization: `Bearer ${token}`}});
        return [r.status, await r.json()];
    }"""
    status, body = await second.page.evaluate(script, [victim["conversationId"], mine["token"]])
    assert status == 200 and body["messages"] == []
    forged = victim["userId"] + "." + mine["token"].split(".")[1]
    status, body = await second.page.evaluate(script, [victim["conversationId"], forged])
    assert (status, body["error"]) == (401, "invalid visitor token")


async def test_html_in_bot_and_visitor_text_is_shown_as_text(tmp_path: Path, browser: Any) -> None:
    data = shipped_data(tmp_path)
    evil = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> **still bold**"
    make_bot(data, "xss-bot", qna={"entries": [
        {"id": "evil", "questions": ["attack"], "answers": [{"type": "text", "text": evil}]},
        {"id": "links", "questions": ["links"], "answers": [
            {"type": "text", "text": "[click](javascript:window.pwned=3) and [ok](https://example.com/)"}]},
    ]})
    async with start_web_server(data) as server:
        chat = await ChatPage.open(await browser.new_context(), server.url, "xss-bot")
        await chat.connected()
        await chat.say("attack")
        bubble = chat.bot_text("still bold")
        await expect(bubble).to_be_visible(timeout=SLOW)
        assert "<script>window.pwned = 1</script>" in await bubble.inner_text()
        await expect(bubble.locator("strong")).to_have_text("still bold")
        await chat.say("<img src=x onerror=\"window.pwned = 4\">")
        await expect(chat.user_text("<img src=x")).to_be_visible()
        await chat.say("links")
        await expect(chat.bot_text("and ok")).to_be_visible(timeout=SLOW)
        links = chat.bot_text("and ok").locator("a")
        await expect(links).to_have_count(1)  # the javascript: link stays plain text
        assert await links.get_attribute("href") == "https://example.com/"
        assert await chat.page.locator(".bpw-list script, .bpw-list img").count() == 0
        assert await chat.page.evaluate("window.pwned") is None
        assert chat.errors == []


async def test_disabling_the_bot_makes_the_page_say_unavailable_until_it_is_enabled(server: BotpressServer,
                                                                                    browser: Any) -> None:
    chat = await ChatPage.open(await browser.new_context(), server.url)
    await chat.start_chatting()
    await chat.connected()
    await server.registry.set_disabled("welcome-bot", True)
    banner = chat.page.locator(".bpw-banner-unavailable")
    await expect(banner).to_contain_text("Welcome Bot is unavailable", timeout=SLOW)
    await expect(chat.page.locator(".bpw-input")).to_be_disabled()

    await server.registry.set_disabled("welcome-bot", False)
    await expect(banner).to_be_hidden(timeout=SLOW)
    await chat.connected()
    await chat.say("hello")
    await expect(chat.bot_text("Hi there!")).to_be_visible(timeout=SLOW)


async def test_a_page_opened_while_the_bot_is_disabled_waits_for_it(server: BotpressServer, browser: Any) -> None:
    await server.registry.set_disabled("welcome-bot", True)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{server.url}/s/welcome-bot")
    await expect(page.locator(".bpw-banner-unavailable")).to_be_visible(timeout=SLOW)
    await server.registry.set_disabled("welcome-bot", False)
    await page.wait_for_selector(".bpw-connected", timeout=SLOW)
    response = await page.goto(f"{server.url}/s/no-such-bot")
    assert response is not None and response.status == 404
    await expect(page.locator("h1")).to_have_text("No such bot")


async def test_a_reply_sent_while_the_browser_is_offline_arrives_when_it_reconnects(server: BotpressServer,
                                                                                   browser: Any) -> None:
    context = await browser.new_context()
    chat = await ChatPage.open(context, server.url)
    await chat.start_chatting()
    await chat.connected()
    identity = json.loads(await chat.page.evaluate("localStorage.getItem('bp-webchat:welcome-bot')"))
    key = ("welcome-bot", identity["userId"])
    hub = web_channel(server).hub

    await context.set_offline(True)
    await hub.close_bot("welcome-bot", 1012, "network blip")  # what a dropped connection looks like
    await expect(chat.page.locator(".bpw-banner-reconnecting")).to_be_visible(timeout=SLOW)
    bot = server.module_contexts["channel-web"].get_bot("welcome-bot")
    assert bot is not None
    event = IOEvent(type="text", channel="web", direction="outgoing", botId="welcome-bot", target=identity["userId"],
                    threadId=identity["conversationId"], payload={"type": "text", "text": "sent while you were away"})
    await bot.send([event])

    async def delivered() -> bool:
        row = await server.storage.outbox_get(event.id)
        return row is not None and row.status == "sent"

    await wait_for(delivered, timeout=10)
    assert not hub.connected(key), "the reply was delivered while the browser had no socket"
    await expect(chat.bot_text("sent while you were away")).to_have_count(0)

    await context.set_offline(False)
    await expect(chat.bot_text("sent while you were away")).to_be_visible(timeout=SLOW)
    await expect(chat.page.locator(".bpw-banner")).to_be_hidden()


async def test_reset_starts_a_new_empty_conversation(server: BotpressServer, browser: Any) -> None:
    chat = await ChatPage.open(await browser.new_context(), server.url)
    await chat.start_chatting()
    await chat.say("hello")
    await expect(chat.bot_text("Hi there!")).to_be_visible(timeout=SLOW)
    await chat.page.click("button[aria-label='Start a new conversation']")
    await expect(chat.page.locator(".bpw-list .bpw-row")).to_have_count(0)
    await chat.connected()
    await chat.say("help")
    await expect(chat.bot_text("I can show you around")).to_be_visible(timeout=SLOW)
    await chat.page.reload()
    await chat.page.wait_for_selector(".bpw-ready", timeout=SLOW)
    await expect(chat.bot_text("I can show you around")).to_be_visible()
    await expect(chat.bot_text("Hi there!")).to_have_count(0)  # the old conversation is not shown


@pytest.mark.parametrize("kind", ["image", "file", "video", "audio", "card", "handover"])
async def test_every_standard_payload_renders(tmp_path: Path, browser: Any, kind: str) -> None:
    payloads = {
        "image": ({"type": "image", "image": "/assets/modules/channel-web/bot.svg", "title": "A robot"},
                  ".bpw-media img.bpw-image", "A robot"),
        "file": ({"type": "file", "url": "https://example.com/menu.pdf", "title": "Menu"}, "a.bpw-file", "Menu"),
        "video": ({"type": "video", "url": "https://example.com/v.mp4", "title": "Clip"}, "video.bpw-player", "Clip"),
        "audio": ({"type": "audio", "url": "https://example.com/a.mp3", "title": "Song"}, "audio.bpw-player", "Song"),
        "card": ({"type": "card", "title": "Opening hours", "subtitle": "Mon-Sat",
                  "actions": [{"action": "Say something", "title": "Prices?", "text": "prices"}]},
                 ".bpw-card .bpw-card-button", "Opening hours"),
        "handover": ({"type": "handover"}, ".bpw-note", "A person will take over"),
    }
    payload, selector, text = payloads[kind]
    data = shipped_data(tmp_path)
    make_bot(data, "demo", qna={"entries": [
        {"id": "show", "questions": ["show"], "answers": [payload]},
        {"id": "prices", "questions": ["prices"], "answers": [{"type": "text", "text": "Cheap!"}]},
    ]})
    async with start_web_server(data) as server:
        chat = await ChatPage.open(await browser.new_context(), server.url, "demo")
        await chat.say("show")
        await expect(chat.page.locator(f".bpw-list {selector}").first).to_be_attached(timeout=SLOW)
        await expect(chat.page.locator(".bpw-list")).to_contain_text(text)
        if kind == "card":  # a "Say something" button makes the visitor say its text
            await chat.page.click("text=Prices?")
            await expect(chat.bot_text("Cheap!")).to_be_visible(timeout=SLOW)
        assert chat.errors == []
