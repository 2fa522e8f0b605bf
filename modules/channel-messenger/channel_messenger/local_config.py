"""What the ``botpress-py messenger`` commands read from (and write to) the data folder.

The commands run outside the server, and a module imports nothing of the core but its SDK,
so the documented contract is read here directly: the server URL from
``data/global/botpress.config.json``, and a bot's channel config resolved like the server does
(DESIGN.md section 5: schema defaults < global file < ``BP_MODULE_CHANNEL_MESSENGER_*`` <
the bot's file, per top-level key), each value with the place it came from, so an error can
say which file to edit.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODULE = "channel-messenger"
ENV_PREFIX = "BP_MODULE_CHANNEL_MESSENGER_"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "config.schema.json"

# The emulator's demo Page, used by both sides unless told otherwise.
DEMO_PAGE_ID = "100000000000001"
DEMO_PAGE_NAME = "Emulator Page"
DEMO_TOKEN = "EMULATOR-TOKEN"
DEMO_APP_SECRET = "emulator-app-secret"
DEMO_PORT = 3100
DEMO_USER = "2000000000000001"
DEFAULT_GRAPH_API_URL = "https://graph.facebook.com"
# The keys ``messenger emulator --configure`` owns in a bot's file.
EMULATOR_KEYS = ("enabled", "graphApiUrl", "accessToken", "appSecret")


class CommandError(Exception):
    """A problem to print as ``error: ...`` (exit status 1), with what to do about it."""


def data_dir_from(value: str | None, env: Mapping[str, str]) -> Path:
    return Path(value or env.get("BP_DATA_PATH") or "data").resolve()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc} (run 'botpress-py check')") from None


def write_json(path: Path, data: Any) -> None:
    """Write atomically: the server watches data/ and must never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host


def server_url(data_dir: Path, env: Mapping[str, str], explicit: str | None = None) -> str:
    """--url, else $BP_URL, else the host and port the server listens on (config file, $PORT, $BP_HOST)."""
    if explicit or env.get("BP_URL"):
        return str(explicit or env["BP_URL"]).rstrip("/")
    http: dict[str, Any] = {}
    path = data_dir / "global" / "botpress.config.json"
    if path.exists():
        config = read_json(path)
        if isinstance(config, dict) and isinstance(config.get("httpServer"), dict):
            http = config["httpServer"]
    port = env.get("PORT") or env.get("BP_CONFIG_HTTPSERVER_PORT") or http.get("port") or 3000
    host = env.get("BP_HOST") or env.get("BP_CONFIG_HTTPSERVER_HOST") or http.get("host") or "localhost"
    return f"http://{_connect_host(str(host))}:{port}"


def _schema_defaults() -> dict[str, Any]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}


def _env_names() -> dict[str, str]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return {ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", key).upper(): key for key in schema.get("properties", {})}


def bot_file(data_dir: Path, bot_id: str) -> Path:
    return data_dir / "bots" / bot_id / "config" / f"{MODULE}.json"


def global_file(data_dir: Path) -> Path:
    return data_dir / "global" / "config" / f"{MODULE}.json"


@dataclass
class ChannelConfig:
    """A bot's channel-messenger config as the server resolves it, with the source of each key."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def text(self, key: str) -> str:
        value = self.values.get(key)
        return value.strip() if isinstance(value, str) else ""

    def source(self, key: str) -> str:
        return self.sources.get(key, "the defaults")


def channel_config(data_dir: Path, bot_id: str, env: Mapping[str, str]) -> ChannelConfig:
    config = ChannelConfig(_schema_defaults())
    config.sources = {k: "the defaults" for k in config.values}

    def merge(path: Path) -> None:
        if not path.exists():
            return
        data = read_json(path)
        if not isinstance(data, dict):
            raise CommandError(f"{path} must hold a JSON object (run 'botpress-py check')")
        for key, value in data.items():
            if key != "$schema":
                config.values[key] = value
                config.sources[key] = _shown_path(path)

    merge(global_file(data_dir))
    for name, key in _env_names().items():
        if name in env:
            config.values[key] = _env_value(env[name])
            config.sources[key] = f"env {name}"
    merge(bot_file(data_dir, bot_id))
    return config


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def bot_name(data_dir: Path, bot_id: str) -> str:
    path = data_dir / "bots" / bot_id / "bot.config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return bot_id
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() else bot_id


def is_local_url(url: str) -> bool:
    return bool(re.match(r"^https?://(localhost|127\.[0-9.]+|\[::1\]|0\.0\.0\.0)(:[0-9]+)?(/|$)", url.strip()))


def configure_for_emulator(data_dir: Path, bot_id: str, emulator_url: str, token: str, app_secret: str, *,
                           force: bool = False) -> tuple[Path, list[str]]:
    """Point a bot's channel at the emulator in its own config file; returns (file, keys written).

    Keeps every other key of the file. Refuses (unless ``force``) to replace the access token of
    a real Page, so a configured bot is never silently lost.
    """
    if not (data_dir / "bots" / bot_id / "bot.config.json").exists():
        known = sorted(p.parent.name for p in (data_dir / "bots").glob("*/bot.config.json"))
        raise CommandError(f"no bot '{bot_id}' in {data_dir / 'bots'} (bots: {', '.join(known) or 'none'})")
    path = bot_file(data_dir, bot_id)
    current: dict[str, Any] = {}
    if path.exists():
        data = read_json(path)
        if not isinstance(data, dict):
            raise CommandError(f"{path} must hold a JSON object")
        current = data
    old_token, old_url = str(current.get("accessToken") or ""), str(current.get("graphApiUrl") or "")
    if old_token and old_token != token and not is_local_url(old_url) and not force:
        raise CommandError(f"{path} already holds the accessToken of a real Page (graphApiUrl "
                           f"{old_url or DEFAULT_GRAPH_API_URL}); add --force to point the bot at the emulator anyway")
    wanted: dict[str, Any] = {"enabled": True, "graphApiUrl": emulator_url, "accessToken": token,
                              "appSecret": app_secret}
    if not current.get("getStarted"):
        wanted["getStarted"] = "GET_STARTED"  # a Get Started button to tap with /restart in chat
    written = [k for k, v in wanted.items() if current.get(k) != v]
    updated = {"$schema": "../../../assets/modules/channel-messenger/config.schema.json", **current, **wanted}
    write_json(path, updated)
    return path, written


def unconfigure_emulator(data_dir: Path, bot_id: str, emulator_url: str) -> Path | None:
    """Turn the channel off again if the bot's file still points at this emulator; the file path if done."""
    path = bot_file(data_dir, bot_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("graphApiUrl") != emulator_url or data.get("enabled") is not True:
        return None
    data["enabled"] = False
    write_json(path, data)
    return path
