"""nf_tables over a raw netlink socket, for the few reads whose cost must not grow with a set.

libnftables answers every command from a cache it first fills from the kernel; for a
listing of a set or a counter that cache holds every element of the table's sets: with a
million learned subscribers one `list counter` took over a minute and a GiB of memory.
These reads ask the kernel for exactly one object instead:

    set_info(family, table, name)   a set's element count and size: O(1) where the kernel
                                    reports NFTA_SET_COUNT (Linux 6.16 and later), else
                                    counted from a streamed dump for at most COUNT_BUDGET
    counter(family, table, name)    one named counter's packets and bytes, O(1)
    counters(family, table)         every named counter of a table: name -> packets
    tables()                        (family, name) of every table
    table_flags(family, name)       a table's flags (DORMANT), None when it does not exist
    table_digest(family, name)      a table's definition (flags, chains, rules, sets and
                                    objects, never elements or counter values), hashed
    ElementDump                     a set's elements, streamed: read in bounded steps,
                                    resumed where the last step stopped

Nothing here writes: writes stay transactions of libnftables (libnft.py).
"""

from __future__ import annotations

import contextlib
import errno
import select
import struct
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

from .nfnetlink import (
    HEADER,
    NFNL_SUBSYS_NFTABLES,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attr,
    attrs,
    netfilter_socket,
    string,
)

MSG_GETTABLE, MSG_GETCHAIN, MSG_GETRULE = 1, 4, 7
MSG_GETSET, MSG_NEWSET = 10, 9
MSG_GETSETELEM = 13
MSG_GETOBJ = 19
FAMILIES = {"unspec": 0, "inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
FAMILY_NAMES = {number: name for name, number in FAMILIES.items()}

# Attribute numbers (include/uapi/linux/netfilter/nf_tables.h).
TABLE_NAME, TABLE_FLAGS = 1, 2
TABLE_FLAG_DORMANT = 0x1
CHAIN_TABLE, CHAIN_COUNTERS = 1, 8
RULE_TABLE, RULE_EXPRESSIONS = 1, 4
EXPR_NAME, EXPR_DATA = 1, 2
SET_TYPE = 19
SET_TABLE, SET_NAME, SET_DESC, SET_COUNT = 1, 2, 9, 20
SET_DESC_SIZE = 1
ELEM_LIST_TABLE, ELEM_LIST_SET, ELEM_LIST_ELEMENTS = 1, 2, 3
LIST_ELEM = 1
ELEM_KEY, ELEM_DATA = 1, 2
DATA_VALUE = 1
OBJ_TABLE, OBJ_NAME, OBJ_TYPE, OBJ_DATA = 1, 2, 3, 4
OBJECT_COUNTER = 1
COUNTER_BYTES, COUNTER_PACKETS = 1, 2

RECV_SIZE = 1 << 16  # the kernel fills a dump message up to about this (at most 64 KiB)


class NetlinkError(OSError):
    pass


def _first(data: bytes | memoryview, kind: int) -> memoryview | None:
    return next((v for k, v in attrs(data) if k == kind), None)


class _Socket:
    """One request at a time on its own socket; messages of the answer as they arrive."""

    def __init__(self) -> None:
        self.sock = netfilter_socket(blocking=True)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, msg_type: int, family: str, body: list[bytes], dump: bool) -> None:
        self.seq += 1
        payload = struct.pack("=BBH", FAMILIES[family], 0, 0) + b"".join(body)
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        self.sock.send(HEADER.pack(HEADER.size + len(payload), (NFNL_SUBSYS_NFTABLES << 8)
                                 | msg_type, flags, self.seq, 0) + payload)

    def messages_with_family(self) -> tuple[list[tuple[int, memoryview]], bool]:
        """messages(), each with the nfgen family of its object instead of its type."""
        msgs, done = self.messages(True, family=True)
        return msgs, done

    def messages(self, wait: bool = True,
                 family: bool = False) -> tuple[list[tuple[int, memoryview]], bool]:
        """One receive: its (type, payload) messages and whether the answer is complete.
        wait False: ([], False) at once when nothing is there yet."""
        if not wait and not select.select([self.sock], [], [], 0)[0]:
            return [], False
        data = memoryview(self.sock.recv(RECV_SIZE))
        out: list[tuple[int, memoryview]] = []
        i, done = 0, False
        while i + HEADER.size <= len(data):
            length, kind, _flags, seq, _pid = HEADER.unpack_from(data, i)
            if length < HEADER.size:
                break
            body = data[i + HEADER.size:i + length]
            i += (length + 3) & ~3
            if seq != self.seq:
                continue  # the tail of an answer given up on
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body, 0)[0]
                if code:
                    raise NetlinkError(code, errno.errorcode.get(code, str(code)))
                done = True  # the acknowledgement
            elif kind == NLMSG_DONE:
                done = True
            else:  # past struct nfgenmsg (its first byte is the object's family)
                out.append((body[0] if family else kind & 0xFF, body[4:]))
        return out, done

    def ask(self, msg_type: int, family: str, body: list[bytes]) -> list[memoryview]:
        """A request for one object: the payloads of its answer."""
        self.send(msg_type, family, body, dump=False)
        found: list[memoryview] = []
        while True:
            msgs, done = self.messages()
            found += [payload for _kind, payload in msgs]
            if done:
                return found


