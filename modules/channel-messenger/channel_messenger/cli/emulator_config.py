"""What the ``botpress-py messenger`` commands read from, and write to, a bot's channel config.

The commands run outside the server: ``DataFolder`` (the SDK) resolves a bot's channel config
exactly as the server does, with the place each value came from, so an error can say which
file to edit; and edits the bot's file atomically, since a running server watches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botpress_py.sdk import ConfigFileError, DataFolder, load_json_file

from ..settings import DEFAULT_GRAPH_API_URL, MODULE

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "config.schema.json"


class CommandError(Exception):
    """A problem to print as ``error: ...`` (exit status 1), with what to do about it."""


def module_schema() -> dict[str, Any]:
    return load_json_file(SCHEMA_FILE)


@dataclass
class ChannelConfig:
    """A bot's channel-messenger config as the server resolves it, with the source of each key."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def text(self, key: str) -> str:
        value = self.values.get(key)
        return value.strip() if isinstance(value, str) else ""

    def source(self, key: str) -> str:
        where = self.sources.get(key, "schema default")
        return "the defaults" if where == "schema default" else _shown_path(where)


def _shown_path(where: str) -> str:
    """A file as the person at the terminal finds it: relative to where they are, when it is under it."""
    if where.startswith("env "):
        return where
    try:
        return str(Path(where).relative_to(Path.cwd()))
    except ValueError:
        return where


def channel_config(folder: DataFolder, bot_id: str) -> ChannelConfig:
    """The bot's channel config (schema defaults < global file < env < bot file); CommandError when one
    of the files cannot be read (the server would not connect the bot either)."""
    resolved = folder.module_config(MODULE, module_schema(), bot_id)
    files = {str(folder.module_config_file(MODULE, None)), str(folder.module_config_file(MODULE, bot_id))}
    unreadable = [p for p in resolved.problems if p.file in files and p.pointer in ("", "/")]
    if unreadable:
        raise CommandError(f"{unreadable[0]} (run 'botpress-py check')")
    return ChannelConfig(resolved.config, resolved.sources)


def is_local_url(url: str) -> bool:
    return bool(re.match(r"^https?://(localhost|127\.[0-9.]+|\[::1\]|0\.0\.0\.0)(:[0-9]+)?(/|$)", url.strip()))


def real_page_file(folder: DataFolder, bot_id: str, token: str) -> Path | None:
    """The bot's file when it holds another access token for the real Graph API (a real Page), else None."""
    current = _bot_file_data(folder, bot_id)
    old_token, old_url = str(current.get("accessToken") or ""), str(current.get("graphApiUrl") or "")
    if old_token and old_token != token and not is_local_url(old_url):
        return folder.module_config_file(MODULE, bot_id)
    return None


def _bot_file_data(folder: DataFolder, bot_id: str) -> dict[str, Any]:
    path = folder.module_config_file(MODULE, bot_id)
    if not path.exists():
        return {}
    try:
        data = load_json_file(path)
    except ConfigFileError as exc:
        raise CommandError(f"{exc} (run 'botpress-py check')") from None
    if not isinstance(data, dict):
        raise CommandError(f"{path} must hold a JSON object")
    return data


def configure_for_emulator(folder: DataFolder, bot_id: str, emulator_url: str, token: str, app_secret: str, *,
                           force: bool = False) -> tuple[Path, list[str]]:
    """Point a bot's channel at the emulator in its own config file; returns (file, keys written).

    Keeps every other key of the file. Refuses (unless ``force``) to replace the access token of
    a real Page, so a configured bot is never silently lost.
    """
    if bot_id not in folder.bot_ids():
        known = folder.bot_ids()
        raise CommandError(f"no bot '{bot_id}' in {folder.path / 'bots'} (bots: {', '.join(known) or 'none'})")
    current = _bot_file_data(folder, bot_id)
    real = real_page_file(folder, bot_id, token)
    if real is not None and not force:
        raise CommandError(f"{real} already holds the accessToken of a real Page (graphApiUrl "
                           f"{current.get('graphApiUrl') or DEFAULT_GRAPH_API_URL}); add --force to point the bot "
                           "at the emulator anyway")
    wanted: dict[str, Any] = {"enabled": True, "graphApiUrl": emulator_url, "accessToken": token,
                              "appSecret": app_secret}
    if not current.get("getStarted"):
        wanted["getStarted"] = "GET_STARTED"  # a Get Started button to tap with /restart in chat
    written = [k for k, v in wanted.items() if current.get(k) != v]
    try:
        path = folder.update_module_config(MODULE, bot_id, wanted)
    except ConfigFileError as exc:
        raise CommandError(f"{exc} (run 'botpress-py check')") from None
    return path, written


def unconfigure_emulator(folder: DataFolder, bot_id: str, emulator_url: str) -> Path | None:
    """Turn the channel off again if the bot's file still points at this emulator; the file path if done."""
    try:
        data = _bot_file_data(folder, bot_id)
    except CommandError:
        return None
    if data.get("graphApiUrl") != emulator_url or data.get("enabled") is not True:
        return None
    try:
        return folder.update_module_config(MODULE, bot_id, {"enabled": False})
    except ConfigFileError:
        return None
