"""Key names in fastdpi.conf that look like the plugin's but are not: typos.

fastdpi.conf holds hundreds of SKAT keys the plugin does not own, so an unknown key is
normal. What an unknown key means depends on its prefix:

- `vrrp_` is the plugin's own prefix: every vrrp_* key is one of its keys. An unknown one is
  a typo (`vrrp_enabel=0` would silently leave VRRP off): an error, with the nearest key.
- `bras_` is shared with SKAT's own BRAS keys (bras_enable, bras_dhcp_..., hundreds): an
  unknown bras_* key is SKAT's, unless it is a small edit away from one of the plugin's
  keys (`bras_arp_mca`): then a warning, since SKAT may own such a name.
- Any other key: only a small edit away from a plugin key warns (`in_dve`).

A small edit: one insertion, deletion, substitution or swap of two neighbours (two for
names of 12 characters or more), or a difference in case only.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import ConfigError
from .conffile import ConfFile

OWN_PREFIX = "vrrp_"  # bras_ (shared with SKAT) and other keys: warnings only


def distance(a: str, b: str) -> int:
    """Edit distance with swaps of neighbours (optimal string alignment)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def near_miss(key: str, known: Iterable[str]) -> str | None:
    """The plugin key `key` is a small edit away from, if any (the nearest one)."""
    low = key.lower()
    best = None
    for name in known:
        d = distance(low, name)
        if d <= (2 if len(name) >= 12 else 1) and (best is None or d < best[0]):
            best = (d, name)
    return best[1] if best else None


def _suggestion(key: str, known: Iterable[str]) -> str:
    names = list(known)
    found = near_miss(key, names) or next(iter(difflib.get_close_matches(
        key.lower(), names, n=1, cutoff=0.75)), None)
    return f"; did you mean {found}?" if found else ""


def check(conf: ConfFile, known: Iterable[str]) -> None:
    """Raise ConfigError for the first unknown key with the plugin's own prefix."""
    names = set(known)
    for key, entry in sorted(conf.entries.items(), key=lambda kv: kv[1].line):
        if key in names or not key.lower().startswith(OWN_PREFIX):
            continue
        hint = _suggestion(key, names) or " (see /usr/share/doc/skat-plugin/configuration.md)"
        raise ConfigError(f"unknown key ({OWN_PREFIX}* keys are skat-plugin's){hint}",
                          conf.path, entry.line, key)


def warnings(conf: ConfFile, known: Iterable[str]) -> list[str]:
    """One line per key that is not the plugin's but is a small edit away from one."""
    names = set(known)
    found = []
    for key, entry in sorted(conf.entries.items(), key=lambda kv: kv[1].line):
        if key in names or key.lower().startswith(OWN_PREFIX):
            continue  # the plugin's own keys; unknown vrrp_* keys are check()'s errors
        near = near_miss(key, names)
        if near is None or near in conf.entries:
            continue  # not close, or the real key is set as well: two different keys
        found.append(f"{conf.path}:{entry.line}: {key}: not a key of skat-plugin, which "
                     f"ignores it; did you mean {near}?")
    return found