def _dump(msg_type: int, family: str, body: list[bytes]) -> list[tuple[int, memoryview]]:
    """Every (nfgen family, payload) of a dump (small ones only: tables, chains, rules)."""
    with _socket() as sock:
        sock.send(msg_type, family, body, dump=True)
        found: list[tuple[int, memoryview]] = []
        while True:
            msgs, done = sock.messages_with_family()
            found += msgs
            if done:
                return found


def tables() -> frozenset[tuple[str, str]]:
    """(family, name) of every table in the kernel."""
    found = set()
    for family, payload in _dump(MSG_GETTABLE, "unspec", []):
        name = _first(payload, TABLE_NAME)
        if name is not None and family in FAMILY_NAMES:
            found.add((FAMILY_NAMES[family], bytes(name).rstrip(b"\0").decode()))
    return frozenset(found)


def table_flags(family: str, name: str) -> int | None:
    """A table's flags (TABLE_FLAG_DORMANT); None when it does not exist."""
    try:
        with _socket() as sock:
            answer = sock.ask(MSG_GETTABLE, family, [string(TABLE_NAME, name)])
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    flags = _first(answer[0], TABLE_FLAGS) if answer else None
    return None if not answer else struct.unpack(">I", flags)[0] if flags is not None else 0


def counters(family: str, table: str) -> dict[str, int] | None:
    """Packets of every named counter of a table; None when the table does not exist."""
    if table_flags(family, table) is None:
        return None
    found = {}
    for _family, payload in _dump(MSG_GETOBJ, family, [
            string(OBJ_TABLE, table), attr(OBJ_TYPE, struct.pack(">I", OBJECT_COUNTER))]):
        values = {k: v for k, v in attrs(payload)}
        if OBJ_NAME in values and OBJ_DATA in values:
            data = {k: struct.unpack(">Q", v)[0] for k, v in attrs(values[OBJ_DATA])}
            found[bytes(values[OBJ_NAME]).rstrip(b"\0").decode()] = data.get(COUNTER_PACKETS, 0)
    return found


# What changes while the rules stay the same: element counts, the backend's name, a base
# chain's packet counts, and the state of stateful expressions and objects.
_VOLATILE = {MSG_GETSET: {SET_COUNT, SET_TYPE}, MSG_GETCHAIN: {CHAIN_COUNTERS},
             MSG_GETOBJ: {OBJ_DATA}}
