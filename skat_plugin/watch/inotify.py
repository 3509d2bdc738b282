"""inotify(7), the little the daemon needs: watch directories, read what changed in them.

The standard library has no inotify, and none of the project's libraries wraps it, so the
three system calls are reached through ctypes. A directory is watched rather than a file:
the files of interest are replaced by rename (atomicfile.py, keepalived's pid files) or
appear later, and a watch on a file would follow the old inode.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

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
# What replaces, writes or removes a file in a directory.
CHANGES = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Inotify:
    def __init__(self) -> None:
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        self.dirs: dict[int, Path] = {}

    def watch(self, directory: Path, mask: int = CHANGES) -> bool:
        """Watch a directory; False when it does not exist (yet)."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), mask)
        if wd < 0:
            return False
        self.dirs[wd] = directory
        return True

    def fileno(self) -> int:
        return self.fd

    def read(self) -> list[tuple[Path | None, str, int]]:
        """(directory, file name, mask) of every pending event; (None, "", mask) for a queue
        overflow (then anything may have changed)."""
        events: list[tuple[Path | None, str, int]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & IN_IGNORED:
                    self.dirs.pop(wd, None)
                    continue
                name = os.fsdecode(raw.rstrip(b"\0"))
                events.append((self.dirs.get(wd), name, mask))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
