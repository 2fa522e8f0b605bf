"""A lean HTTP/1.1 load driver on raw asyncio protocols, for fixed-rate (open-loop) load.

wrk drives the closed-loop saturation runs; this drives the runs that need a fixed rate
(end to end, bot scale), which Debian's wrk cannot do. Requests are pre-built bytes written
to keep-alive connections; responses are parsed just enough to find the status and the end
of the body. Latency is measured from the *scheduled* send time, so a request that had to
wait for a free connection counts that wait (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast


@dataclass(slots=True)
class Outcome:
    index: int
    scheduled: float  # time.monotonic() the request was due
    sent: float  # when it was written to a connection
    done: float  # when its response was complete (or the connection failed)
    status: int  # HTTP status, 0 when the connection failed


class _Connection(asyncio.Protocol):
    def __init__(self, driver: HttpLoad) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: tuple[int, float, float] | None = None  # (index, scheduled, sent)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, index: int, scheduled: float, request: bytes) -> None:
        assert self.transport is not None
        self.current = (index, scheduled, time.monotonic())
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17 : line_end if line_end >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(self.buffer[9:12])
            del self.buffer[:total]
            index, scheduled, sent = self.current
            self.current = None
            self.driver._finished(self, Outcome(index, scheduled, sent, time.monotonic(), status))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.driver._lost(self)
        if self.current is not None:
            index, scheduled, sent = self.current
            self.current = None
            self.driver._record(Outcome(index, scheduled, sent, time.monotonic(), 0))


class HttpLoad:
    """Sends ``count`` requests (``make(i)`` builds request ``i``) at ``rate`` per second.

    At most ``max_connections`` keep-alive connections are opened; a request due while all
    are busy waits in a queue (its latency includes the wait).
    """

    def __init__(self, host: str, port: int, *, max_connections: int = 256) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.outcomes: list[Outcome] = []
        self.connections_lost = 0
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._queue: deque[tuple[int, float, bytes]] = deque()
        self._outstanding = 0
        self._all_done = asyncio.Event()
        self._on_outcome: Callable[[Outcome], None] | None = None

    # -- connection pool ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._queue and self._idle:
            conn = self._idle.pop()
            if not conn.usable:
                self._open.discard(conn)
                continue
            index, scheduled, request = self._queue.popleft()
            conn.send(index, scheduled, request)
        missing = min(len(self._queue), self.max_connections - len(self._open) - self._connecting)
        for _ in range(max(0, missing)):
            self._connecting += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self._connecting -= 1
            if self._queue:  # nobody listening: fail the oldest waiting request
                index, scheduled, _ = self._queue.popleft()
                now = time.monotonic()
                self._record(Outcome(index, scheduled, now, now, 0))
            return
        self._connecting -= 1
        if protocol.usable:
            self._open.add(protocol)
            self._idle.append(protocol)
        else:
            self.connections_lost += 1
        self._dispatch()

    def _finished(self, conn: _Connection, outcome: Outcome) -> None:
        self._idle.append(conn)
        self._record(outcome)
        self._dispatch()

    def _lost(self, conn: _Connection) -> None:
        self.connections_lost += 1
        self._open.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        if self._queue:
            self._dispatch()

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._outstanding -= 1
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        if self._outstanding == 0:
            self._all_done.set()

    def submit(self, index: int, scheduled: float, request: bytes) -> None:
        self._outstanding += 1
        self._all_done.clear()
        self._queue.append((index, scheduled, request))
        self._dispatch()

    # -- load shapes -----------------------------------------------------------------------------
    async def open_loop(self, make: Callable[[int], bytes], count: int, rate: float, *,
                        stop: asyncio.Event | None = None, drain_timeout: float = 60.0) -> list[Outcome]:
        """Request ``i`` is due at ``start + i / rate`` whatever the server does; bounded by ``count``."""
        start = time.monotonic() + 0.05
        index = 0
        while index < count and not (stop is not None and stop.is_set()):
            now = time.monotonic()
            while index < count and start + index / rate <= now:
                self.submit(index, start + index / rate, make(index))
                index += 1
            if index < count:
                await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))  # until the next is due
        await self.wait_all(drain_timeout)
        return self.outcomes

    async def closed_loop(self, make: Callable[[int], bytes], concurrency: int, *, count: int,
                          duration: float) -> list[Outcome]:
        """``concurrency`` requests in flight, each answer sends the next; bounded by count and time."""
        deadline = time.monotonic() + duration
        issued = 0

        def next_one(_: Outcome | None = None) -> None:
            nonlocal issued
            if issued < count and time.monotonic() < deadline:
                now = time.monotonic()
                self.submit(issued, now, make(issued))
                issued += 1

        self._on_outcome = next_one
        for _ in range(min(concurrency, count)):
            next_one()
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))  # the run length
        self._on_outcome = None
        await self.wait_all(30.0)
        return self.outcomes

    async def wait_all(self, timeout: float) -> bool:
        if self._outstanding == 0:
            return True
        try:
            await asyncio.wait_for(self._all_done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        self._open.clear()
        self._idle.clear()
