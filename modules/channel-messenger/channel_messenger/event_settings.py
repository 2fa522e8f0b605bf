"""The settings of what users do besides writing (media, edits, a person answering from Meta's inbox), read
once per mount with the rest of the channel's config (``MessengerSettings.events``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_MEDIA_MAX_BYTES = 26_214_400  # 25 MB: Messenger's own attachment limit
_DURATION = re.compile(r"^(0|[1-9][0-9]*)(ms|s|m|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: Any, default_ms: int) -> int:
    """``"30m"`` → 1,800,000; ``"0"`` → 0; anything unreadable → ``default_ms`` (the schema refuses it first)."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or (match.group(1) != "0" and not match.group(2)):
        return default_ms
    return int(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]


@dataclass(frozen=True, slots=True)
class EventSettings:
    """``downloadMedia``, ``mediaMaxBytes``, ``mediaWait``, ``rerunOnEdit``, ``humanTakeoverPause``, ``appId``."""

    download_media: bool = True
    media_max_bytes: int = DEFAULT_MEDIA_MAX_BYTES
    media_wait_ms: int = 10_000
    rerun_on_edit: bool = False
    human_takeover_pause_ms: int = 1_800_000  # 30 minutes; 0: never pause
    app_id: str = ""  # the bot's own Meta App; "" = learnt from the echoes of its own messages

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EventSettings:
        size = config.get("mediaMaxBytes", DEFAULT_MEDIA_MAX_BYTES)
        app_id = config.get("appId")
        return cls(
            download_media=config.get("downloadMedia", True) is not False,
            media_max_bytes=size if isinstance(size, int) and not isinstance(size, bool) and size > 0
            else DEFAULT_MEDIA_MAX_BYTES,
            media_wait_ms=duration_ms(config.get("mediaWait", "10s"), 10_000),
            rerun_on_edit=config.get("rerunOnEdit") is True,
            human_takeover_pause_ms=duration_ms(config.get("humanTakeoverPause", "30m"), 1_800_000),
            app_id=app_id.strip() if isinstance(app_id, str) and app_id.strip().isdigit() else "",
        )