_STATEFUL = (b"counter\0", b"quota\0", b"last\0", b"connlimit\0")


def _stable(kind: int, payload: memoryview) -> bytes:
    out = []
    for k, v in attrs(payload):
        if k in _VOLATILE.get(kind, ()):
            continue
        if kind == MSG_GETRULE and k == RULE_EXPRESSIONS:
            v = memoryview(b"".join(_stable_expr(e) for _k, e in attrs(v)))
        out.append(struct.pack("=H", k) + bytes(v))
    return b"".join(out)


def _stable_expr(expr: memoryview) -> bytes:
    """One rule expression, its data left out where it holds packet state."""
    name = _first(expr, EXPR_NAME)
    if name is not None and bytes(name) in _STATEFUL:
        return bytes(name)
    return bytes(expr)


def table_digest(family: str, name: str) -> bytes | None:
    """A table's definition as the kernel holds it, made into a digest; None when it does not
    exist. Elements are never read, so its cost does not grow with the table's sets (a
    listing through libnftables read every element: 76 s at a million subscribers)."""
    import hashlib

    flags = table_flags(family, name)
    if flags is None:
        return None
    digest = hashlib.sha256(b"flags %d\n" % flags)
    for kind, attr_table in ((MSG_GETCHAIN, CHAIN_TABLE), (MSG_GETRULE, RULE_TABLE),
                             (MSG_GETSET, SET_TABLE), (MSG_GETOBJ, OBJ_TABLE)):
        wanted = name.encode() + b"\0"
        try:
            found = _dump(kind, family, [string(attr_table, name)])
        except NetlinkError as e:
            if e.errno == errno.ENOENT:  # removed since its flags were read: gone
                return None
            raise
        for _family, payload in found:
            table = _first(payload, attr_table)  # not every dump filters by table
            if table is not None and bytes(table) == wanted:
                digest.update(b"%d:" % kind + _stable(kind, payload) + b"\n")
    return digest.digest()


# Opening and closing a netlink socket waits for the kernel (an RCU grace period: 20-60 ms
# on a busy machine here), so one socket per process serves every request that is answered
# at once; a dump that is read in steps (ElementDump) has one of its own.
_shared: _Socket | None = None
_shared_lock = threading.Lock()


@contextlib.contextmanager
def _socket() -> Iterator[_Socket]:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = _Socket()
        sock = _shared
        try:
            yield sock
        except NetlinkError:
            raise  # the kernel's answer, complete: the socket serves on
        except BaseException:
            # The rest of an answer may still be queued: start afresh next time.
            _shared = None
            sock.close()
            raise


class SetInfo(NamedTuple):
    count: int
    size: int  # 0: unbounded
    exact: bool  # False: a kernel without NFTA_SET_COUNT, and the dump ran out of time


# A set dump costs the kernel O(n^2) (each receive walks past what it already sent: 55 s for
# a million elements here), so counting by dump, on kernels that report no count, stops
# after this long and says the count is a lower bound.
COUNT_BUDGET = 0.05


def set_info(family: str, table: str, name: str,
             budget: float = COUNT_BUDGET) -> SetInfo | None:
    """How many elements a set or map holds, and its size; None when it does not exist.
    Expired elements the kernel has not collected yet are included (seconds at most)."""
    try:
        with _socket() as sock:
            answer = sock.ask(MSG_GETSET, family,
                              [string(SET_TABLE, table), string(SET_NAME, name)])
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    if not answer:
        return None
    size = 0
    desc = _first(answer[0], SET_DESC)
    if desc is not None and (raw := _first(desc, SET_DESC_SIZE)) is not None:
        size = struct.unpack(">I", raw)[0]
    count = _first(answer[0], SET_COUNT)
    if count is not None:
        return SetInfo(struct.unpack(">I", count)[0], size, True)
    dump = ElementDump(family, table, name)
    try:
        total = dump.count(time.monotonic() + budget)
        return SetInfo(total, size, dump.done)
    finally:
        dump.close()


