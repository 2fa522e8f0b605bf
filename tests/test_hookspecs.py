"""Every hook is documented and exercised by a test (datasette's meta-tests)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from botpress_py import hookspecs
from botpress_py.loader import DEPRECATED_HOOKS

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "botpress_py_spec")]


def test_hooks_are_found() -> None:
    assert {"on_server_started", "on_bot_mount", "on_incoming", "on_outgoing"} <= set(HOOKS)


def test_every_hookspec_has_a_docstring() -> None:
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 20, f"hook {name} needs a docstring"


def test_every_hookspec_is_exercised_by_a_test() -> None:
    """A test named test_hook_<hook>... exists for each hook, and the echo fixture implements it."""
    tests_dir = Path(__file__).parent
    names: set[str] = set()
    for path in tests_dir.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
    echo_source = (tests_dir / "fixtures/modules/echo/echo_module/__init__.py").read_text()
    for hook in HOOKS:
        assert any(n.startswith(f"test_hook_{hook}") for n in names), f"no test_hook_{hook}* test"
        if hook in DEPRECATED_HOOKS:
            continue  # exercised by the legacy-hooks fixture module instead
        assert f"def {hook}(" in echo_source, f"the echo fixture module does not implement {hook}"


def test_every_hook_is_documented_in_docs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "modules.md").read_text()
    for hook in HOOKS:
        assert f"`{hook}" in docs, f"docs/modules.md does not document {hook}"
