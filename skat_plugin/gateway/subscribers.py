"""The gateway's learned subscribers: read and write the kernel's tables (bras_terminate_l2=1).

The netdev table skat_plugin_gateway (nft/gateway.nft) learns each subscriber's IP -> MAC into the
maps sub4 and sub6, and offers new, changed and due pairs in the sets fresh4 and fresh6
for the group sync (sync.py). This module is the only user-space access to them, through
python3-nftables (libnft.run). Never through `nft`.

    read(family)   the learned subscribers, with their remaining lifetime
    count()        how many per family (for `vrrp show` and metrics): O(1), never a listing
    table_state()  count, bound and refused learnings, and whether the alarm is on
    read_fresh()   the pairs offered for the sync lately (streamed over netlink)
    FreshReader    the same in steps of a few milliseconds, resumed where one stopped
    store(pairs)   write pairs received from the group's master

Reads whose cost would grow with the table (counting, the fresh pairs, counters) go over a
raw netlink socket (nfnl.py): libnftables first fills its cache with every element of the
table, which at a million subscribers took over a minute and a GiB.

What this kernel does with element writes (Linux 6.18, nft 1.0.6), found by experiment, and
what store() makes of it:
- `add` of an existing key with the same value succeeds and changes nothing: not even the
  expiry, unless the element carries an expiration and the kernel can update it (the "set
  element timeout update" change of 2024: 6.18 here can, Debian 12's 6.1 cannot).
- `add` of an existing key with another value fails with EEXIST, and so does the whole
  transaction. `delete` of an absent key fails with ENOENT, the whole transaction too.
- `delete` of a map element needs only its key; a stored value that differs does not matter.
- add, delete, add of one key in one transaction works whether or not the key was there.
- A transaction that deletes anything waits for the kernel's RCU grace period: 8-30 ms here,
  whatever its size. One that only adds takes well under a millisecond for a few elements.
So store() writes a batch as one transaction per family:
- where the kernel updates expirations (probed once per process, as nftables' own test suite
  does): `add {ip timeout T expires T : mac}`, which adds a new subscriber and renews a known
  one in place, without a delete;
- elsewhere: `add {ip : mac}; delete {ip}; add {ip : mac}`, the same result on any kernel.
Either fails only when an IP is stored with another MAC (a subscriber changed its MAC, or
the packet path changed it meanwhile). Then store() asks the kernel what it holds for those
IPs and replaces them with `add {ip : old}; delete {ip}; add {ip : new}`: the first add
makes the delete safe should the old element expire in between. If even that fails (the
table moved under us), the batch is halved and each half tried on its own, so that one bad
pair never costs the good ones.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from .. import libnft, nfnl, report
from ..render import GATEWAY_TABLE

FAMILY = "netdev"
MAPS = {4: "sub4", 6: "sub6"}
FRESH = {4: "fresh4", 6: "fresh6"}
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_BAD6 = (bytes(16), bytes(15) + b"\x01")
# Up to this many IPs, ask the kernel one `get element` each (0.5 ms apiece); above it, one
# dump of the whole map is cheaper than the gets (30 us per stored element).
_GET_LIMIT = 32
_GOT = re.compile(r"elements = \{ [^}]* : ([0-9a-f]{2}(?::[0-9a-f]{2}){5}) \}")

# None: probe the kernel at the first store(). Tests set False to run the portable path.
REFRESH_IN_PLACE: bool | None = None


class Subscriber(NamedTuple):
    ip: str
    mac: str
    expires_s: int  # seconds left before the kernel forgets it (whole seconds, as nft gives)

    @property
    def expires(self) -> int:
        """The same as expires_s (the CLI's name for it)."""
        return self.expires_s


Pair = tuple[str, str]


def _cmd(command: str, terse: bool = False) -> list[dict[str, Any]] | None:
    """One read; its JSON objects, or None when the kernel said no (e.g. no such table)."""
    rc, out, _err = libnft.run(command, json=True, terse=terse)
    if rc != 0:
        return None
    return json.loads(out).get("nftables", []) if out.strip() else []


def _commit(script: str) -> bool:
    """One transaction: all of it or none of it."""
    if not script:
        return True
    return libnft.run(script)[0] == 0


# -- reading --------------------------------------------------------------------------------

def _elements(objects: list[dict[str, Any]] | None, kind: str) -> list[Any]:
    for obj in objects or []:
        if kind in obj:
            return list(obj[kind].get("elem") or [])
    return []


def _unwrap(key: Any) -> tuple[Any, int]:
    """An element's key and expiry: {"elem": {"val": K, "expires": N}} or a bare K."""
    if isinstance(key, dict) and "elem" in key:
        return key["elem"].get("val"), int(key["elem"].get("expires", 0))
    return key, 0


def _map(family: int) -> list[Subscriber]:
    out = []
    for item in _elements(_cmd(f"list map {FAMILY} {GATEWAY_TABLE} {MAPS[family]}"), "map"):
        key, expires = _unwrap(item[0])
        out.append(Subscriber(str(key), str(item[1]), expires))
    return out


def read(family: int | None = None) -> list[Subscriber]:
    """The learned subscribers of one family (4 or 6) or both; [] without the table."""
    return [sub for fam in ((family,) if family else (4, 6)) for sub in _map(fam)]


def count() -> dict[str, int | None]:
    """Subscribers per family; None for a map that does not exist (gateway off, no IPv6).

    The kernel's element count (nfnl.set_info): 0.05 ms whatever the table's size. Raises
    the table alarm (a warning) when a map reaches ALARM_FILL of its bound."""
    return {f"ipv{family}": (None if info is None else info.count)
            for family, info in _infos().items()}


# The alarm: a warning when a map holds this share of its bound (new subscribers are refused
# at the bound), and again only after it fell below ALARM_CLEAR.
ALARM_FILL, ALARM_CLEAR = 0.9, 0.8
_alarmed: set[int] = set()


def _infos() -> dict[int, nfnl.SetInfo | None]:
    infos = {family: nfnl.set_info(FAMILY, GATEWAY_TABLE, MAPS[family]) for family in (4, 6)}
    for family, info in infos.items():
        if info is None or not info.size:
            continue
        fill = info.count / info.size
        if fill >= ALARM_FILL and family not in _alarmed:
            _alarmed.add(family)
            report.warning(f"the gateway's IPv{family} subscriber table holds {info.count} of "
                           f"{info.size}: at the bound new subscribers are refused "
                           f"(learn_table_full); is vrrp_subscriber_nets set?")
        elif fill < ALARM_CLEAR:
            _alarmed.discard(family)
    return infos


def table_state() -> dict[str, Any] | None:
    """The table's fill and what it refused, for `vrrp show` and the metrics; None without
    the gateway's table. All O(1): a few netlink requests."""
    infos = _infos()
    if infos[4] is None:
        return None
    refused = {name: (value[0] if (value := nfnl.counter(FAMILY, GATEWAY_TABLE, name)) else 0)
               for name in ("learn_outside", "learn_limited", "learn_table_full")}
    return {
        "families": {f"ipv{family}": {"count": info.count, "size": info.size,
                                      "exact": info.exact}
                     for family, info in infos.items() if info is not None},
        "refused": refused,
        "alarm": bool(_alarmed),
    }


def _pair(family: int, key: bytes) -> Pair | None:
    """An element of fresh4/fresh6: the key is the concatenation IP . MAC, each field padded
    to 4 bytes (IPv4: 4 + 8 bytes, IPv6: 16 + 8)."""
    size = 4 if family == 4 else 16
    if len(key) < size + 6:
        return None
    ip = socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, key[:size])
    return normalize(ip, ":".join(f"{b:02x}" for b in key[size:size + 6]))


