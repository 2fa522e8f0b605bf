"""config.schema.json is complete and valid, the manifest is right, and docs/channels/web.md matches the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from botpress_py.sdk import validate_instance

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]
DOC = REPO_ROOT / "docs" / "channels" / "web.md"
SCHEMA = json.loads((MODULE_DIR / "config.schema.json").read_text())


def schema_keys(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every key as a dotted path (nested objects included)."""
    found: dict[str, dict[str, Any]] = {}
    for key, spec in (schema.get("properties") or {}).items():
        found[prefix + key] = spec
        if spec.get("type") == "object":
            found.update(schema_keys(spec, f"{prefix}{key}."))
    return found


KEYS = schema_keys(SCHEMA)


def problems(config: dict[str, Any]) -> list[str]:
    schema = {k: v for k, v in SCHEMA.items() if k != "$schema"}
    return [p.pointer for p in validate_instance(config, schema, "channel-web.json")]


def test_manifest() -> None:
    manifest = json.loads((MODULE_DIR / "module.json").read_text())
    assert {k: manifest[k] for k in ("name", "entry", "kind")} == {"name": "channel-web", "entry": "channel_web",
                                                                    "kind": "channel"}
    assert manifest["description"] and manifest["version"]


def test_schema_is_valid_complete_and_closed() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["additionalProperties"] is False
    for key, spec in KEYS.items():
        assert "default" in spec and spec.get("description"), key
        if spec.get("type") == "object":
            assert spec["additionalProperties"] is False, key
            assert spec["default"] == {k: v["default"] for k, v in spec["properties"].items()}, key
    assert problems({k: v["default"] for k, v in SCHEMA["properties"].items()}) == []
    assert {"showBotInfoPage", "infoPage.enabled", "infoPage.description"} <= set(KEYS), "Botpress v12's keys"


@pytest.mark.parametrize(("config", "pointer"), [
    ({"enabled": "yes"}, "/enabled"),
    ({"infoPage": {"enabled": True, "descripton": "typo"}}, "/infoPage/descripton"),
    ({"maxMessageLength": 0}, "/maxMessageLength"),
    ({"maxMessagesHistory": 501}, "/maxMessagesHistory"),
    ({"extraStylesheet": "javascript:alert(1)"}, "/extraStylesheet"),
    ({"extraStylesheet": "//evil.example/x.css"}, "/extraStylesheet"),
    ({"rateLimit": {"perMinute": 0}}, "/rateLimit/perMinute"),
    ({"rateLimit": {"burst": 1.5}}, "/rateLimit/burst"),
    ({"showBotInfoPage": 1}, "/showBotInfoPage"),
])
def test_schema_rejects(config: dict[str, Any], pointer: str) -> None:
    assert pointer in problems(config)


def test_schema_accepts_real_configs() -> None:
    assert problems({"infoPage": {"enabled": True}, "extraStylesheet": "https://cdn.example.com/t.css"}) == []
    assert problems({"extraStylesheet": "/assets/modules/theme/chat.css", "rateLimit": {"perMinute": 0.5}}) == []


def doc_reference_rows() -> dict[str, tuple[str, str]]:
    """key -> (type, default) from the doc's "Config reference" table."""
    section = DOC.read_text(encoding="utf-8").split("## Config reference", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Za-z.]+)` \| (\w+) \| `(.*?)` \|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_doc_reference_table_matches_the_schema_exactly() -> None:
    rows = doc_reference_rows()
    assert set(rows) == set(KEYS), "every schema key documented, nothing else"
    for key, spec in KEYS.items():
        doc_type, doc_default = rows[key]
        assert doc_type == spec["type"], key
        assert json.loads(doc_default) == spec["default"], key


def test_doc_names_the_routes_files_and_api() -> None:
    text = DOC.read_text(encoding="utf-8")
    for needle in ("/s/<botId>", "/assets/modules/channel-web/inject.js", "window.botpressWebChat.init",
                   "POST /messages", "data/global/config/channel-web.json", "data/bots/<bot>/config/channel-web.json",
                   "data/secrets/channel-web.visitor-tokens.key", "4401", "4503", "clientMessageId"):
        assert needle in text, needle
    routes = {line.split("`")[1] for line in text.split("## REST API", 1)[1].split("\n## ", 1)[0].splitlines()
              if line.startswith("| `GET") or line.startswith("| `POST")}
    assert routes == {"GET /botInfo", "POST /visitors", "POST /conversations",
                      "GET /conversations/<id>/messages?limit=&before=&after=", "POST /messages", "GET /socket"}


def test_readme_first_minute_is_the_chat_page() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    first_minute = text.split("## Quickstart", 1)[0]
    assert "http://localhost:3000/s/welcome-bot" in first_minute and "emulator" not in first_minute
    assert '<script src="http://localhost:3000/assets/modules/channel-web/inject.js"></script>' in first_minute
    assert "window.botpressWebChat.init({ host: 'http://localhost:3000', botId: 'welcome-bot' })" in first_minute
    assert "docs/img/webchat-chat.png" in first_minute and (REPO_ROOT / "docs/img/webchat-chat.png").is_file()


def test_the_shipped_config_enables_the_module_and_welcome_bot_config_is_valid() -> None:
    shipped = json.loads((REPO_ROOT / "data/global/botpress.config.json").read_text())
    assert {"location": "MODULES_ROOT/channel-web", "enabled": True} in shipped["modules"]
    bot_file = REPO_ROOT / "data/bots/welcome-bot/config/channel-web.json"
    assert problems(json.loads(bot_file.read_text())) == []
