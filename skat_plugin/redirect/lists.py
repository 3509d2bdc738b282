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
import ipaddress
import os
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from .http import normalise_path

URL, IP, SNI = "black_list_url_file", "black_list_ip_file", "black_list_sni_file"
FILE_KEYS = (URL, IP, SNI)

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
_PATH = re.compile(r"^/[\x21-\x7e]*$")  # printable, no spaces (as sent in a request line)


class ListError(ConfigError):
    """A black-list file is wrong: names the file and the line."""


def _lines(path: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ListError("no such file", path) from None
    except UnicodeDecodeError as e:
        raise ListError(f"not UTF-8 text ({e.reason})", path) from None
    except OSError as e:
        raise ListError(f"cannot be read: {e.strerror or e}", path) from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            out.append((number, line))
    return out


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

    hosts: dict[str, list[str]] = field(default_factory=dict)  # host -> path prefixes ([""] all)
    sni_names: set[str] = field(default_factory=set)
    sni_suffixes: set[str] = field(default_factory=set)        # "example.com" for *.example.com
    nets4: list[ipaddress.IPv4Network] = field(default_factory=list)
    nets6: list[ipaddress.IPv6Network] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)      # file key -> entries read
    _ranges: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for version, nets in ((4, self.nets4), (6, self.nets6)):
            starts = [int(n.network_address) for n in nets]
            ends = [int(n.broadcast_address) for n in nets]
            self._ranges[version] = (starts, ends)

    def url_blocked(self, host: str, path: str) -> bool:
        host = host.lower()
        if host.startswith("["):  # [v6]:port
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        host = host.rstrip(".")
        paths = self.hosts.get(host)
        if not paths:
            return False
        i = bisect.bisect_right(paths, path) - 1
        return i >= 0 and path.startswith(paths[i])

    def sni_blocked(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        if name in self.sni_names:
            return True
        parts = name.split(".")
        return any(".".join(parts[i:]) in self.sni_suffixes for i in range(1, len(parts)))

    def ip_blocked(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        starts, ends = self._ranges[addr.version]
        value = int(addr)
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]


def parse_urls(path: str) -> dict[str, list[str]]:
    hosts: dict[str, list[str]] = {}
    expect = "host or host/path, without scheme (e.g. example.com/news)"
    for number, line in _lines(path):
        if "://" in line:
            raise ListError(f"{line!r} has a scheme; expected {expect}", path, number)
        if " " in line or "\t" in line:
            raise ListError(f"{line!r} contains white space; expected {expect}", path, number)
        host, slash, rest = line.partition("/")
        name = _host(host, path, number, expect)
        prefix = slash + rest
        if prefix and not _PATH.match(prefix):
            raise ListError(f"{line!r}: the path has characters a request cannot carry; "
                            f"expected {expect}", path, number)
        if prefix:  # compared as servers compare: after the request's normalisation
            prefix = normalise_path(prefix)
        hosts.setdefault(name, []).append(prefix)
    return {h: _prefix_free(p) for h, p in hosts.items()}


def parse_snis(path: str) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    suffixes: set[str] = set()
    expect = "a TLS server name, optionally starting with *. (e.g. *.example.com)"
    for number, line in _lines(path):
        if line.startswith("*."):
            suffixes.add(_host(line[2:], path, number, expect))
        else:
            names.add(_host(line, path, number, expect))
    return names, suffixes


def parse_ips(path: str) -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv6Network]]:
    nets4: list[ipaddress.IPv4Network] = []
    nets6: list[ipaddress.IPv6Network] = []
    for number, line in _lines(path):
        try:
            net = ipaddress.ip_network(line, strict=True)
        except ValueError as e:
            raise ListError(f"{line!r} is not an address or prefix ({e}); expected e.g. "
                            f"192.0.2.1, 198.51.100.0/24 or 2001:db8::/32", path, number) \
                from None
        (nets4 if net.version == 4 else nets6).append(net)  # type: ignore[arg-type]
    # Non-overlapping and merged: what a kernel interval set takes, and what bisect needs.
    return (list(ipaddress.collapse_addresses(nets4)),
            list(ipaddress.collapse_addresses(nets6)))


def load(values: dict) -> Lists:
    """Every configured list file, read and checked; raises ListError on the first bad line."""
    hosts: dict[str, list[str]] = {}
    names: set[str] = set()
    suffixes: set[str] = set()
    nets4: list = []
    nets6: list = []
    entries = {}
    if values.get(URL):
        hosts = parse_urls(values[URL])
        entries[URL] = sum(len(p) for p in hosts.values())
    if values.get(SNI):
        names, suffixes = parse_snis(values[SNI])
        entries[SNI] = len(names) + len(suffixes)
    if values.get(IP):
        nets4, nets6 = parse_ips(values[IP])
        entries[IP] = len(nets4) + len(nets6)
    return Lists(hosts, names, suffixes, nets4, nets6, entries)


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
