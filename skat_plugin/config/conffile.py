"""Reads fastdpi.conf: `key=value` lines, `#` comments, blank lines, optional quotes.

The real file has hundreds of keys this plugin does not own. They are kept (so a later
version can use them) and never judged: only the syntax of a line is checked here.
Values stay strings; the schema decides what a key means (a colon is a list separator for
`in_dev`, part of the address for `bras_ipv6_address`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int


@dataclass(frozen=True)
class ConfFile:
    path: str
    entries: dict[str, Entry]
    # key -> line of its first setting, for keys set more than once (the last one wins,
    # as for fastdpi itself); the schema refuses this for the keys the plugin owns.
    repeated: dict[str, int]

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)


def _unquote(raw: str, path: str, lineno: int, key: str) -> str:
    value = raw.strip()
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        if end < 0:
            raise ConfigError(f"the value opens a {quote} quote that is never closed; "
                              f"close it or remove it", path, lineno, key)
        rest = value[end + 1:].strip()
        if rest and not rest.startswith("#"):
            raise ConfigError(f"unexpected text {rest!r} after the quoted value; "
                              f"put a comment after '#'", path, lineno, key)
        return value[1:end]
    # An unquoted value ends at a comment that follows white space ("x=1  # why").
    m = re.search(r"\s#", value)
    return value[: m.start()].rstrip() if m else value


def parse_text(text: str, path: str) -> ConfFile:
    entries: dict[str, Entry] = {}
    repeated: dict[str, int] = {}
    # Lines end at "\n" only (as for fastdpi and every editor's line count); str.splitlines()
    # would also split at form feeds, U+2028 and the like and shift every later line number.
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "\x00" in line:
            raise ConfigError("the line contains a NUL byte; the file is not text", path, lineno)
        key, sep, raw = stripped.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"expected key=value, found {stripped[:40]!r}; "
                              f"comment it out with '#' or add '='", path, lineno)
        if not _KEY.match(key):
            raise ConfigError(f"{key[:40]!r} is not a valid key name (letters, digits, '_'); "
                              f"fix the name or comment the line out", path, lineno)
        value = _unquote(raw, path, lineno, key)
        if key in entries:
            repeated.setdefault(key, entries[key].line)
        entries[key] = Entry(key, value, lineno)
    return ConfFile(path, entries, repeated)


def read(path: str) -> ConfFile:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("no such file; create it or point --config / FDPI_CONF at it",
                          path) from None
    except OSError as e:
        raise ConfigError(f"cannot read it ({e.strerror}); check its permissions", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data[: e.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8 text; save the file as UTF-8", path, lineno) from None
    return parse_text(text, path)
