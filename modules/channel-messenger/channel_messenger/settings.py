"""A typed view of one bot's resolved channel-messenger config, and the checks made before mounting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .event_settings import EventSettings
from .instagram_settings import InstagramSettings

MODULE = "channel-messenger"
DEFAULT_GRAPH_API_URL = "https://graph.facebook.com"
DEFAULT_GRAPH_API_VERSION = "v27.0"  # the newest in graph_versions.json
SENDER_ACTIONS = frozenset({"typing_on", "typing_off", "mark_seen"})
PAGE_INBOX_APP_ID = "263902037430900"  # Meta's Page Inbox: where a handover to a human goes by default

# Values people leave in config files before they fill in the real secret.
_PLACEHOLDER = re.compile(
    r"^(<.*>|\{\{.*\}\}|\$\{.*\}|x+|\.+|\*+|changeme|change[-_ ]?me|todo|tbd|fixme|secret|token|"
    r"app[-_ ]?secret|access[-_ ]?token|page[-_ ]?access[-_ ]?token|your[-_ ].*|replace[-_ ].*|insert[-_ ].*)$",
    re.IGNORECASE,
)
_DURATION = re.compile(r"^([1-9][0-9]*)(s|m|h|d)$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def is_placeholder(value: str) -> bool:
    """True for an empty secret or one still holding an obvious placeholder such as ``<APP_SECRET>``."""
    text = value.strip()
    return not text or bool(_PLACEHOLDER.match(text))


def _positive(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


def parse_duration(text: str, default_seconds: int = 86400) -> int:
    """``"24h"`` → 86400 seconds; anything unparsable falls back to the default (the schema rejects it)."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match:
        return default_seconds
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


@dataclass(frozen=True, slots=True)
class MessengerSettings:
    """The config keys of config.schema.json, read once per mount."""

    enabled: bool = False
    access_token: str = ""
    app_secret: str = ""
    verify_token: str = ""
    page_id: str = ""
    greeting: str | tuple[Any, ...] = ""  # one text for every locale, or per-locale {locale, text} items
    get_started: str = ""
    persistent_menu: tuple[Any, ...] = ()
    ice_breakers: tuple[Any, ...] = ()
    whitelisted_domains: tuple[str, ...] = ()
    reuse_attachments: bool = True  # attachments.py: media URLs uploaded once per Page, then sent by id
    instagram: InstagramSettings = field(default_factory=InstagramSettings)
    chat_user_auth_seconds: int = 86400
    disabled_actions: frozenset[str] = field(default_factory=frozenset)
    graph_api_url: str = DEFAULT_GRAPH_API_URL
    graph_api_version: str = DEFAULT_GRAPH_API_VERSION
    typing_indicators: bool = True
    message_delay_ms: int = 0
    send_rate_limit: float = 250.0  # Send API calls per second per Page (pacing.py); 0: not paced
    graph_batching: bool = True  # a busy Page's Send API calls go together in batch requests (graph_batch.py)
    request_profile: bool = False
    update_contact_profiles: bool = False
    merge_contact_profiles: bool = False
    store_profiles: bool = True
    mask_incoming: bool = False
    mask_outgoing: bool = False
    session_timeout_seconds: int = 0  # 0: the bot's own sessionTimeout (bot.config.json)
    handover_target: str = "inbox"
    disabled_bot_deliveries: str = "store"  # "store" | "drop": a disabled bot's Page's deliveries
    events: EventSettings = field(default_factory=EventSettings)  # media, edits, human takeover

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MessengerSettings:
        def text(key: str, default: str = "") -> str:
            value = config.get(key, default)
            return value.strip() if isinstance(value, str) else default

        delay = config.get("messageDelay", 0)
        menu = config.get("persistentMenu") or []
        greeting = config.get("greeting")
        ice_breakers = config.get("iceBreakers") or []
        domains = config.get("whitelistedDomains") or []
        return cls(
            enabled=config.get("enabled") is True,
            access_token=text("accessToken"),
            app_secret=text("appSecret"),
            verify_token=text("verifyToken"),
            page_id=text("pageId"),
            greeting=tuple(greeting) if isinstance(greeting, list) else text("greeting"),
            get_started=text("getStarted"),
            persistent_menu=tuple(menu) if isinstance(menu, list) else (),
            ice_breakers=tuple(ice_breakers) if isinstance(ice_breakers, list) else (),
            whitelisted_domains=tuple(d for d in domains if isinstance(d, str)) if isinstance(domains, list) else (),
            reuse_attachments=config.get("reuseAttachments", True) is not False,
            instagram=InstagramSettings.from_config(config.get("instagram")),
            chat_user_auth_seconds=parse_duration(config.get("chatUserAuthDuration", "24h")),
            disabled_actions=frozenset(a for a in config.get("disabledActions") or [] if a in SENDER_ACTIONS),
            graph_api_url=(text("graphApiUrl", DEFAULT_GRAPH_API_URL) or DEFAULT_GRAPH_API_URL).rstrip("/"),
            graph_api_version=text("graphApiVersion", DEFAULT_GRAPH_API_VERSION) or DEFAULT_GRAPH_API_VERSION,
            typing_indicators=config.get("typingIndicators", True) is not False,
            message_delay_ms=max(0, int(delay)) if isinstance(delay, int | float) else 0,
            send_rate_limit=(0.0 if config.get("sendRateLimit") == 0
                             else _positive(config.get("sendRateLimit"), 250.0)),
            graph_batching=config.get("graphBatching", True) is not False,
            request_profile=config.get("requestProfile") is True,
            update_contact_profiles=config.get("updateContactProfiles") is True,
            merge_contact_profiles=config.get("mergeContactProfiles") is True,
            store_profiles=config.get("storeProfiles", True) is not False,
            mask_incoming=config.get("maskIncomingMessages") is True,
            mask_outgoing=config.get("maskOutgoingMessages") is True,
            session_timeout_seconds=parse_duration(config.get("sessionTimeout") or "", 0),
            handover_target=text("handoverTarget", "inbox") or "inbox",
            disabled_bot_deliveries="drop" if config.get("disabledBotDeliveries") == "drop" else "store",
            events=EventSettings.from_config(config),
        )

    @property
    def wants_profiles(self) -> bool:
        """Whether user profiles are fetched at all (updateContactProfiles needs them too)."""
        return self.request_profile or self.update_contact_profiles

    def handover_app_id(self, target: Any = None) -> str:
        """The app id a handover goes to: ``"inbox"`` (or nothing: ``handoverTarget``) or an app id."""
        value = str(target).strip() if target not in (None, "") else self.handover_target
        return PAGE_INBOX_APP_ID if value == "inbox" else value

    def allows(self, action: str) -> bool:
        """Whether a sender action (typing_on, typing_off, mark_seen) may be sent."""
        return action not in self.disabled_actions

    def mount_problems(self, bot_file: str, global_file: str) -> list[str]:
        """Why this config cannot connect a Page, each with how to fix it (never echoing a secret)."""
        problems: list[str] = []
        if is_placeholder(self.access_token):
            problems.append(
                "accessToken is missing: copy the Page Access Token from Meta App > Messenger > "
                f"Access Tokens into \"accessToken\" of {bot_file}"
            )
        if is_placeholder(self.app_secret):
            problems.append(
                "appSecret is empty or still a placeholder: copy the App Secret from Meta App > Settings > "
                f"Basic into \"appSecret\" of {global_file} (or of {bot_file} for a bot on another app)"
            )
        return problems
