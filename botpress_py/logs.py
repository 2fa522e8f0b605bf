"""The server's log output: plain text or one JSON object per line, with per-module levels.

``botpress-py start --log-format json`` (or ``logs.format`` in botpress.config.json) writes lines a
log shipper reads as they are: time, level, logger, message, and what the line is about (request
id, bot, channel, user hash, event id; see log_context). ``logs.levels`` sets a level per module
name (``my-module``: its ``botpress_py.module.my-module…`` loggers and its per-bot
``botpress_py.bot.<id>.my-module`` ones) or per logger name prefix (``botpress_py.storage``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import orjson

from .log_context import current_fields, log_fields

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Field order of a JSON line; the context fields are present only when known.
CONTEXT_FIELDS = ("request_id", "bot", "channel", "user", "event_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
    the context fields, ``message``, and ``exc_info`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        raw = getattr(record, "bp_fields", None)
        fields = log_fields(raw if raw is not None else current_fields())
        for key in CONTEXT_FIELDS:
            if key in fields:
                line[key] = fields[key]
        line["message"] = record.getMessage()
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class LevelFilter(logging.Filter):
    """Lets a record through when its level reaches the level configured for its logger: the most
    specific match among the ``logs.levels`` keys, else the default level."""

    def __init__(self, default: int, levels: Mapping[str, int]) -> None:
        super().__init__()
        self.default = default
        self.levels = dict(levels)
        self._cache: dict[str, int] = {}

    def level_of(self, name: str) -> int:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        best, best_len = self.default, -1
        parts = name.split(".")
        for key, level in self.levels.items():
            for prefix in (key, f"botpress_py.module.{key}"):
                if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                    best, best_len = level, len(prefix)
            # A bot's logger of this module: botpress_py.bot.<bot id>.<module>[.…]
            if len(parts) >= 4 and parts[:2] == ["botpress_py", "bot"] and parts[3] == key and len(name) > best_len:
                best, best_len = level, len(name)
        if len(self._cache) < 10_000:  # logger names are few; the bound only guards against a bug
            self._cache[name] = best
        return best

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level_of(record.name):
            return False
        # Read the context now: a handler may format the record later, in another context.
        record.bp_fields = current_fields()
        return True


_installed: logging.Handler | None = None


def configure_logging(level: str = "info", fmt: str = "text", levels: Mapping[str, str] | None = None,
                      stream: IO[str] | None = None, force: bool = False) -> logging.Handler | None:
    """Install the server's one log handler on the root logger (replacing the one installed before).

    Like ``logging.basicConfig``, it leaves alone a process whose logging someone else set up (a test
    runner, a program embedding the server), unless ``force``; it then returns None."""
    global _installed
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    default = LEVELS[level.lower()]
    per_logger = {key: LEVELS[value.lower()] for key, value in (levels or {}).items()}
    root = logging.getLogger()
    if not force and any(h is not _installed for h in root.handlers):
        return None
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(LevelFilter(default, per_logger))
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    _installed = handler
    # Records below every configured level are never made; the filter sorts out the rest.
    root.setLevel(min([default, *per_logger.values()]))
    # One line per request is noise, unless asked for by name.
    access = logging.getLogger("aiohttp.access")
    access.setLevel(per_logger.get("aiohttp.access", per_logger.get("aiohttp", logging.WARNING)))
    return handler