class FreshReader:
    """The fresh pairs (fresh4, then fresh6) in steps: step(budget) reads for about budget
    seconds and returns what it read, and whether this round of both sets is complete. The
    next step resumes the kernel's dump where this one stopped, so a large set never blocks
    the caller's loop for longer than a step; memory holds one round's IPs (for MAC changes).
    """

    def __init__(self) -> None:
        self._family = 4
        self._dump: nfnl.ElementDump | None = None
        self._macs: dict[str, str] = {}
        self._sock: nfnl.DumpSocket | None = None  # kept: opening one costs 20-60 ms

    def close(self) -> None:
        if self._dump is not None:
            self._dump.close()
            self._dump = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def step(self, budget: float | None = 0.003) -> tuple[list[Pair], bool]:
        deadline = None if budget is None else time.monotonic() + budget
        out: list[Pair] = []
        while True:
            if self._dump is None:
                if self._sock is None:
                    self._sock = nfnl.DumpSocket()
                self._dump = nfnl.ElementDump(FAMILY, GATEWAY_TABLE, FRESH[self._family],
                                              self._sock)
            for key, _data in self._dump.elements(deadline):
                pair = _pair(self._family, key)
                if pair is None:
                    continue
                known = self._macs.setdefault(pair[0], pair[1])
                if known != pair[1]:
                    # An IP whose MAC changed lately is there twice, old pair and new, until
                    # the old offer expires: the map says which MAC is current.
                    current = _get(MAPS[self._family], pair[0])
                    if current is None:  # gone from the map meanwhile: nothing to offer
                        continue
                    self._macs[pair[0]] = current
                    pair = (pair[0], current)
                out.append(pair)
            if not self._dump.done:
                return out, False
            self._dump = None
            if self._family == 6:
                self._family, self._macs = 4, {}
                return out, True
            self._family = 6
            if deadline is not None and time.monotonic() >= deadline:
                return out, False


