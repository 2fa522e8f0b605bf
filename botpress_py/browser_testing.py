"""Tests in a real browser: Debian's Chromium driven by Playwright, for any test of the project.

Playwright for Python is a test extra (``pip install -e '.[test]'``); the browser is the
system's (``apt-get install chromium``), never one Playwright downloads. Tests skip with
``browser_unavailable_reason()`` when either is missing.

    from botpress_py.browser_testing import browser_unavailable_reason, launch_browser

    pytestmark = pytest.mark.skipif(browser_unavailable_reason() is not None,
                                    reason=browser_unavailable_reason() or "")

    async with launch_browser() as browser:
        page = await browser.new_page()
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Headless and quiet: no sandbox (CI runs as root), no GPU, and nothing that reaches the network
# by itself (component updates, sync, first-run pages).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """``BP_CHROMIUM`` when set, else Debian's chromium, else one on PATH."""
    configured = os.environ.get("BP_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def browser_unavailable_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "no Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)"
    return None


@contextlib.asynccontextmanager
async def launch_browser(**launch: Any) -> AsyncIterator[Any]:
    """A headless Chromium (a playwright ``Browser``), closed on exit."""
    from playwright.async_api import async_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError(browser_unavailable_reason())
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS, **launch)
        try:
            yield browser
        finally:
            await browser.close()
