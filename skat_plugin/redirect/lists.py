"""SKAT's black lists: read, check and match them.

Three text files, one entry a line; `#` starts a comment (at the start of a line or after
white space), blank lines are ignored:

    black_list_url_file   URLs without scheme: `host` blocks every URL of that host,
                          `host/path...` the URLs whose path starts with `/path...`.
                          Matched against the request's Host header (port and a final dot
                          dropped, case ignored) and its path (case kept), both paths
                          normalised as a server does (http.normalise_path: percent-decoded,
                          `//` merged, `/./` and `/../` resolved).
    black_list_ip_file    IPv4/IPv6 addresses and prefixes (`192.0.2.0/24`, `2001:db8::/32`).
                          HTTP to them is redirected, every other TCP connection reset.
    black_list_sni_file   TLS server names; `*.example.com` blocks every name under
                          example.com (not example.com itself).

A malformed line is a ListError naming the file and the line; the caller keeps the old
lists. Matching costs the same with 1 or 100,000 entries: a dict lookup per host label,
a bisection in the host's paths and in the address ranges.
"""

from __future__ import annotations

import bisect
import gc
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field

from ..errors import ConfigError
from .http import normalise_path

URL, IP, SNI = "black_list_url_file", "black_list_ip_file", "black_list_sni_file"
FILE_KEYS = (URL, IP, SNI)

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
_COMMENT = re.compile(r"(?:^|\s)#")


def _path_ok(prefix: str) -> bool:
    """Printable ASCII without spaces after the first slash (as sent in a request line)."""
    return prefix.isascii() and prefix.isprintable() and " " not in prefix


class ListError(ConfigError):
    """A black-list file is wrong: names the file and the line."""