_whole: FreshReader | None = None
_whole_lock = threading.Lock()


def read_fresh() -> list[Pair]:
    """The (ip, mac) pairs the kernel offered for the sync lately (fresh4, fresh6), one per IP.
    All of them at once (streamed; the set is small: the meters of nft/gateway.nft bound how
    fast it grows); FreshReader reads it in bounded steps."""
    global _whole
    with _whole_lock:
        if _whole is None:
            _whole = FreshReader()  # kept with its socket for the next call
        try:
            pairs, _done = _whole.step(None)
        except BaseException:
            _whole.close()
            _whole = None
            raise
    latest = {ip: mac for ip, mac in pairs}  # the current MAC wins for an IP seen twice
    return list(latest.items())


def normalize(ip: Any, mac: Any) -> Pair | None:
    """(ip, mac) in the kernel's spelling, or None when it is no subscriber's pair: a
    unicast host address the gateway carries (not link-local) and a unicast, non-zero MAC.
    inet_pton/inet_ntop rather than ipaddress: 4 times faster, and the same spelling as
    nft's (RFC 5952 for IPv6)."""
    if not isinstance(ip, str) or not isinstance(mac, str) or not _MAC.match(mac):
        return None
    mac = mac.lower()
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        return None
    try:
        if ":" in ip:
            raw = socket.inet_pton(socket.AF_INET6, ip)
            if raw[0] == 0xFF or (raw[0] == 0xFE and raw[1] & 0xC0 == 0x80) or raw in _BAD6:
                return None  # multicast, link-local fe80::/10 (never forwarded), ::, ::1
            return socket.inet_ntop(socket.AF_INET6, raw), mac
        raw = socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError):
        return None
    if raw[0] in (0, 127) or raw[0] >= 224:
        return None  # "this network", loopback, multicast, reserved and broadcast
    return socket.inet_ntop(socket.AF_INET, raw), mac


# -- writing --------------------------------------------------------------------------------

def store(pairs: Iterable[Pair]) -> int:
    """Write (ip, mac) pairs into sub4/sub6 with the map's full timeout: a new IP is added, a
    known one renewed, one stored with another MAC replaced. Returns how many were written;
    invalid pairs, and pairs of a family whose map does not exist, are not."""
    batches: dict[int, dict[str, str]] = {4: {}, 6: {}}
    for ip, mac in pairs:
        pair = normalize(ip, mac)
        if pair:  # the last word on an IP wins; one transaction must not hold it twice
            batches[6 if ":" in pair[0] else 4][pair[0]] = pair[1]
    if not batches[4] and not batches[6]:
        return 0
    in_place = _refresh_in_place()
    stored = 0
    for family, batch in batches.items():
        if batch:
            stored += _store(MAPS[family], list(batch.items()), in_place)
    return stored


# The maps' timeouts, kept a while: asking costs as much as a write (libnftables fills its
# cache from the whole rule set). A reload that changes them is seen within _TIMEOUTS_TTL.
_TIMEOUTS_TTL = 10.0
_timeouts: tuple[float, dict[str, int | None]] = (-_TIMEOUTS_TTL, {})


def _map_timeouts(fresh: bool = False) -> dict[str, int | None]:
    """The gateway's maps that exist, and their timeout (terse: without their elements)."""
    global _timeouts
    now = time.monotonic()
    if fresh or now - _timeouts[0] >= _TIMEOUTS_TTL:
        found: dict[str, int | None] = {}
        for obj in _cmd(f"list maps {FAMILY}", terse=True) or []:
            m = obj.get("map")
            if m and m.get("table") == GATEWAY_TABLE and m.get("name") in MAPS.values():
                found[m["name"]] = m.get("timeout")
        _timeouts = (now, found)
    return _timeouts[1]


