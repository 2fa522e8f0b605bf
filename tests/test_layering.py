"""The layers hold: no import cycles, modules use only the SDK, the core names no module.

Imports are read with ``ast`` from every Python file of ``botpress_py/`` and ``modules/``, at
module level and inside functions alike (a function-level import that closes a circle still
ties the two files together). Imports under ``if TYPE_CHECKING:`` are left out: they never
run, so they cannot make an import order matter, and they are how a file names the types of
another (hookspecs.py names BotContext) without depending on it at run time.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE = REPO_ROOT / "botpress_py"
MODULES = REPO_ROOT / "modules"
MAX_LINES = 500

# What a module's own tests may import of the core besides the SDK: the test helpers.
TEST_HELPERS = {"botpress_py.testing", "botpress_py.browser_testing"}
# Test helpers of the core write sample files of modules for tests (make_bot(qna=...)): they are not core logic.
NOT_CORE_LOGIC = {CORE / "testing.py", CORE / "browser_testing.py"}
# Imports of modules' tests that are being replaced on another branch: each entry must still exist, so the
# list only shrinks. Empty: modules' tests use the SDK and the test helpers only.
PENDING_ELSEWHERE: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    target: str  # dotted name, resolved for relative imports


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts and "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    """The dotted name a file is imported as: botpress_py.x.y, or a module's package (its folder is on sys.path)."""
    if CORE not in path.parents and MODULES not in path.parents:
        return path.stem
    if CORE in path.parents:
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    else:
        # modules/<module>/<package>/x.py -> package.x; modules/<module>/tests/t.py -> t (pytest importlib mode)
        rel = path.relative_to(MODULES).with_suffix("").parts[1:]
        parts = rel[1:] if rel[0] == "tests" else rel
        if "fixtures" in rel:
            parts = rel[rel.index("fixtures") + 2:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if node.lineno in skip if hasattr(node, "lineno") else False:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            yield Import(path, node.lineno, base)
            for alias in node.names:  # "from pkg import submodule" imports pkg.submodule
                yield Import(path, node.lineno, f"{base}.{alias.name}")


CORE_FILES = python_files(CORE)
MODULE_FILES = python_files(MODULES)
KNOWN = {module_name(p): p for p in CORE_FILES + MODULE_FILES}


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in KNOWN}
    for path in CORE_FILES + MODULE_FILES:
        for found in imports(path):
            if found.target in KNOWN and found.target != module_name(path):
                edges[module_name(path)].add(found.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


# Circles being broken on another branch (the Messenger module's layout); the list only shrinks.
CYCLES_ELSEWHERE: list[list[str]] = []


def test_no_import_cycles_in_the_core_or_the_modules() -> None:
    found = cycles(graph())
    assert [c for c in found if c not in CYCLES_ELSEWHERE] == []
    assert [c for c in CYCLES_ELSEWHERE if c not in found] == [], "a circle is broken: delete it from CYCLES_ELSEWHERE"


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_read_at_every_level_but_not_under_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hidden\n"
                      "def f():\n    import inner\n    from . import sibling\n")
    names = {i.target for i in imports(source) if i.target}
    assert "inner" in names and "hidden" not in names


# -- modules use the SDK only --------------------------------------------------------------------
def module_packages() -> dict[str, str]:
    """Python package of every module folder (fixtures included) -> the module folder it belongs to."""
    packages: dict[str, str] = {}
    for manifest in MODULES.rglob("module.json"):
        try:
            entry = json.loads(manifest.read_text(encoding="utf-8"))["entry"]
        except (ValueError, KeyError):
            continue
        packages[entry.split(".")[0]] = str(manifest.parent.relative_to(REPO_ROOT))
    for manifest in (REPO_ROOT / "tests" / "fixtures" / "modules").rglob("module.json"):
        try:
            packages[json.loads(manifest.read_text(encoding="utf-8"))["entry"].split(".")[0]] = "tests fixture"
        except (ValueError, KeyError):
            continue
    return packages


def owner(path: Path) -> str:
    """The module folder a file belongs to (a fixture module inside tests/fixtures is its own module)."""
    rel = path.relative_to(REPO_ROOT).parts
    if "fixtures" in rel:
        return "/".join(rel[: rel.index("fixtures") + 2])
    return "/".join(rel[:2])


