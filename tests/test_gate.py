"""The bot gate: which bots take events, and what an event in hand borrows of a mounted bot."""

from __future__ import annotations

import asyncio
from types import MappingProxyType

import pytest

from botpress_py.gate import BotGate, MountedBot, ShuttingDown
from botpress_py.testing import wait_for


def mounted(bot_id: str = "alpha") -> MountedBot:
    return MountedBot(bot_id, MappingProxyType({"id": bot_id}), MappingProxyType({}))


class Opened:
    def __init__(self) -> None:
        self.bots: list[str] = []

    def bot_opened(self, bot_id: str) -> None:
        self.bots.append(bot_id)


async def test_an_event_waits_for_its_bot_to_be_mounted_and_borrows_it() -> None:
    gate, listener = BotGate(), Opened()
    gate.add_listener(listener)
    gate.know("alpha")
    assert not gate.takes_events("alpha") and gate.knows("alpha")

    async def handle() -> MountedBot:
        async with gate.using("alpha") as bot:
            return bot

    waiting = asyncio.create_task(handle())
    await asyncio.sleep(0)
    assert not waiting.done()
    bot = mounted()
    gate.open(bot)
    assert await asyncio.wait_for(waiting, 2) is bot
    assert listener.bots == ["alpha"] and gate.takes_events("alpha")


async def test_closing_drains_the_events_in_hand_and_holds_new_ones_until_the_next_mount() -> None:
    gate = BotGate()
    gate.open(mounted())
    release = asyncio.Event()
    steps: list[str] = []

    async def slow_event() -> None:
        async with gate.using("alpha"):
            steps.append("started")
            await release.wait()
            steps.append("finished")

    first = asyncio.create_task(slow_event())
    await wait_for(lambda: steps == ["started"], 2)
    closing = asyncio.create_task(gate.close("alpha", drain_timeout=5))
    await asyncio.sleep(0)
    assert not gate.takes_events("alpha") and not closing.done()  # waits for the event in hand

    async def later_event() -> None:
        async with gate.using("alpha"):
            steps.append("later")

    later = asyncio.create_task(later_event())
    release.set()
    await asyncio.wait_for(closing, 2)
    assert steps == ["started", "finished"]  # the later event did not start on a closing bot
    assert gate.current("alpha") is not None  # its parts stay until the modules unmounted
    gate.release("alpha")
    assert gate.current("alpha") is None
    gate.open(mounted())
    await asyncio.wait_for(later, 2)
    await first
    assert steps == ["started", "finished", "later"]


async def test_a_drain_gives_up_after_its_deadline() -> None:
    gate = BotGate()
    gate.open(mounted())
    stuck = asyncio.Event()

    async def stuck_event() -> None:
        async with gate.using("alpha"):
            await stuck.wait()

    task = asyncio.create_task(stuck_event())
    await asyncio.sleep(0)
    await asyncio.wait_for(gate.close("alpha", drain_timeout=0.05), 2)
    stuck.set()
    await task


async def test_waiters_give_up_when_the_server_stops_or_the_bot_is_gone() -> None:
    gate = BotGate()
    gate.know("alpha")
    gate.know("beta")

    async def borrow(bot_id: str) -> None:
        async with gate.using(bot_id):
            pass

    gone = asyncio.create_task(borrow("beta"))
    await asyncio.sleep(0)
    gate.forget("beta")
    with pytest.raises(KeyError):
        await asyncio.wait_for(gone, 2)
    with pytest.raises(KeyError):
        await borrow("nobody")
    stopping = asyncio.create_task(borrow("alpha"))
    await asyncio.sleep(0)
    gate.shut()
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(stopping, 2)
