"""docs/bots.md documents every key of qna.json and of the qna module's settings, with the schemas' defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1]
BOTS_MD = MODULE_DIR.parents[1] / "docs" / "bots.md"
QNA_SCHEMA = json.loads((MODULE_DIR / "qna.schema.json").read_text(encoding="utf-8"))
CONFIG_SCHEMA = json.loads((MODULE_DIR / "config.schema.json").read_text(encoding="utf-8"))


def section(heading: str) -> str:
    text = BOTS_MD.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    level = heading.split()[0]
    end = re.search(rf"^#{{1,{len(level)}}} ", text[start:], re.M)
    return text[start:start + end.start()] if end else text[start:]


def rows(text: str) -> dict[str, str]:
    """Table rows by the code name in their first cell."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^\|\s*`([^`]+)`\s*\|.*$", text, re.M)}


KEY_ROWS = rows(section("### Every key"))
SETTING_ROWS = rows(section("### The qna module's settings"))
ENTRY_KEYS = QNA_SCHEMA["$defs"]["entry"]["properties"]


@pytest.mark.parametrize("key", [*QNA_SCHEMA["properties"], *ENTRY_KEYS])
def test_every_key_of_qna_json_is_documented(key: str) -> None:
    assert key in KEY_ROWS, f"docs/bots.md 'Every key' has no row for `{key}`"


def test_the_qna_json_tables_name_only_real_keys() -> None:
    assert set(KEY_ROWS) == set(QNA_SCHEMA["properties"]) | set(ENTRY_KEYS)


@pytest.mark.parametrize("key", sorted(CONFIG_SCHEMA["properties"]))
def test_every_setting_of_the_qna_module_is_documented_with_its_default(key: str) -> None:
    assert key in SETTING_ROWS, f"docs/bots.md 'The qna module's settings' has no row for `{key}`"
    default = f"`{json.dumps(CONFIG_SCHEMA['properties'][key]['default'])}`"
    assert default in SETTING_ROWS[key], f"the row of `{key}` should give its default {default}"


def test_the_settings_table_names_only_real_settings() -> None:
    assert set(SETTING_ROWS) <= set(CONFIG_SCHEMA["properties"])


def test_the_example_in_the_docs_is_a_valid_qna_file() -> None:
    from botpress_qna import check_document

    example = re.search(r"^## qna\.json\n.*?^```json\n(.*?)^```", BOTS_MD.read_text(encoding="utf-8"), re.S | re.M)
    assert example is not None
    assert check_document(json.loads(example.group(1)), "docs/bots.md") == []
