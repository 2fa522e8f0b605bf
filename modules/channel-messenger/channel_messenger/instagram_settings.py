"""The ``instagram`` key of a bot's channel-messenger config, typed (docs/channels/instagram.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INSTAGRAM = "instagram"  # the channel of Instagram events (IOEvent.channel), and the Graph "platform"


@dataclass(frozen=True, slots=True)
class InstagramSettings:
    """``{"enabled", "accountId", "iceBreakers"}``; a key left out of the object keeps its default."""

    enabled: bool = False
    account_id: str = ""  # "" : found from the Page at mount (instagram_business_account)
    ice_breakers: tuple[Any, ...] = ()

    @classmethod
    def from_config(cls, value: Any) -> InstagramSettings:
        if not isinstance(value, dict):
            return cls()
        account = value.get("accountId")
        breakers = value.get("iceBreakers")
        return cls(
            enabled=value.get("enabled") is True,
            account_id=account.strip() if isinstance(account, str) and account.strip().isdigit() else "",
            ice_breakers=tuple(breakers) if isinstance(breakers, list) else (),
        )
