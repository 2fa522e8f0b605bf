"""Each server has its own Messenger channel: two servers in one process, with their own data folders,
share no Page, no webhook secret and no Graph connection pool; stopping one leaves the other working."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import (
    PAGE_A,
    PAGE_B,
    SECRET,
    SECRET_B,
    TOKEN_A,
    TOKEN_B,
    FakeMeta,
    add_bot,
    messages_with,
    messenger,
    serve,
    texts,
    write_global,
)


async def test_two_servers_in_one_process_share_no_channel_state(tmp_path: Path, emulator: GraphEmulator,
                                                                 http: aiohttp.ClientSession) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_global(first, emulator)
    write_global(second, emulator, appSecret=SECRET_B)
    add_bot(first, "shop", TOKEN_A)
    add_bot(second, "help", TOKEN_B)
    async with serve(first) as one:
        async with serve(second) as two:
            channel_one, channel_two = messenger(one), messenger(two)
            assert channel_one is not channel_two and channel_one.graph is not channel_two.graph
            assert channel_one.registry.by_page(PAGE_A).bot_id == "shop"  # type: ignore[union-attr]
            assert channel_one.registry.by_page(PAGE_B) is None
            assert channel_two.registry.by_page(PAGE_B).bot_id == "help"  # type: ignore[union-attr]
            assert channel_two.registry.by_page(PAGE_A) is None

            # A server knows only its own bots' secrets and Pages.
            assert await FakeMeta(http, one).say(PAGE_B, "81", "hello", secret=SECRET_B) == 403
            assert await FakeMeta(http, one).say(PAGE_B, "81", "hello", secret=SECRET) == 200  # not its Page
            assert await FakeMeta(http, two).say(PAGE_B, "82", "hello", secret=SECRET_B) == 200
            await emulator.wait_for(lambda e: messages_with(e, TOKEN_B))
            assert [m["recipient"]["id"] for m in messages_with(emulator, TOKEN_B)] == ["82"]
        # The second server stopped (and closed its Graph pool): the first one still sends.
        assert not channel_one.graph.closed and channel_two.graph.closed
        assert await FakeMeta(http, one).say(PAGE_A, "83", "hello") == 200
        await emulator.wait_for(lambda e: messages_with(e, TOKEN_A))
    assert texts(messages_with(emulator, TOKEN_A)) == ["hello from shop"]
