"""A disabled bot is still known to the modules: on_bot_disabled, and events stored for it until it is enabled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botpress_py.testing import make_bot, run_server, wait_for


async def test_hook_on_bot_disabled_at_start_and_at_runtime_with_a_context_whose_events_wait(
        data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha", module_configs={"echo": {"greeting": "alpha hi"}})
    make_bot(data_dir, "gamma", disabled=True, module_configs={"echo": {"greeting": "gamma hi"}})
    (data_dir / "bots" / "gamma" / "echo-while-disabled.txt").write_text("hello", encoding="utf-8")
    async with run_server(data_dir, env, modules=["echo"]) as srv:
        assert ("on_bot_disabled", "gamma") in echo.CALLS and ("on_bot_disabled", "alpha") not in echo.CALLS
        assert ("on_bot_mount", "gamma") not in echo.CALLS
        assert await srv.storage.kv_get("echo:bot:gamma", "disabledWithGreeting") == "gamma hi", \
            "the context carries the bot's resolved config"
        assert await srv.storage.inbox_pending_counts() == {"gamma": 1}, "received while disabled: stored, waiting"
        assert echo.SENT == []

        await srv.registry.set_disabled("gamma", False)
        await wait_for(lambda: [s for s in echo.SENT if s["bot"] == "gamma"])
        assert [s["payload"]["text"] for s in echo.SENT if s["bot"] == "gamma"] == ["gamma hi"]
        assert await srv.storage.inbox_pending_counts() == {}

        echo.CALLS.clear()
        await srv.registry.set_disabled("alpha", True)
        hooks = [call for call in echo.CALLS if call[1] == "alpha"]
        assert hooks == [("on_bot_unmount", "alpha"), ("on_bot_disabled", "alpha")], \
            "disabled at runtime: unmounted, then told with a fresh context"
        assert await srv.storage.kv_get("echo:bot:alpha", "disabledWithGreeting") == "alpha hi"