def _store(name: str, items: list[Pair], in_place: bool) -> int:
    timeouts = _map_timeouts()
    # The optimistic write: no IP is stored with another MAC (true but for MAC changes).
    if name in timeouts and _commit(_write(name, items, None, timeouts[name], in_place)):
        return len(items)
    timeouts = _map_timeouts(fresh=True)  # did the map go, or come, meanwhile?
    if name not in timeouts:
        return 0
    return _store_known(name, items, timeouts[name], in_place)


def _store_known(name: str, items: list[Pair], timeout: int | None, in_place: bool) -> int:
    """Write after asking the kernel what it holds; halve on failure (the table moved)."""
    current = _current(name, [ip for ip, _ in items])
    if _commit(_write(name, items, current, timeout, in_place)):
        return len(items)
    if len(items) == 1:
        return 0
    half = len(items) // 2
    return (_store_known(name, items[:half], timeout, in_place)
            + _store_known(name, items[half:], timeout, in_place))


def _current(name: str, ips: list[str]) -> dict[str, str]:
    """What the map holds for these IPs (absent IPs are left out)."""
    if len(ips) > _GET_LIMIT:
        wanted = set(ips)
        family = 4 if name == MAPS[4] else 6
        return {s.ip: s.mac for s in _map(family) if s.ip in wanted}
    found = {}
    for ip in ips:
        if (mac := _get(name, ip)) is not None:
            found[ip] = mac
    return found


def _get(name: str, ip: str) -> str | None:
    """The MAC stored for one IP. nft 1.0.6 answers `get element` in text even when asked
    for JSON (and knows no JSON `get`): the one element is `{ IP [expires ..] : MAC }`."""
    rc, out, _err = libnft.run(f"get element {FAMILY} {GATEWAY_TABLE} {name} {{ {ip} }}")
    found = _GOT.search(out) if rc == 0 else None
    return found.group(1) if found else None


def _write(name: str, items: list[Pair], current: dict[str, str] | None,
           timeout: int | None, in_place: bool) -> str:
    """The transaction for one batch. current None: unknown, assume every stored MAC is the
    new one. Otherwise: what the map held a moment ago. Text, not JSON: libnftables parses
    elements with an expiration in text 1.5 times faster, and every IP and MAC here passed
    normalize()."""
    guard: list[str] = []     # add {ip : the stored MAC}: the delete after it cannot fail
    delete: list[str] = []
    add: list[str] = []
    for ip, mac in items:
        old = current.get(ip) if current is not None else mac
        if old is not None and old != mac:
            guard.append(f"{ip} : {old}")
            delete.append(ip)
            add.append(f"{ip} : {mac}")
        elif in_place and timeout:
            add.append(f"{ip} timeout {timeout}s expires {timeout}s : {mac}")
        elif old is None or not timeout:
            add.append(f"{ip} : {mac}")  # not there a moment ago (or nothing expires): add
        else:  # a renewal on a kernel that cannot update expirations: recreate
            guard.append(f"{ip} : {mac}")
            delete.append(ip)
            add.append(f"{ip} : {mac}")
    target = f"{FAMILY} {GATEWAY_TABLE} {name}"
    lines = []
    if guard:
        lines += [f"add element {target} {{ {', '.join(guard)} }}",
                  f"delete element {target} {{ {', '.join(delete)} }}"]
    if add:
        lines.append(f"add element {target} {{ {', '.join(add)} }}")
    return "\n".join(lines)


_probed: bool | None = None


def _refresh_in_place() -> bool:
    """Does `add` with an expiration renew an existing element here? Asked once per process,
    on a throw-away table of our own (nothing else is touched): an element made to expire
    in 10 s is added again with 1 h; a kernel that updates expirations shows about 1 h."""
    global _probed
    if REFRESH_IN_PLACE is not None:
        return REFRESH_IN_PLACE
    if _probed is None:
        table = f"skat_probe_{os.getpid()}"
        set_ref = f"inet {table} s"
        try:
            ok = libnft.run(
                f"add table inet {table}\n"
                f"add set {set_ref} {{ type ipv4_addr ; flags timeout ; timeout 1h ; }}\n"
                f"add element {set_ref} {{ 192.0.2.1 timeout 1h expires 10s }}")[0] == 0
            # The very form _write() uses for a renewal.
            ok = ok and _commit(f"add element {set_ref} {{ 192.0.2.1 timeout 3600s "
                                f"expires 3600s }}")
            items = _elements(_cmd(f"list set {set_ref}"), "set") if ok else []
            _probed = bool(items) and _unwrap(items[0])[1] > 60
        finally:
            libnft.run(f"delete table inet {table}")
    return _probed