def module_import_problems() -> list[str]:
    packages = module_packages()
    problems: dict[tuple[str, int], str] = {}  # (file, line) -> the first bad import on it
    for path in MODULE_FILES:
        rel = str(path.relative_to(REPO_ROOT))
        is_test = "tests" in path.relative_to(MODULES).parts and "fixtures" not in path.parts
        allowed = {"botpress_py.sdk"} | (TEST_HELPERS if is_test else set())
        for found in imports(path):
            top = found.target.split(".")[0]
            if top == "botpress_py":
                if found.target == "botpress_py" or found.target in allowed or \
                        any(found.target.startswith(a + ".") for a in allowed):
                    continue
                if (rel, found.target) not in PENDING_ELSEWHERE:
                    problems.setdefault((rel, found.line), f"{rel}:{found.line} imports {found.target}")
            elif top in packages and packages[top] not in (owner(path), "tests fixture") and \
                    not packages[top].startswith(owner(path)):
                problems.setdefault((rel, found.line), f"{rel}:{found.line} imports {top}, the package of "
                                                       f"{packages[top]}")
    return list(problems.values())


def test_modules_import_only_the_sdk_and_never_each_other() -> None:
    assert module_import_problems() == []


def test_imports_waiting_on_another_branch_are_still_there() -> None:
    """Remove an entry of PENDING_ELSEWHERE as soon as its import is gone: the list only shrinks."""
    for rel, target in PENDING_ELSEWHERE:
        found = {i.target for i in imports(REPO_ROOT / rel)} if (REPO_ROOT / rel).exists() else set()
        assert target in found, f"{rel} no longer imports {target}: delete it from PENDING_ELSEWHERE"


# -- the core names no module --------------------------------------------------------------------
def module_names() -> set[str]:
    """Every module's folder, manifest name, package and declared channels (fixtures of tests excluded)."""
    names: set[str] = set()
    for manifest in MODULES.glob("*/module.json"):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        names |= {manifest.parent.name, data["name"], data["entry"].split(".")[0], *data.get("channels", [])}
    return names


def strings_of(path: Path) -> Iterator[tuple[int, str]]:
    """String constants of a file, docstrings left out (they may give examples)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def core_naming_problems(files: list[Path], names: set[str]) -> list[str]:
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
                         + r")(?![\w-])")
    problems = []
    for path in files:
        rel = path.relative_to(REPO_ROOT) if REPO_ROOT in path.parents else path.name
        bad_lines = sorted({(i.line, i.target.split(".")[0]) for i in imports(path) if i.target.split(".")[0] in names})
        problems += [f"{rel}:{line} imports {top}" for line, top in bad_lines]
        if path in NOT_CORE_LOGIC:
            continue
        for line, text in strings_of(path):
            match = pattern.search(text)
            # A bare channel name like "web" is a common word: only a whole string equal to it counts.
            if match and (len(match.group(1)) > 3 or text == match.group(1)):
                problems.append(f"{rel}:{line} names module {match.group(1)!r} in {text!r}")
    return problems


def test_the_core_names_no_module() -> None:
    assert core_naming_problems(CORE_FILES, module_names()) == []


def test_naming_a_module_in_the_core_is_found(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""Docstrings may say qna."""\nimport botpress_qna\nDEFAULT = "messenger"\n'
                   'HINT = "see the channel-web module"\nOK = "a web page"\nCHANNEL = "web"\n')
    assert core_naming_problems([bad], {"qna", "botpress_qna", "messenger", "channel-web", "web"}) == [
        "bad.py:2 imports botpress_qna",
        "bad.py:3 names module 'messenger' in 'messenger'",
        "bad.py:4 names module 'channel-web' in 'see the channel-web module'",
        "bad.py:6 names module 'web' in 'web'",
    ]


# -- file size -------------------------------------------------------------------------------------
# Files being split on other branches (storage internals, the Messenger module's layout). Each must still
# be over the limit: once split, its entry goes.
SPLIT_ELSEWHERE: set[str] = set()
SIZED_FILES = CORE_FILES + [p for p in MODULE_FILES if "tests" not in p.relative_to(MODULES).parts]


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("path", [p for p in SIZED_FILES if str(p.relative_to(REPO_ROOT)) not in SPLIT_ELSEWHERE],
                         ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_file_of_the_core_or_a_module_is_over_500_lines(path: Path) -> None:
    lines = line_count(path)
    assert lines <= MAX_LINES, f"{path.relative_to(REPO_ROOT)} has {lines} lines: split it by responsibility"


@pytest.mark.parametrize("rel", sorted(SPLIT_ELSEWHERE))
def test_files_being_split_elsewhere_are_still_long(rel: str) -> None:
    path = REPO_ROOT / rel
    assert path.exists() and line_count(path) > MAX_LINES, f"{rel} is split now: delete it from SPLIT_ELSEWHERE"
