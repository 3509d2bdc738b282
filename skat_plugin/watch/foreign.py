"""Frames from another master, as the kernel reports them: the split-brain event source.

nft/master.nft logs each frame that arrives from the virtual MAC (at most 10 a second) to
NFLOG group render.SPLIT_BRAIN_GROUP. This source binds that group, metadata only, and
hands the frames to splitbrain.Watch; its one deadline is the moment the alarm clears.
While not master (or master by the start rule alone, awaiting the election) it ignores
them: another master is expected then.

A group has one listener per network namespace. If it is taken (ulogd configured with the
same group, say), the source says why in `fallback` and reads the counter every
splitbrain.POLL seconds while master instead: slower to see, never blind.

Neither python3-nftables nor pyroute2 speaks NFLOG, so the socket is plain netlink: one
configuration message (bind, copy metadata, deliver each message at once) and the
messages' headers and in-port attribute read.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

from ..election.splitbrain import POLL, Change, Watch
from ..nfnetlink import HEADER, NFGEN, NFNL_SUBSYS_ULOG, attr, attrs, messages, netfilter_socket
from . import Source

NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_META = 1
NFULA_IFINDEX_INDEV = 4
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4


def _bind(group: int) -> socket.socket:
    """A socket on NFLOG `group`; OSError (EBUSY: taken, EPERM: not root) if it cannot be."""
    sock = netfilter_socket(1 << 18)
    try:
        body = (NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(group))
                + attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND]))
                + attr(NFULA_CFG_MODE, struct.pack(">IBB", 0, NFULNL_COPY_META, 0))
                + attr(NFULA_CFG_QTHRESH, struct.pack(">I", 1)))  # no batching: at once
        kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        sock.send(HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
                  + body)
        sock.settimeout(1.0)
        answer = sock.recv(4096)
        sock.setblocking(False)
        _len, kind, _flags, _seq, _pid = HEADER.unpack_from(answer)
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", answer, HEADER.size)[0]
            if code:
                raise OSError(code, f"NFLOG group {group}: {errno.errorcode.get(code, code)}")
    except BaseException:
        sock.close()
        raise
    return sock


def _in_ports(data: bytes) -> tuple[int, set[str]]:
    """(how many frames, the names of the ports they came in on) in a batch of messages."""
    frames, ports = 0, set()
    for kind, offset, length in messages(data):
        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            continue
        frames += 1
        start = offset + HEADER.size + NFGEN.size
        for kind, payload in attrs(data, start, offset + length):
            if kind == NFULA_IFINDEX_INDEV and len(payload) >= 4:
                index = struct.unpack_from(">I", payload)[0]
                try:
                    ports.add(socket.if_indextoname(index))
                except OSError:
                    ports.add(f"ifindex {index}")
    return frames, ports


class ForeignFrames(Source):
    """on_change(change, watch) when the alarm is raised or cleared; read_counter() is the
    polling fallback's look at foreign_master_frames."""

    def __init__(self, group: int, on_change: Callable[[Change, Watch], None],
                 read_counter: Callable[[], int | None]) -> None:
        self.on_change = on_change
        self.read_counter = read_counter
        self.watch = Watch()
        self.looking = False
        self.poll_at: float | None = None
        self.fallback: str | None = None  # why the counter is polled instead
        self.sock: socket.socket | None = None
        try:
            self.sock = _bind(group)
        except OSError as e:
            self.fallback = (f"cannot listen on NFLOG group {group} ({e.strerror or e}); "
                             f"reading the counter every {POLL:g} s instead")

    def look(self, on: bool, now: float) -> None:
        """Master, elected: frames from the virtual MAC are an alarm. Otherwise they are
        not, and an alarm on ends without a word (the role that saw it is gone)."""
        if on == self.looking:
            return
        self.looking = on
        self.watch.reset()
        self.poll_at = now if on and self.sock is None else None

    def fds(self) -> list[int]:
        return [self.sock.fileno()] if self.sock else []

    def handle(self, fd: int, now: float) -> None:
        frames, ports = 0, set()
        while self.sock:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: more came than the buffer held
                frames += 1
                continue
            n, p = _in_ports(data)
            frames, ports = frames + n, ports | p
        if frames and self.looking:
            self._changed(self.watch.seen(frames, now, ports))

    def next_due(self) -> float | None:
        due = [t for t in (self.watch.clears_at(), self.poll_at) if t is not None]
        return min(due) if due else None

    def run(self, now: float) -> None:
        if self.poll_at is not None and now >= self.poll_at:
            self.poll_at = now + POLL
            self._changed(self.watch.counted(self.read_counter(), now))
        elif (at := self.watch.clears_at()) is not None and now >= at:
            self._changed(self.watch.seen(0, now))

    def _changed(self, change: Change) -> None:
        if change.raised or change.cleared:
            self.on_change(change, self.watch)

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None
