"""SKAT's black-list redirect (issue 8): the lists, the inspector and its answers.

    lists      parse and check the black-list files; match a request, a server name, an address
    kernel     the selection table's sets, heartbeat and counters (python3-nftables)
    packet     read a TCP frame; build the answers (302/403, resets) and re-injected frames
    inspector  the process that decides what the kernel hands it (fdpi_cli inspector)

The kernel selects (nft/redirect.nft.in), Python decides only what the kernel cannot:
docs/redirect.md.
"""

TABLE = "skat_plugin_redirect"  # lives across role switches: the address lists and the heartbeat
# Selected packets carry MARK_BASE + n, n = 1 + the in_dev port's position: the inspector's
# socket for that port reads only its own (nft/redirect.nft.in).
MARK_BASE = 0x534B0000
# s, the @alive element's lifetime, refreshed every HEARTBEAT_EVERY (issue 19: an idle
# inspector under 0.1 % of a core). A dead inspector is noticed at once by its guardian
# (inspector.py); the timeout only covers a hung or frozen one.
HEARTBEAT_TIMEOUT = 3.0
HEARTBEAT_EVERY = 1.0
DEFAULT_RATE = 2000  # black_list_inspect_rate: packets a second (docs/redirect.md)
# After a request start or a ClientHello, the kernel selects the flow's next segments for
# this long (@follow4/@follow6): a request split over segments is read whole.
FOLLOW_MS = 500


def enabled(values: dict) -> bool:
    """The redirect is on when any black-list file is configured."""
    return any(values.get(k) for k in ("black_list_url_file", "black_list_ip_file",
                                       "black_list_sni_file"))


def port_mark(index: int) -> int:
    return MARK_BASE + index + 1
