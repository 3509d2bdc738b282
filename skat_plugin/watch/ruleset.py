"""Changes to the kernel's nftables rule set, as `nft monitor` sees them: the events that
tell the daemon to check its tables (and repair them when someone else broke them).

A netlink socket joined to the nftables multicast group (NFNLGRP_NFTABLES) becomes
readable at every committed change, whoever made it. Only the header of each message is
read, to leave out changes of set elements (the subscriber sync writes those every second;
they never touch a rule); anything else marks the rule set dirty. The check itself runs a
few milliseconds later, once per burst: a `flush ruleset` is dozens of messages.
python3-nftables has no event API and pyroute2 no nftables monitor, so the socket is
plain: membership and a 16-byte header are all it needs.
"""

from __future__ import annotations

from collections.abc import Callable

from ..nfnetlink import messages, netfilter_socket
from . import Source

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
# nf_tables message types that change no rule: set elements (the learned subscribers, the
# sync's writes) and the generation marker that ends every batch.
_QUIET = {12, 13, 14, 15}  # NEWSETELEM, GETSETELEM, DELSETELEM, NEWGEN
DEBOUNCE = 0.005


class RulesetWatch(Source):
    """fds()/handle()/next_due()/run(): calls `check` once after each burst of changes."""

    def __init__(self, check: Callable[[float], None], debounce: float = DEBOUNCE) -> None:
        self.check = check
        self.debounce = debounce
        self.due: float | None = None
        self.events = 0  # rule-set changes seen (any writer)
        self.sock = netfilter_socket(1 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)

    def fds(self) -> list[int]:
        return [self.sock.fileno()]

    def handle(self, fd: int, now: float) -> None:
        changed = False
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: events were lost, so anything may have changed
                changed = True
                continue
            changed |= self._changes_rules(data)
        if changed:
            self.events += 1
            self.check_at(now + self.debounce)  # once a burst; before a later look

    @staticmethod
    def _changes_rules(data: bytes) -> bool:
        return any(kind >> 8 == NFNL_SUBSYS_NFTABLES and kind & 0xFF not in _QUIET
                   for kind, _offset, _length in messages(data))

    def next_due(self) -> float | None:
        return self.due

    def check_at(self, when: float) -> None:
        """Look again at `when` (the daemon backs off from a writer that keeps changing)."""
        self.due = when if self.due is None else min(self.due, when)

    def run(self, now: float) -> None:
        if self.due is not None and now >= self.due:
            self.due = None
            self.check(now)

    def close(self) -> None:
        self.sock.close()
