"""channel-messenger: a Facebook Messenger channel for botpress-py.

``create_module()`` gives each server its own ``MessengerModule``, whose hook implementations
delegate to that server's ``MessengerChannel`` (channel.py). The command-line tooling (the
Graph API emulator, ``botpress-py messenger …`` and ``botpress-py start --emulator``) lives in
``emulator/`` and ``cli/`` and is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botpress_py.sdk import BotContext, IOEvent, Middleware, ServerContext, hookimpl

from .channel import MessengerChannel
from .incoming import CHANNEL
from .instagram_settings import INSTAGRAM

if TYPE_CHECKING:
    from .cli.one_terminal import OneTerminal


class MessengerModule:
    """The module as one server sees it: its channel, and the one-terminal chat when ``start --emulator`` asks."""

    def __init__(self) -> None:
        self.channel = MessengerChannel()
        self.one_terminal: OneTerminal | None = None  # while start --emulator runs

    @hookimpl
    async def on_server_started(self, server: ServerContext) -> None:
        await self.channel.start(server)
        if server.options.get("emulator"):
            from .cli.one_terminal import OneTerminal

            self.one_terminal = OneTerminal(server, self.channel)
            await self.one_terminal.prepare()

    @hookimpl
    def on_server_ready(self, server: ServerContext) -> None:
        if self.one_terminal is not None:
            self.one_terminal.start_chat()

    @hookimpl
    async def on_server_stopping(self, server: ServerContext) -> None:
        if self.one_terminal is not None:
            await self.one_terminal.stop_chat()

    @hookimpl
    async def on_server_stopped(self, server: ServerContext) -> None:
        await self.channel.stop()
        if self.one_terminal is not None:
            await self.one_terminal.finish()
            self.one_terminal = None

    @hookimpl
    async def on_bot_mount(self, bot: BotContext) -> None:
        await self.channel.mount(bot)

    @hookimpl
    def on_bot_unmount(self, bot: BotContext) -> None:
        self.channel.unmount(bot)

    @hookimpl
    async def on_bot_disabled(self, bot: BotContext) -> None:
        await self.channel.bot_disabled(bot)

    @hookimpl
    async def on_outgoing(self, event: IOEvent, bot: BotContext) -> bool | None:
        return await self.channel.send(event, bot)

    @hookimpl
    def transform_output(self, event: IOEvent, bot: BotContext) -> None:
        """Data protection: whatever module sends a Messenger or Instagram user a message (a reply, a notify, a
        proactive ``bot.send``), it is flagged ``mask`` before it is first stored when ``maskOutgoingMessages``
        is on, so storage keeps it encrypted until sent and masked after."""
        if event.channel not in (CHANNEL, INSTAGRAM):
            return
        if bot.config.get("maskOutgoingMessages") is True:
            event.flags["mask"] = True
        if event.channel == CHANNEL:
            self.channel.answering.prepare(event)  # a reaction's mid, a comment's private reply

    @hookimpl
    async def on_user_erase(self, bot: BotContext, user_id: str, channel: str) -> None:
        await self.channel.erase_user(bot, user_id, channel)

    @hookimpl
    def register_middleware(self) -> list[Middleware]:
        """Before bot logic: the Messenger user's profile and cross-Page contact (contacts.py)."""
        return [Middleware("messenger-user", "incoming", self.channel.enrich, order=10,
                           description="Messenger profile (requestProfile) and contact across Pages "
                                       "(mergeContactProfiles) on event.user"),
                Middleware("messenger-event", "incoming", self.channel.before_bot_logic, order=20,
                           description="The user's attachment, downloaded into media storage, on "
                                       "event.payload.media (downloadMedia, mediaWait); what replies need of "
                                       "the event (the mid a reaction answers, the comment a private reply goes to)")]

    @hookimpl
    def register_commands(self, subparsers: Any) -> None:
        """``botpress-py messenger emulator | simulate | chat`` (cli/commands.py)."""
        from .cli.commands import register

        register(subparsers)

    @hookimpl
    def register_start_options(self, parser: Any) -> None:
        """``botpress-py start --emulator``: the server, the emulator and a chat in one terminal."""
        from .cli.commands import add_start_options

        add_start_options(parser)


def create_module() -> MessengerModule:
    """One module instance per server (the loader calls it for each)."""
    return MessengerModule()
