"""Per-bot transformers: ``data/bots/<bot>/transformers.py`` with ``transform_input`` / ``transform_output``.

The file is the operator's own code, imported at every mount (so an edit takes effect with the
remount the file watcher triggers). A file that fails to import is reported in ``/status`` and
the bot runs without it; a transformer that raises is logged and the event goes on unchanged.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .context import BotContext
from .events import IOEvent

log = logging.getLogger(__name__)

TRANSFORMERS_FILE = "transformers.py"
HOOKS = ("transform_input", "transform_output")


class BotTransformers:
    def __init__(self, path: Path, bot: BotContext, functions: dict[str, Callable[..., Any]],
                 error: str | None = None) -> None:
        self.path = path
        self.bot = bot
        self.functions = functions
        self.error = error

    def status(self) -> dict[str, Any]:
        if self.error:
            return {"state": "error", "reason": self.error}
        return {"state": "on", "hooks": sorted(self.functions)}

    async def run(self, hook: str, event: IOEvent) -> bool:
        """Apply the bot's ``hook`` to the event; False means drop it. Errors are logged, not raised."""
        function = self.functions.get(hook)
        if function is None:
            return True
        try:
            result = function(event, self.bot)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("bot %s: %s in %s failed on event %s; the event goes on unchanged",
                          self.bot.id, hook, self.path, event.id)
            return True
        return result is not False


def load_bot_transformers(path: Path, bot: BotContext) -> BotTransformers | None:
    if not path.is_file():
        return None
    name = f"botpress_py_bot_transformers_{bot.id.replace('-', '_')}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules.pop(name, None)  # a remount imports the edited file afresh
        spec.loader.exec_module(module)
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" (line {frame.lineno})" if frame and frame.filename == str(path) else ""
        error = f"{path}: {type(exc).__name__}: {exc}{where}"
        log.error("bot %s: transformers not loaded: %s", bot.id, error)
        return BotTransformers(path, bot, {}, error)
    functions = {hook: getattr(module, hook) for hook in HOOKS if callable(getattr(module, hook, None))}
    if not functions:
        return BotTransformers(path, bot, {}, f"{path} defines neither transform_input nor transform_output")
    log.info("bot %s: transformers %s loaded from %s", bot.id, ", ".join(sorted(functions)), path)
    return BotTransformers(path, bot, functions)
