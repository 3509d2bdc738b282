"""The subscriber-table sync in one process, without a kernel: TableSync objects joined by an
in-memory link that can lose datagrams, and a table that lives in a dict.

    net = Link(loss=0.05)
    a = net.node("192.0.2.1", master=True, table=pairs)   # its map holds `pairs`
    b = net.node("192.0.2.2")
    net.run(until=lambda: b.stored == dict(pairs))

Used by tests/test_sync_security.py (losses, a master's table) and bench/sync.py (how long
a full sync of 100,000 and 1,000,000 pairs takes, the kernel's store left out).
"""

from __future__ import annotations

import collections
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

from skat_plugin.config import Config
from skat_plugin.gateway import subscribers, sync, sync_master

KEY = bytes.fromhex("5a" * 32)
PORT = 23720


def config(**values: Any) -> Config:
    # No vrrp_interface: TableSync opens no socket of its own; Node gives it the link's.
    v = {"in_dev": ["i0"], "out_dev": ["o0"], "vrrp_enable": 1, "bras_terminate_l2": 1,
         "vrrp_sync_interval": 0.2, "vrrp_router_id": 51}
    v.update(values)
    return Config("sim", v)


def pairs(n: int, start: int = 1) -> list[tuple[str, str]]:
    return [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
             f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}")
            for i in range(start, start + n)]


class Socket:
    """What TableSync uses of a socket: sendto, recvfrom, fileno, close."""

    def __init__(self, link: Link, addr: str) -> None:
        self.link, self.addr = link, addr
        self.queue: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()

    def fileno(self) -> int:
        return 1000 + list(self.link.nodes).index(self.addr)

    def close(self) -> None:
        pass

    def sendto(self, data: bytes, dest: tuple[str, int]) -> int:
        target = dest[0]
        to = [a for a in self.link.nodes if a != self.addr] if target == sync_master.BROADCAST \
            else [target]
        for addr in to:
            self.link.datagrams += 1
            queue = self.link.nodes[addr].sock.queue if addr in self.link.nodes else None
            if queue is not None and self.link.rnd.random() >= self.link.loss \
                    and len(queue) < self.link.capacity:  # a socket buffer's worth
                queue.append((data, (self.addr, PORT)))
            else:
                self.link.dropped += 1
        return len(data)

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.queue:
            raise BlockingIOError
        return self.queue.popleft()


class Node:
    """One appliance: its TableSync, and its table (a dict) for the module's reads/writes."""

    def __init__(self, link: Link, addr: str, master: bool, table: list[tuple[str, str]],
                 **conf: Any) -> None:
        self.addr = addr
        self.table: dict[str, str] = dict(table)
        self.stored: dict[str, str] = {}   # what the sync wrote (a backup's dormant map)
        sender = hashlib.sha256(addr.encode()).digest()[:8]
        self.sync = sync.TableSync(config(**conf), sender_id=sender, key=link.key)
        self.sock = Socket(link, addr)
        self.sync.sock = self.sock  # type: ignore[assignment]
        self.sync.enabled = True
        self.sync.is_master = master
        self.paused = False  # a stalled process: its loop does not turn
        self.turns: list[float] = []  # seconds each turn of its loop took (handle + run)


class Link:
    def __init__(self, loss: float = 0.0, seed: int = 1, key: bytes = KEY,
                 capacity: int = 1 << 30) -> None:
        self.loss, self.key, self.capacity = loss, key, capacity
        self.rnd = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.datagrams = self.dropped = 0

    def node(self, addr: str, master: bool = False, table: list[tuple[str, str]] = (),
             **conf: Any) -> Node:
        self.nodes[addr] = Node(self, addr, master, list(table), **conf)
        return self.nodes[addr]

    def run(self, until: Callable[[], bool], timeout: float = 30.0) -> float:
        """Turn every node's loop, as the daemon does, until `until()` or the timeout;
        the seconds it took. The module's kernel access goes to each node's dicts."""
        start = time.monotonic()
        saved = subscribers.read, subscribers.read_fresh, subscribers.store
        try:
            while time.monotonic() - start < timeout:
                for node in self.nodes.values():
                    if node.paused:
                        continue
                    self._bind(node)
                    now = time.monotonic()
                    t0 = time.perf_counter()
                    node.sync.handle(node.sock.fileno(), now)
                    due = node.sync.next_due()
                    if due is not None and now >= due:
                        node.sync.run(now)
                    node.turns.append(time.perf_counter() - t0)
                if until():
                    break
                time.sleep(0.0002)
        finally:
            subscribers.read, subscribers.read_fresh, subscribers.store = saved
        return time.monotonic() - start

    @staticmethod
    def _bind(node: Node) -> None:
        def store(batch: list[tuple[str, str]]) -> int:
            node.stored.update(batch)
            return len(batch)

        subscribers.read = lambda family=None: [  # type: ignore[assignment]
            subscribers.Subscriber(ip, mac, 300) for ip, mac in node.table.items()]
        subscribers.read_fresh = lambda: []  # type: ignore[assignment]
        subscribers.store = store  # type: ignore[assignment]
