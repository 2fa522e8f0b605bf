"""Linux inotify through ctypes: which watched folders had something change in them.

The watcher (watcher.py) uses it as a hint only: a folder the kernel reports is scanned at the
next tick, and the polling scan still runs (slowly) for what the kernel cannot report (a network
share edited from another machine). No dependency: three libc calls and a fixed event layout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# Everything that can change what a folder holds or what a file in it says.
FOLDER_EVENTS = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
                 | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
_READ_SIZE = 256 * 1024


class InotifyUnavailable(Exception):
    """No inotify here (not Linux, no libc symbol, the per-user instance limit reached)."""


class WatchLimit(Exception):
    """The kernel refuses more watches (fs.inotify.max_user_watches): polling has to do."""


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None:
        raise InotifyUnavailable("no C library found")
    libc = ctypes.CDLL(name, use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        raise InotifyUnavailable("the C library has no inotify")
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


class FolderEvents:
    """One inotify instance watching folders (not recursively). ``on_event(folder, name, mask)`` is
    called for each event read by :meth:`read`; ``folder`` is None for a queue overflow (events were
    lost: the caller must look at everything)."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise InotifyUnavailable(f"inotify_init1: {os.strerror(code)}")
        self.fd = fd
        self._folders: dict[int, str] = {}  # watch descriptor -> folder
        self._by_folder: dict[str, int] = {}

    def add(self, folder: str) -> bool:
        """Watch ``folder``; False when it does not exist (or is not a folder). Raises WatchLimit."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), FOLDER_EVENTS)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOSPC, errno.ENOMEM):
                raise WatchLimit(f"cannot watch {folder}: {os.strerror(code)} (fs.inotify.max_user_watches)")
            return False
        self._folders[wd] = folder
        self._by_folder[folder] = wd
        return True

    def watching(self, folder: str) -> bool:
        return folder in self._by_folder

    @property
    def count(self) -> int:
        return len(self._folders)

    def read(self, on_event: Callable[[str | None, str, int], None]) -> None:
        """Read every pending event (non-blocking) and report each."""
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not data:
                return
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset:offset + length].rstrip(b"\0").decode("utf-8", "surrogateescape")
                offset += length
                if mask & IN_Q_OVERFLOW:
                    on_event(None, "", mask)
                    continue
                folder = self._folders.get(wd)
                if folder is None:
                    continue
                if mask & IN_IGNORED:  # the folder is gone (or moved away): its watch with it
                    del self._folders[wd]
                    if self._by_folder.get(folder) == wd:
                        del self._by_folder[folder]
                on_event(folder, name, mask)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._folders.clear()
        self._by_folder.clear()