def _lines(path: str) -> list[str]:
    """The file's lines, comments removed and stripped; blank ones kept as "" so that
    index + 1 is the line number."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ListError("no such file", path) from None
    except UnicodeDecodeError as e:
        raise ListError(f"not UTF-8 text ({e.reason})", path) from None
    except OSError as e:
        raise ListError(f"cannot be read: {e.strerror or e}", path) from None
    lines = text.splitlines()
    if "#" in text:  # the common case has none: no regex a line
        lines = [_COMMENT.split(line, maxsplit=1)[0] if "#" in line else line
                 for line in lines]
    return [line.strip() for line in lines]


def _host(value: str, path: str, number: int, what: str) -> str:
    host = value.lower().rstrip(".")
    if not host or len(host) > 253 or not _HOST.match(host):
        raise ListError(f"{value!r} is not a host name; expected {what}", path, number)
    return host


def _prefix_free(paths: list[str]) -> list[str]:
    """Sorted, without entries that a shorter entry already covers. Then the only entry
    that can be a prefix of a path is the greatest one not above it (bisect)."""
    out: list[str] = []
    for p in sorted(set(paths)):
        if not out or not p.startswith(out[-1]):
            out.append(p)
    return out


@dataclass
class Lists:
    """What the inspector matches against. Empty lists block nothing."""

    # host -> its path prefix ("" = all), or a sorted prefix-free list of them
    hosts: dict[str, str | list[str]] = field(default_factory=dict)
    sni_names: set[str] = field(default_factory=set)
    sni_suffixes: set[str] = field(default_factory=set)        # "example.com" for *.example.com
    # version -> (starts, ends): sorted, merged address ranges, as integers
    ranges: dict[int, tuple[list[int], list[int]]] = field(
        default_factory=lambda: {4: ([], []), 6: ([], [])})
    entries: dict[str, int] = field(default_factory=dict)      # file key -> entries read

    def keys(self, version: int) -> list[bytes]:
        """The single addresses, packed (a hash set's keys)."""
        size = 4 if version == 4 else 16
        return [start.to_bytes(size, "big")
                for start, end in zip(*self.ranges[version], strict=True) if start == end]

    def elements(self, version: int) -> tuple[list[str], list[str]]:
        """The address ranges as nft set elements: single addresses (`a`, for a hash set)
        and ranges (`a-b`, for an interval set)."""
        family, size = (socket.AF_INET, 4) if version == 4 else (socket.AF_INET6, 16)
        ntop = socket.inet_ntop
        hosts, ranges = [], []
        for start, end in zip(*self.ranges[version], strict=True):
            a = ntop(family, start.to_bytes(size, "big"))
            if start == end:
                hosts.append(a)
            else:
                ranges.append(f"{a}-{ntop(family, end.to_bytes(size, 'big'))}")
        return hosts, ranges

    def url_blocked(self, host: str, path: str) -> bool:
        host = host.lower()
        if host.startswith("["):  # [v6]:port
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        host = host.rstrip(".")
        paths = self.hosts.get(host)
        if paths is None:
            return False
        if isinstance(paths, str):
            return path.startswith(paths)
        i = bisect.bisect_right(paths, path) - 1
        return i >= 0 and path.startswith(paths[i])

    def sni_blocked(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        if name in self.sni_names:
            return True
        parts = name.split(".")
        return any(".".join(parts[i:]) in self.sni_suffixes for i in range(1, len(parts)))

    def ip_blocked(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        starts, ends = self.ranges[addr.version]
        value = int(addr)
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]


def parse_urls(path: str) -> dict[str, str | list[str]]:
    """host -> its path prefix ("" for the whole host), or a sorted prefix-free list."""
    hosts: dict[str, str | list[str]] = {}
    many: list[str] = []
    expect = "host or host/path, without scheme (e.g. example.com/news)"
    for number, line in enumerate(_lines(path), 1):
        if not line:
            continue
        if "://" in line:
            raise ListError(f"{line!r} has a scheme; expected {expect}", path, number)
        if " " in line or "\t" in line:
            raise ListError(f"{line!r} contains white space; expected {expect}", path, number)
        host, slash, rest = line.partition("/")
        name = _host(host, path, number, expect)
        prefix = slash + rest
        if prefix:
            if not _path_ok(prefix):
                raise ListError(f"{line!r}: the path has characters a request cannot carry; "
                                f"expected {expect}", path, number)
            if "%" in prefix or "//" in prefix or "/." in prefix or "#" in prefix:
                prefix = normalise_path(prefix)  # as servers compare (the request's too)
        seen = hosts.get(name)
        if seen is None:
            hosts[name] = prefix  # most hosts have one entry: no list for them
        elif isinstance(seen, list):
            seen.append(prefix)
        else:
            hosts[name] = [seen, prefix]
            many.append(name)
    for name in many:
        hosts[name] = _prefix_free(hosts[name])
    return hosts


def parse_snis(path: str) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    suffixes: set[str] = set()
    expect = "a TLS server name, optionally starting with *. (e.g. *.example.com)"
    for number, line in enumerate(_lines(path), 1):
        if not line:
            continue
        if line.startswith("*."):
            suffixes.add(_host(line[2:], path, number, expect))
        else:
            names.add(_host(line, path, number, expect))
    return names, suffixes


def _range(line: str) -> tuple[int, int, int]:
    """(version, first, last) of an address or prefix; ValueError when it is neither."""
    addr, slash, length = line.partition("/")
    family, bits = (socket.AF_INET6, 128) if ":" in addr else (socket.AF_INET, 32)
    try:
        value = int.from_bytes(socket.inet_pton(family, addr), "big")
    except OSError:
        raise ValueError(f"{addr!r} is not an address") from None
    n = bits
    if slash:
        if not length.isdigit() or not 0 <= int(length) <= bits:
            raise ValueError(f"{length!r} is not a prefix length")
        n = int(length)
    host = (1 << (bits - n)) - 1
    if value & host:
        raise ValueError(f"{line} has host bits set")
    return (6 if bits == 128 else 4), value, value | host


def _merged(pairs: list[int], bits: int) -> tuple[list[int], list[int]]:
    """Sorted, merged ranges from `first << bits | last` integers (one sort of plain ints)."""
    pairs.sort()
    mask = (1 << bits) - 1
    starts: list[int] = []
    ends: list[int] = []
    for pair in pairs:
        first, last = pair >> bits, pair & mask
        if ends and first <= ends[-1] + 1:
            if last > ends[-1]:
                ends[-1] = last
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


def parse_ips(path: str) -> dict[int, tuple[list[int], list[int]]]:
    pairs: dict[int, list[int]] = {4: [], 6: []}
    for number, line in enumerate(_lines(path), 1):
        if not line:
            continue
        try:
            version, first, last = _range(line)
        except ValueError as e:
            raise ListError(f"{line!r} is not an address or prefix ({e}); expected e.g. "
                            f"192.0.2.1, 198.51.100.0/24 or 2001:db8::/32", path, number) \
                from None
        pairs[version].append(first << (32 if version == 4 else 128) | last)
    # Non-overlapping and merged: what a kernel interval set takes, and what bisect needs.
    return {4: _merged(pairs[4], 32), 6: _merged(pairs[6], 128)}


def load(values: dict) -> Lists:
    """Every configured list file, read and checked; raises ListError on the first bad line.
    The cyclic garbage collector is off meanwhile: a million small objects would make it
    walk the heap again and again (a third of the time here), and none of them is cyclic."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(values)
    finally:
        if enabled:
            gc.enable()


def _load(values: dict) -> Lists:
    hosts: dict[str, str | list[str]] = {}
    names: set[str] = set()
    suffixes: set[str] = set()
    ranges: dict[int, tuple[list[int], list[int]]] = {4: ([], []), 6: ([], [])}
    entries = {}
    if values.get(URL):
        hosts = parse_urls(values[URL])
        entries[URL] = sum(1 if isinstance(p, str) else len(p) for p in hosts.values())
    if values.get(SNI):
        names, suffixes = parse_snis(values[SNI])
        entries[SNI] = len(names) + len(suffixes)
    if values.get(IP):
        ranges = parse_ips(values[IP])
        entries[IP] = len(ranges[4][0]) + len(ranges[6][0])
    return Lists(hosts, names, suffixes, ranges, entries)


def paths(values: dict) -> list[str]:
    """The configured list files, as fastdpi.conf names them."""
    return [values[key] for key in FILE_KEYS if values.get(key)]


def stamp(values: dict) -> tuple:
    """Changes when any configured list file changes (inode, size, modification time)."""
    out = []
    for path in paths(values):
        try:
            st = os.stat(path)
            out.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((path, None))
    return tuple(out)
