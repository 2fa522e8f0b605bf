"""Lines typed on standard input, read on the event loop that also runs the server.

A thread blocked in ``input()`` could not be stopped when the server stops (Ctrl+C would wait
for the next Enter), and a file descriptor put in non-blocking mode would make the terminal's
other streams fail with EAGAIN: so the loop watches the descriptor (``add_reader``) and reads
what is ready with one ``os.read``. A regular file or ``/dev/null`` cannot be watched; it never
blocks either, so it is read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TextIO

CHUNK = 65536
MAX_LINE = 65536  # bytes: a longer run without a newline is cut into lines of this size


class StdinLines:
    """``await lines.readline()``: the next line without its end, or None at end of input."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._fd: int | None = None
        self._buffer = b""
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._watching = False

    def start(self) -> None:
        try:
            self._fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._lines.put_nowait(None)  # no input at all (closed, or not a file): end of input
            return
        try:
            asyncio.get_running_loop().add_reader(self._fd, self._readable)
            self._watching = True
        except (PermissionError, OSError, ValueError):
            while self._read_once():  # a regular file: every read returns at once
                pass

    def close(self) -> None:
        if self._watching and self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
        self._watching = False

    async def readline(self) -> str | None:
        return await self._lines.get()

    def _readable(self) -> None:
        if not self._read_once():
            self.close()

    def _read_once(self) -> bool:
        """Read what is there; False at end of input (the rest, unterminated, still counts as a line)."""
        assert self._fd is not None
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            if self._buffer:
                self._lines.put_nowait(self._decode(self._buffer))
                self._buffer = b""
            self._lines.put_nowait(None)
            return False
        *complete, self._buffer = (self._buffer + data).split(b"\n")
        while len(self._buffer) > MAX_LINE:
            complete.append(self._buffer[:MAX_LINE])
            self._buffer = self._buffer[MAX_LINE:]
        for line in complete:
            self._lines.put_nowait(self._decode(line))
        return True

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", errors="replace").rstrip("\r")
