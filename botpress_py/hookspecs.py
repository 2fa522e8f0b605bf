"""Every hook a botpress-py module may implement.

This file is the whole extension API: read it top to bottom and you know what a module
can do. Implementations may accept any subset of a hook's arguments (pluggy allows it). The
runtime hooks (``on_*``, ``check_bot``) may be ``async def``: the core awaits what they
return. The load-time hooks (``config_schema``, ``register_middleware``,
``register_commands``) run before any event loop and must be plain functions.

The core calls each module's implementation separately, with a context object scoped to
that module (its own config, router, state and status), so one module failing never stops
the others from running the same hook. The order is pluggy's: implementations marked
``@hookimpl(tryfirst=True)``, then plain ones, then ``@hookimpl(trylast=True)`` ones, each group
in the order of ``modules`` in botpress.config.json (``on_bot_unmount``: the reverse of it
within each group). ``hookwrapper=True`` and ``wrapper=True`` are refused at load: a wrapper
would run around the other modules' calls, and its failure would be theirs.
``on_outgoing`` is the exception: only the module that declares the event's channel
(``"channels"`` in its module.json) is asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # types only: the context and event modules never import this one
    import argparse

    from .context import BotContext, ConfigProblem, ServerContext
    from .events import IOEvent, Middleware

PROJECT_NAME = "botpress_py"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def on_server_started(server: ServerContext) -> None:
    """The HTTP server is about to listen: register global routes (``server.router``) and open pools."""


@hookspec
def on_server_ready(server: ServerContext) -> None:
    """Every enabled bot has been mounted and the server accepts requests."""


@hookspec
def on_bot_mount(bot: BotContext) -> None:
    """A bot is being mounted with freshly read config: set up routes and channel state for it."""


@hookspec
def on_bot_unmount(bot: BotContext) -> None:
    """A bot is being unmounted (disable, reload or shutdown): drop what ``on_bot_mount`` set up."""


@hookspec
def on_server_stopping(server: ServerContext) -> None:
    """The server is about to stop serving HTTP: close long-lived connections (WebSockets) now."""


@hookspec
def on_bot_disabled(bot: BotContext) -> None:
    """A configured bot is disabled: at start, when disabled at runtime, and again (with a fresh context)
    whenever its files change while it stays disabled.

    The bot is not mounted and nothing is served for it, but ``bot.config`` is its resolved config and
    ``await bot.receive(events)`` stores events that wait until the bot is enabled, then are processed.
    A channel uses it to keep accepting the platform's deliveries for the bot rather than refusing them.
    What it sets up is replaced by the bot's next ``on_bot_mount`` or ``on_bot_disabled``.
    """


@hookspec
def on_server_stopped(server: ServerContext) -> None:
    """The server has stopped serving and every bot is unmounted: close the module's sessions, pools, files."""


@hookspec
def on_module_unmount(server: ServerContext) -> None:
    """Deprecated name of ``on_server_stopped`` (same moment, same argument); still called, with a warning at load."""


@hookspec
def on_incoming(event: IOEvent, bot: BotContext) -> None:
    """An incoming event passed the middleware: bot logic answers it with ``await bot.reply(...)`` (which marks
    the event handled), or calls ``event.mark_handled()`` when it answers otherwise; fallback logic such as
    qna's (``trylast``) reads ``event.handled``."""


@hookspec
def on_outgoing(event: IOEvent, bot: BotContext) -> bool | None:
    """Deliver an outgoing event of a channel this module declares in module.json; return True once sent.

    Put the platform's message id in ``event.flags["channelMessageId"]`` to have it recorded;
    raise ``DeliveryError`` on failure (``permanent=True`` for errors a retry cannot fix).
    """


@hookspec
def transform_input(event: IOEvent, bot: BotContext) -> bool | None:
    """Change an incoming event just before bot logic sees it; return False to drop it."""


@hookspec
def transform_output(event: IOEvent, bot: BotContext) -> bool | None:
    """Change a reply before it is stored for sending; return False to drop it."""


@hookspec
def on_user_erase(bot: BotContext, user_id: str, channel: str) -> None:
    """A user's data is being erased: delete what the module keeps about them (state, caches)."""


@hookspec(firstresult=True)
def config_schema() -> dict[str, Any] | None:
    """Return the module's config JSON Schema when it is not shipped as ``config.schema.json``."""


@hookspec
def register_middleware() -> list[Middleware]:
    """Return ``Middleware`` objects to run on incoming or outgoing events, ordered by ``order``."""


@hookspec
def check_bot(bot: BotContext) -> list[ConfigProblem]:
    """Validate the module's own per-bot files (e.g. qna.json); return ``ConfigProblem`` objects."""


@hookspec
def register_start_options(parser: argparse.ArgumentParser) -> None:
    """Add options to ``botpress-py start`` (an argparse parser); their values reach ``server.options``."""


@hookspec
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``botpress-py`` CLI verbs: call ``subparsers.add_parser(...)`` and set ``func``."""