def counter(family: str, table: str, name: str) -> tuple[int, int] | None:
    """(packets, bytes) of a named counter; None when it (or its table) does not exist."""
    try:
        with _socket() as sock:
            answer = sock.ask(MSG_GETOBJ, family, [
                string(OBJ_TABLE, table), string(OBJ_NAME, name),
                attr(OBJ_TYPE, struct.pack(">I", OBJECT_COUNTER))])
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    data = _first(answer[0], OBJ_DATA) if answer else None
    if data is None:
        return None
    values = {k: struct.unpack(">Q", v)[0] for k, v in attrs(data)}
    return values.get(COUNTER_PACKETS, 0), values.get(COUNTER_BYTES, 0)


class DumpSocket(_Socket):
    """A socket for ElementDump, kept by its owner across dumps (close() when done)."""


class ElementDump:
    """A set's elements, streamed from the kernel in steps a caller bounds.

    The kernel resumes a dump where the reader's last receive stopped, so a step reads a
    few receives (each some hundreds of elements) and returns; the next step goes on.
    Elements added or removed meanwhile may be missed or seen twice, as in any netlink
    dump of a changing set: fine for offers that are made again anyway."""

    def __init__(self, family: str, table: str, name: str,
                 sock: DumpSocket | None = None) -> None:
        """sock: a socket the caller keeps for its dumps (opening one costs 20-60 ms on a
        busy machine); without it, the dump opens and closes one of its own."""
        self._own = sock is None
        self.sock: _Socket | None = _Socket() if sock is None else sock
        self.done = False
        try:
            self.sock.send(MSG_GETSETELEM, family, [string(ELEM_LIST_TABLE, table),
                                                    string(ELEM_LIST_SET, name)], dump=True)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        """Stop reading. A caller's socket stays open: what the kernel still sends of this
        dump carries its sequence number, which the next request's reads skip."""
        if self.sock is not None and self._own:
            self.sock.close()
        self.sock = None
        self.done = True

    def _receive(self, wait: bool) -> list[memoryview] | None:
        """The element lists of one receive; None when nothing came (wait False)."""
        if self.sock is None:
            return []
        try:
            msgs, done = self.sock.messages(wait)
        except NetlinkError as e:
            self.close()
            if e.errno == errno.ENOENT:  # no such set (any more): nothing to read
                return []
            raise
        if done:
            self.close()
        if not msgs and not done:
            return None
        return [elements for _kind, payload in msgs
                if (elements := _first(payload, ELEM_LIST_ELEMENTS)) is not None]

    def elements(self, deadline: float | None) -> list[tuple[bytes, bytes | None]]:
        """(key, data) of the elements received until `deadline` (time.monotonic()) or the
        end of the dump; data None for a set. At least one receive is read."""
        out: list[tuple[bytes, bytes | None]] = []
        first = True
        while not self.done and (first or deadline is None or time.monotonic() < deadline):
            lists = self._receive(wait=first or deadline is None)
            first = False
            if lists is None:
                break
            for elements in lists:
                for kind, elem in attrs(elements):
                    if kind != LIST_ELEM:
                        continue
                    key = data = None
                    for k, v in attrs(elem):
                        if k == ELEM_KEY:
                            key = _first(v, DATA_VALUE)
                        elif k == ELEM_DATA:
                            data = _first(v, DATA_VALUE)
                    if key is not None:
                        out.append((bytes(key), None if data is None else bytes(data)))
        return out

    def count(self, deadline: float | None) -> int:
        """How many elements arrive until `deadline` or the end (none kept)."""
        total = 0
        first = True
        while not self.done and (first or deadline is None or time.monotonic() < deadline):
            lists = self._receive(wait=True)
            first = False
            for elements in lists or []:
                total += sum(1 for kind, _v in attrs(elements) if kind == LIST_ELEM)
        return total
