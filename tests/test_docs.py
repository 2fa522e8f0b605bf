"""The docs stay true to the code: config keys and defaults, bot keys, SDK names, links."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from botpress_py import sdk
from botpress_py.bots import BOT_CONFIG_SCHEMA
from botpress_py.config.server_config import SERVER_CONFIG_SCHEMA

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
CONFIGURATION_MD = DOCS / "configuration.md"
MODULES_MD = DOCS / "modules.md"


def schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every key of an object schema as a dotted path; items of a list of objects as ``list[].key``."""
    for key, sub in (schema.get("properties") or {}).items():
        path = prefix + key
        yield path, sub
        if sub.get("type") == "object":
            yield from schema_paths(sub, path + ".")
        items = sub.get("items")
        if sub.get("type") == "array" and isinstance(items, dict) and items.get("type") == "object":
            yield from schema_paths(items, path + "[].")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    in_code = False
    for end in range(start, len(lines)):
        if lines[end].startswith("```"):
            in_code = not in_code
        match = re.match(r"(#+) ", lines[end])
        if match and not in_code and len(match.group(1)) <= level:
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])


def table_rows(text: str) -> dict[str, str]:
    """Table rows by the code name in their first cell: ``| `httpServer.port` | ... |``."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} has two rows"
            rows[match.group(1)] = line
    return rows


SERVER_PATHS = dict(schema_paths(SERVER_CONFIG_SCHEMA))
SERVER_ROWS = table_rows(section(CONFIGURATION_MD.read_text(encoding="utf-8"), "### Every setting"))
BOT_KEYS = {k: v for k, v in BOT_CONFIG_SCHEMA["properties"].items() if k != "$schema"}
BOTS_MD = DOCS / "bots.md"
BOT_ROWS = table_rows(section(BOTS_MD.read_text(encoding="utf-8"), "## bot.config.json"))


def assert_row_matches(row: str, name: str, sub: dict[str, Any]) -> None:
    if "type" in sub:
        assert sub["type"] in row, f"row of {name} should give its type {sub['type']!r}: {row}"
    if "default" in sub:
        rendered = f"`{json.dumps(sub['default'])}`"
        assert rendered in row, f"row of {name} should give its default as {rendered}: {row}"


@pytest.mark.parametrize("path", sorted(SERVER_PATHS))
def test_every_server_config_key_is_documented_with_its_default(path: str) -> None:
    assert path in SERVER_ROWS, f"docs/configuration.md 'Every setting' table has no row for `{path}`"
    assert_row_matches(SERVER_ROWS[path], path, SERVER_PATHS[path])


def test_server_config_table_names_only_real_keys() -> None:
    unknown = set(SERVER_ROWS) - set(SERVER_PATHS)
    assert not unknown, f"docs/configuration.md documents keys the schema lacks: {unknown}"


@pytest.mark.parametrize("key", sorted(BOT_KEYS))
def test_every_bot_config_key_is_documented(key: str) -> None:
    assert key in BOT_ROWS, f"docs/bots.md 'bot.config.json' table has no row for `{key}`"
    assert_row_matches(BOT_ROWS[key], key, BOT_KEYS[key])


def test_bot_config_table_names_only_real_keys() -> None:
    unknown = set(BOT_ROWS) - set(BOT_KEYS)
    assert not unknown, f"docs/bots.md documents bot keys the schema lacks: {unknown}"


@pytest.mark.parametrize("name", sdk.__all__)
def test_every_sdk_name_is_documented(name: str) -> None:
    text = MODULES_MD.read_text(encoding="utf-8")
    assert re.search(r"`" + re.escape(name) + r"\b", text), f"docs/modules.md never mentions `{name}`"


# -- links ---------------------------------------------------------------------------------------
MARKDOWN_FILES = [REPO_ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def without_code(text: str) -> str:
    """Drop fenced code blocks and inline code: brackets in code are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(text: str) -> set[str]:
    """The heading anchors GitHub generates for a Markdown file."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in re.sub(r"^```.*?^```", "", text, flags=re.S | re.M).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", without_code(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_point_to_existing_files_and_headings(path: Path) -> None:
    broken = []
    for link in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):
            continue  # https:, mailto: ...
        target_part, _, anchor = link.partition("#")
        target = (path.parent / target_part).resolve() if target_part else path
        if not target.exists():
            broken.append(f"{link} (no file {target})")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{link} (no heading #{anchor} in {target.name})")
    assert not broken, f"broken links in {path.relative_to(REPO_ROOT)}: {broken}"


def test_docs_index_lists_every_doc() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for doc in sorted(DOCS.rglob("*.md")):
        if doc.name != "README.md":
            assert f"({doc.relative_to(DOCS).as_posix()})" in index, f"docs/README.md does not link {doc.name}"


# -- /metrics ------------------------------------------------------------------------------------
OPERATIONS_MD = DOCS / "operations.md"


def documented_metrics() -> dict[str, tuple[str, str]]:
    """Metric name -> (type, source: "core" or a module), from docs/operations.md "Metrics reference"."""
    rows = table_rows(section(OPERATIONS_MD.read_text(encoding="utf-8"), "## Metrics reference"))
    cells = {name: [c.strip() for c in re.split(r"(?<!\\)\|", row)] for name, row in rows.items()}
    return {name: (c[2], c[4]) for name, c in cells.items()}


async def test_every_metric_a_real_server_serves_is_documented_and_no_other(tmp_path: Path) -> None:
    """A server with every bundled module: the core's metrics and each module's (made when it starts)."""
    import aiohttp

    from botpress_py.testing import make_bot, run_server

    modules = sorted(p.name for p in (REPO_ROOT / "modules").iterdir() if (p / "module.json").is_file())
    data = tmp_path / "data"
    make_bot(data, "alpha")
    async with run_server(data, {}, modules=modules) as server, aiohttp.ClientSession() as http, \
            http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    served = dict(re.findall(r"^# TYPE (bp_\S+) (\S+)$", text, re.M))
    documented = documented_metrics()
    assert {name: documented.get(name, ("undocumented", ""))[0] for name in served} == served
    assert set(documented) <= set(served), f"documented but not served: {set(documented) - set(served)}"
    sources = {source for _, source in documented.values()}
    assert sources <= {"core", *modules}, f"unknown sources in the metrics table: {sources - {'core', *modules}}"


# -- citations -----------------------------------------------------------------------------------
# Files allowed to name the outside design file (none now); the list only shrinks.
# The outside design file's name, spelt so that this test does not cite it itself.
DESIGN_FILE = "DESIGN" + ".md"
DESIGN_CITES_ELSEWHERE: set[str] = set()


def test_the_code_cites_the_docs_in_the_repository_not_a_design_file_outside_it() -> None:
    citing = set()
    for path in REPO_ROOT.rglob("*"):
        if not path.is_file() or {".git", ".venv", "__pycache__", "node_modules"} & set(path.parts) \
                or path.suffix not in {".py", ".md", ".toml", ".json", ".js", ".cfg", ".txt", ""}:
            continue
        if DESIGN_FILE in path.read_text(encoding="utf-8", errors="replace"):
            citing.add(str(path.relative_to(REPO_ROOT)))
    gitignore = (REPO_ROOT / ".gitignore").read_text(encoding="utf-8")
    assert DESIGN_FILE not in gitignore
    assert citing - DESIGN_CITES_ELSEWHERE == set()
    assert DESIGN_CITES_ELSEWHERE - citing == set(), "a file stopped citing the design file: drop it from the list"


def test_the_sample_alert_rules_use_only_documented_metrics() -> None:
    text = (DOCS / "alerts.yml").read_text(encoding="utf-8")
    documented = documented_metrics()
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\bbp_[a-z0-9_]+", text)}
    assert used and used <= set(documented), f"alerts.yml uses undocumented metrics: {used - set(documented)}"
    assert text.count("- alert:") == text.count("expr:") > 5
    assert "(alerts.yml)" in OPERATIONS_MD.read_text(encoding="utf-8")
