"""The one way this package talks to libnftables: run(command) on a context kept per kind.

Two things make a small command (a role switch flips four tables' flags) cost well under a
millisecond instead of 2.5 ms here (docs/benchmarks.md, "Role switch"):

- glibc's heap keeps what libnftables frees. libnftables allocates its cache's hash tables
  (~1 MiB) anew for every command and frees them after; by default glibc serves that from
  mmap() and hands it back to the kernel at once, so every command faulted in and cleared
  fresh pages. The thresholds below keep such blocks in the heap, ready for the next
  command, at the price of up to TRIM_THRESHOLD of freed heap a process may keep.
- a context lives as long as the process: making one reads nft's symbol files and allocates
  its state. One context per kind of output (JSON or text, terse, stateless, dry run) and
  include directory, so that no call changes another's settings. Calls on one context are
  serialised (the daemon's threads share them).

A context remembers every `define` it ran, and refuses the same define in a later command:
a script with defines (a full load) runs in a context of its own, thrown away after
(fresh=True). No context is ever given variables with add_var (libnftables 1.0.6 corrupts
its heap when such a context runs a second command).
"""

from __future__ import annotations

import ctypes
import threading
from typing import NamedTuple

import nftables

MMAP_THRESHOLD = 4 << 20   # blocks this big or bigger come from mmap (glibc default: 128 KiB)
TRIM_THRESHOLD = 16 << 20  # freed heap kept before it is returned (glibc default: 128 KiB)
_M_TRIM_THRESHOLD = -1     # <malloc.h>
_M_MMAP_THRESHOLD = -3


def _keep_heap() -> None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: slower, not wrong
        pass


_keep_heap()


class Kind(NamedTuple):
    json: bool = False
    terse: bool = False
    stateless: bool = False
    dry_run: bool = False
    include: str | None = None


_contexts: dict[Kind, tuple[nftables.Nftables, threading.Lock]] = {}
_made = threading.Lock()


def _new(kind: Kind) -> nftables.Nftables:
    nft = nftables.Nftables()
    nft.set_handle_output(False)
    nft.set_json_output(kind.json)
    nft.set_terse_output(kind.terse)
    nft.set_stateless_output(kind.stateless)
    nft.set_dry_run(kind.dry_run)
    if kind.include:
        nft.add_include_path(kind.include)
    return nft


def _context(kind: Kind) -> tuple[nftables.Nftables, threading.Lock]:
    with _made:
        if kind not in _contexts:
            _contexts[kind] = (_new(kind), threading.Lock())
        return _contexts[kind]


def run(command: str, *, json: bool = False, terse: bool = False, stateless: bool = False,
        dry_run: bool = False, include: str | None = None,
        fresh: bool = False) -> tuple[int, str, str]:
    """(rc, output, error) of one libnftables command or script: one transaction.
    fresh: the script defines symbols (see above)."""
    kind = Kind(json, terse, stateless, dry_run, include)
    if fresh:
        return _new(kind).cmd(command)
    nft, lock = _context(kind)
    with lock:
        return nft.cmd(command)
