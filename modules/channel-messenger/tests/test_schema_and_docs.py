"""config.schema.json is complete and valid, the manifest is right, and the operator doc matches the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from channel_messenger.settings import DEFAULT_GRAPH_API_URL, DEFAULT_GRAPH_API_VERSION, MessengerSettings
from jsonschema import Draft202012Validator

from botpress_py.sdk import validate_instance

MODULE_DIR = Path(__file__).resolve().parents[1]
DOC = MODULE_DIR.parents[1] / "docs" / "channels" / "messenger.md"
INSTAGRAM_DOC = MODULE_DIR.parents[1] / "docs" / "channels" / "instagram.md"
SCHEMA = json.loads((MODULE_DIR / "config.schema.json").read_text())
PROPERTIES: dict[str, Any] = SCHEMA["properties"]
MESSENGER_MD_FIELDS = {"enabled", "accessToken", "appSecret", "verifyToken", "greeting", "getStarted",
                       "persistentMenu", "chatUserAuthDuration", "disabledActions", "pageId", "graphApiUrl",
                       "graphApiVersion", "typingIndicators", "messageDelay", "requestProfile",
                       "updateContactProfiles", "mergeContactProfiles", "storeProfiles", "maskIncomingMessages",
                       "maskOutgoingMessages", "sessionTimeout", "handoverTarget", "disabledBotDeliveries",
                       "iceBreakers", "whitelistedDomains", "reuseAttachments", "instagram",
                       "downloadMedia", "mediaMaxBytes", "mediaWait", "rerunOnEdit", "humanTakeoverPause", "appId",
                       "sendRateLimit", "graphBatching"}


def defaults() -> dict[str, Any]:
    return {k: v["default"] for k, v in PROPERTIES.items()}


def problems(**config: Any) -> list[str]:
    schema = {k: v for k, v in SCHEMA.items() if k != "$schema"}
    return [p.pointer for p in validate_instance({**defaults(), **config}, schema, "x.json")]


def test_manifest() -> None:
    manifest = json.loads((MODULE_DIR / "module.json").read_text())
    assert manifest == {**manifest, "name": "channel-messenger", "version": "0.1.0", "entry": "channel_messenger",
                        "kind": "channel"}
    assert manifest["description"]


def test_schema_is_valid_complete_and_closed() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["additionalProperties"] is False
    assert set(PROPERTIES) == MESSENGER_MD_FIELDS
    for name, spec in PROPERTIES.items():
        assert "default" in spec and spec.get("description"), name
    assert problems() == [], "the defaults are valid"


def test_defaults_match_messenger_md_and_settings() -> None:
    d = defaults()
    assert d["enabled"] is False and d["chatUserAuthDuration"] == "24h" and d["typingIndicators"] is True
    assert d["graphApiUrl"] == DEFAULT_GRAPH_API_URL and d["graphApiVersion"] == DEFAULT_GRAPH_API_VERSION
    assert d["messageDelay"] == 0 and d["disabledActions"] == [] and d["persistentMenu"] == []
    assert MessengerSettings.from_config(d) == MessengerSettings()
    assert d["storeProfiles"] is True and d["sessionTimeout"] == "" and d["handoverTarget"] == "inbox"


def test_new_settings_are_read() -> None:
    settings = MessengerSettings.from_config({"sessionTimeout": "45m", "storeProfiles": False,
                                              "updateContactProfiles": True, "handoverTarget": "555"})
    assert settings.session_timeout_seconds == 2700 and settings.store_profiles is False
    assert settings.wants_profiles, "updateContactProfiles needs the profiles fetched"
    assert settings.handover_app_id() == "555" and settings.handover_app_id("inbox") == "263902037430900"
    assert MessengerSettings().handover_app_id() == "263902037430900"


@pytest.mark.parametrize(
    ("config", "pointer"),
    [
        ({"greeting": "x" * 161}, "/greeting"),
        ({"disabledActions": ["typing_on", "dance"]}, "/disabledActions/1"),
        ({"disabledActions": ["mark_seen", "mark_seen"]}, "/disabledActions"),
        ({"messageDelay": -1}, "/messageDelay"),
        ({"messageDelay": 1.5}, "/messageDelay"),
        ({"chatUserAuthDuration": "1 day"}, "/chatUserAuthDuration"),
        ({"graphApiVersion": "25"}, "/graphApiVersion"),
        ({"graphApiUrl": "graph.facebook.com"}, "/graphApiUrl"),
        ({"pageId": "my-page"}, "/pageId"),
        ({"persistentMenu": [{"type": "postback", "title": "No payload"}]}, "/persistentMenu/0"),
        ({"persistentMenu": [{"type": "web_url", "title": "t" * 31, "url": "https://x"}]}, "/persistentMenu/0"),
        ({"persistentMenu": [{"type": "nested", "title": "x"}]}, "/persistentMenu/0"),
        ({"enabled": "yes"}, "/enabled"),
        ({"accesToken": "typo"}, "/accesToken"),
        ({"sessionTimeout": "30 minutes"}, "/sessionTimeout"),
        ({"sessionTimeout": "0m"}, "/sessionTimeout"),
        ({"handoverTarget": "Page Inbox"}, "/handoverTarget"),
        ({"storeProfiles": "no"}, "/storeProfiles"),
        ({"maskIncomingMessages": 1}, "/maskIncomingMessages"),
    ],
)
def test_schema_rejects(config: dict[str, Any], pointer: str) -> None:
    assert pointer in problems(**config)


def test_schema_accepts_real_configs() -> None:
    assert problems(enabled=True, accessToken="EAAG", greeting="x" * 160, chatUserAuthDuration="30m",
                    disabledActions=["typing_on", "typing_off", "mark_seen"], messageDelay=500,
                    graphApiUrl="http://127.0.0.1:5005", pageId="1234567890",
                    persistentMenu=[{"type": "postback", "title": "Help", "payload": "HELP"},
                                    {"type": "web_url", "title": "Site", "url": "https://example.com",
                                     "webview_height_ratio": "tall"}]) == []
    assert problems(requestProfile=True, updateContactProfiles=True, mergeContactProfiles=True, storeProfiles=False,
                    maskIncomingMessages=True, maskOutgoingMessages=True, sessionTimeout="45m",
                    handoverTarget="263902037430900") == []
    assert problems(persistentMenu=[{"locale": "default", "composer_input_disabled": True,
                                     "call_to_actions": [{"type": "postback", "title": "A", "payload": "A"}]}]) == []


def doc_reference_rows(doc: Path = DOC) -> dict[str, tuple[str, str]]:
    """key (``instagram.accountId`` for a nested one) -> (type, default) from the doc's "Config reference" table."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Za-z.]+)` \| ([\w ]+?) \| `(.*?)` \|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} has two rows"
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def schema_keys(properties: dict[str, Any] = PROPERTIES, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every key of the schema, the keys of an object option as ``option.key``."""
    found: dict[str, dict[str, Any]] = {}
    for key, spec in properties.items():
        found[prefix + key] = spec
        if spec.get("type") == "object":
            found.update(schema_keys(spec.get("properties") or {}, f"{prefix}{key}."))
    return found


def shown_type(spec: dict[str, Any]) -> str:
    kind = spec["type"]
    return " or ".join(kind) if isinstance(kind, list) else kind


def assert_rows_match(rows: dict[str, tuple[str, str]], keys: dict[str, dict[str, Any]]) -> None:
    assert set(rows) == set(keys), "every schema key documented, nothing else"
    for key, spec in keys.items():
        doc_type, doc_default = rows[key]
        assert doc_type == shown_type(spec), key
        assert json.loads(doc_default) == spec["default"], key


def test_doc_reference_table_matches_the_schema_exactly() -> None:
    assert_rows_match(doc_reference_rows(), schema_keys())


def test_instagram_doc_reference_table_matches_the_instagram_keys_exactly() -> None:
    keys = {k: v for k, v in schema_keys().items() if k.startswith("instagram")}
    assert set(keys) == {"instagram", "instagram.enabled", "instagram.accountId", "instagram.iceBreakers"}
    assert_rows_match(doc_reference_rows(INSTAGRAM_DOC), keys)


def test_instagram_doc_names_the_setup_it_needs() -> None:
    text = INSTAGRAM_DOC.read_text(encoding="utf-8")
    for needle in ("<EXTERNAL_URL>/api/v1/bots/___/mod/channel-messenger/webhook", "instagram_manage_messages",
                   "instagram_basic", "pages_messaging", "messaging_postbacks", '"object": "instagram"',
                   "instagram_business_account", "data/bots/welcome-bot/config/channel-messenger.json"):
        assert needle in text, needle


def test_doc_names_the_webhook_url_and_files() -> None:
    text = DOC.read_text(encoding="utf-8")
    for needle in ("<EXTERNAL_URL>/api/v1/bots/___/mod/channel-messenger/webhook",
                   "data/global/config/channel-messenger.json", "data/bots/welcome-bot/config/channel-messenger.json",
                   "messaging_postbacks", "invalid signature", "verifyToken"):
        assert needle in text
