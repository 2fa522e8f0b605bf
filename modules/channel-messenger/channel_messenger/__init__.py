"""channel-messenger: a Facebook Messenger channel for botpress-py.

Only hook implementations live here; they delegate to the one ``MessengerChannel`` of this
process (see channel.py). Everything Messenger-specific stays inside this package.
"""

from __future__ import annotations

from typing import Any

from botpress_py.sdk import BotContext, IOEvent, Middleware, ServerContext, hookimpl

from .channel import MessengerChannel

CHANNEL = MessengerChannel()


def channel() -> MessengerChannel:
    """The module's channel instance (tests and CLI helpers reach it here)."""
    return CHANNEL


@hookimpl
async def on_server_started(server: ServerContext) -> None:
    await CHANNEL.start(server)


@hookimpl
async def on_bot_mount(bot: BotContext) -> None:
    await CHANNEL.mount(bot)


@hookimpl
def on_bot_unmount(bot: BotContext) -> None:
    CHANNEL.unmount(bot)


@hookimpl
async def on_bot_disabled(bot: BotContext) -> None:
    await CHANNEL.bot_disabled(bot)


@hookimpl
async def on_module_unmount(server: Any) -> None:
    await CHANNEL.stop()


@hookimpl
async def on_outgoing(event: IOEvent, bot: BotContext) -> bool | None:
    return await CHANNEL.send(event, bot)


async def _user_of_event(event: IOEvent, bot: BotContext) -> None:
    await CHANNEL.enrich(event, bot)


@hookimpl
def register_middleware() -> list[Middleware]:
    """Before bot logic: the Messenger user's profile and cross-Page contact (contacts.py)."""
    return [Middleware("messenger-user", "incoming", _user_of_event, order=10,
                       description="Messenger profile (requestProfile) and contact across Pages "
                                   "(mergeContactProfiles) on event.user")]


@hookimpl
def register_commands(subparsers: Any) -> None:
    """``botpress-py messenger emulator | simulate | chat`` (see commands.py)."""
    from .commands import register

    register(subparsers)


@hookimpl
async def on_user_erase(bot: BotContext, user_id: str, channel: str) -> None:
    await CHANNEL.erase_user(bot, user_id, channel)
