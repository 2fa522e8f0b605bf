"""Looking inside while a test drives the channel: what bot logic saw, what storage holds, the admin API.

Used by the tests of profiles, contacts, handover, notify/inject and data protection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
from channel_messenger.emulator import GraphEmulator
from messenger_testkit import ADMIN, MODULE, FakeMeta, messenger

from botpress_py.sdk import BotContext

SPY = '''import json

SEEN = {path!r}


def transform_input(event, bot):
    with open(SEEN, "a", encoding="utf-8") as out:
        out.write(json.dumps({{"bot": bot.id, "type": event.type, "payload": event.payload, "user": event.user,
                               "flags": event.flags}}) + "\\n")
'''


def spy_on_bot_logic(data_dir: Path, bot_id: str, out: Path) -> Path:
    """A bot transformers.py that writes each event as bot logic sees it to ``out`` (outside data/)."""
    (data_dir / "bots" / bot_id / "transformers.py").write_text(SPY.format(path=str(out)), encoding="utf-8")
    return out


def seen(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def context(server: Any, bot_id: str) -> BotContext:
    """The channel's BotContext of a mounted bot (its users and state)."""
    bot = messenger(server).server.get_bot(bot_id)  # type: ignore[union-attr]
    assert bot is not None, f"bot {bot_id} is not mounted with the channel"
    return bot


def event_at(page: str, psid: str, text: str, mid: str, timestamp_ms: int) -> dict[str, Any]:
    """A user's message with a chosen Meta timestamp."""
    return {"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": timestamp_ms,
            "message": {"mid": mid, "text": text}}


async def post_events(meta: FakeMeta, page: str, events: list[dict[str, Any]], *, standby: bool = False) -> int:
    status, _ = await meta.post(GraphEmulator.webhook_body(page, events, standby=standby))
    return status


async def api(http: aiohttp.ClientSession, server: Any, bot: str, route: str, body: Any = None, *,
              token: str | None = ADMIN, method: str = "POST", raw: bytes | None = None,
              params: dict[str, str] | None = None) -> tuple[int, Any]:
    """Call the channel's admin API of a bot; (status, JSON answer or text)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"{server.url}/api/v1/bots/{bot}/mod/{MODULE}/{route}"
    kwargs: dict[str, Any] = {"headers": headers, "params": params}
    if raw is not None:
        kwargs["data"] = raw
        headers["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


def sqlite_rows(data_dir: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the server's SQLite storage directly (what an operator would see with sqlite3)."""
    with sqlite3.connect(data_dir / "storage" / "core.sqlite") as db:
        return list(db.execute(query, args))


def outbox(data_dir: Path) -> list[dict[str, Any]]:
    rows = sqlite_rows(data_dir, "SELECT event, status, error FROM outbox ORDER BY seq")
    return [{**json.loads(event), "status": status, "error": error} for event, status, error in rows]


def all_stored_text(data_dir: Path) -> str:
    """Every stored row of every table, as one string (to check that some text is nowhere)."""
    with sqlite3.connect(data_dir / "storage" / "core.sqlite") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(list(db.execute(f"SELECT * FROM {t}"))) for t in tables)


def hours_ago(hours: float) -> int:
    return int((time.time() - hours * 3600) * 1000)
