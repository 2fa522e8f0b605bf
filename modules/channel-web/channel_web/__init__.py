"""channel-web: chat with a bot in the browser, on its own page (/s/<botId>) or in a widget.

The hook implementations delegate to one ``WebChannel`` per server (``create_module()``).
"""

from __future__ import annotations

from botpress_py.sdk import BotContext, IOEvent, ServerContext, hookimpl

from .channel import WebChannel


class WebChatModule:
    def __init__(self) -> None:
        self.channel = WebChannel()

    @hookimpl
    def on_server_started(self, server: ServerContext) -> None:
        self.channel.start(server)

    @hookimpl
    def on_bot_mount(self, bot: BotContext) -> None:
        self.channel.mount(bot)

    @hookimpl
    async def on_bot_unmount(self, bot: BotContext) -> None:
        await self.channel.unmount(bot)

    @hookimpl
    async def on_server_stopping(self) -> None:
        await self.channel.stopping()

    @hookimpl
    async def on_outgoing(self, event: IOEvent, bot: BotContext) -> bool | None:
        return await self.channel.send(event, bot)

    @hookimpl
    async def on_user_erase(self, bot: BotContext, user_id: str, channel: str) -> None:
        await self.channel.erase_user(bot, user_id, channel)


def create_module() -> WebChatModule:
    return WebChatModule()
