"""MLD reports for the gateway's groups (RFC 3810, RFC 2710, RFC 5798 6.4.2): the frames, the
query parser (bytes from any subscriber: it never raises), and the schedule: a join at
takeover, answers to queries within their delay, a query flood bounded, nothing after stop.

No root needed: the reporter runs on the test's clock, its frames go to a recorder. The
wire (tshark, a backup's silence) is in test_conformance.py.
"""

from __future__ import annotations

import random
from pathlib import Path

from conftest import BASE_CONF, VGUA, VLL, VMAC
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6MLDMultAddrRec,
    ICMPv6MLQuery,
    ICMPv6MLQuery2,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import Ether

from skat_plugin import config
from skat_plugin.gateway import mld

GATEWAY = """bras_terminate_l2=1
bras_gateway_ip=100.64.0.254
bras_gateway_mac=02:00:00:00:00:fe
"""
QUERIER_LL = "fe80::99"
QUERIER_MAC = "02:00:00:00:00:99"


class Recorder:
    """Stands in for announce.Sender: what would go out, and when (the test's clock)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sent: list[tuple[float, str, Ether]] = []

    def send(self, port: str, frame: bytes) -> bool:
        self.sent.append((self.now, port, Ether(frame)))
        return True


def load(tmp_path: Path, text: str) -> config.Config:
    (tmp_path / "fastdpi.conf").write_text(text)
    return config.load(str(tmp_path / "fastdpi.conf"))


def query(version: int = 2, group: str = "::", max_ms: int = 1000, src: str = QUERIER_LL,
          hlim: int = 1) -> bytes:
    icmp = ICMPv6MLQuery2(mladdr=group, mrd=max_ms) if version == 2 else \
        ICMPv6MLQuery(mladdr=group, mrd=max_ms)
    return bytes(Ether(src=QUERIER_MAC, dst="33:33:00:00:00:01")
                 / IPv6(src=src, dst="ff02::1", hlim=hlim)
                 / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)]) / icmp)


def records(f: Ether) -> list[ICMPv6MLDMultAddrRec]:
    out = []
    for r in f[ICMPv6MLReport2].records:
        while isinstance(r, ICMPv6MLDMultAddrRec):  # scapy chains the others as payloads
            out.append(r)
            r = r.payload
    return out


def checksum_ok(f: Ether) -> bool:
    icmp = f[IPv6ExtHdrHopByHop].payload
    sent = icmp.cksum
    del icmp.cksum
    return Ether(bytes(f))[IPv6ExtHdrHopByHop].payload.cksum == sent


def test_groups_are_the_solicited_node_ones_and_all_routers_for_a_router(
        tmp_path: Path) -> None:
    plain = load(tmp_path, BASE_CONF)
    assert mld.groups(plain) == ["ff02::1:ff00:1"]  # fe80::1 and 2001:db8:100::1 share it
    router = load(tmp_path, BASE_CONF + GATEWAY)
    assert mld.groups(router) == ["ff02::1:ff00:1", "ff02::2"]
    other = load(tmp_path, BASE_CONF.replace(VGUA, "2001:db8:100::abcd") + GATEWAY)
    assert mld.groups(other) == ["ff02::1:ff00:1", "ff02::1:ff00:abcd", "ff02::2"]


def test_report_frames_follow_rfc_3810_and_2710() -> None:
    groups = ["ff02::1:ff00:1", "ff02::2"]
    f = Ether(mld.report_v2(VMAC, VLL, groups, mld.CHANGE_TO_EXCLUDE_MODE))
    assert (f.src, f.dst) == (VMAC, "33:33:00:00:00:16")
    assert (f[IPv6].src, f[IPv6].dst, f[IPv6].hlim, f[IPv6].nh) == (VLL, "ff02::16", 1, 0)
    assert any(isinstance(o, RouterAlert) and o.value == 0
               for o in f[IPv6ExtHdrHopByHop].options)
    assert [(r.rtype, r.dst, r.sources_number) for r in records(f)] == \
        [(4, groups[0], 0), (4, groups[1], 0)]
    assert checksum_ok(f)
    v1 = Ether(mld.report_v1(VMAC, VLL, "ff02::1:ff00:1"))
    assert (v1.dst, v1[IPv6].dst, v1[IPv6].hlim) == ("33:33:ff:00:00:01", "ff02::1:ff00:1", 1)
    assert v1[ICMPv6MLReport].mladdr == "ff02::1:ff00:1" and checksum_ok(v1)


def test_parse_query_takes_valid_queries() -> None:
    assert mld.parse_query(query()) == mld.Query(2, "::", 1.0)
    assert mld.parse_query(query(group="ff02::1:ff00:1", max_ms=500)) == \
        mld.Query(2, "ff02::1:ff00:1", 0.5)
    assert mld.parse_query(query(version=1, max_ms=10000)) == mld.Query(1, "::", 10.0)
    # RFC 3810 5.1.3: codes from 32768 on are exponential: 0x8000 = 0x1000 << 3 ms.
    assert mld.parse_query(query(max_ms=0x8000)).max_delay == 32.768


def test_parse_query_refuses_what_the_rfcs_refuse() -> None:
    good = query()
    bad = {
        "hop limit 255": query(hlim=255),
        "global source (RFC 3810 5.1.14)": query(src="2001:db8::99"),
        "unspecified source": query(src="::"),
        "unicast group address": query(group="2001:db8::1"),
        "wrong checksum": good[:mld.ICMP_AT + 2] + bytes([good[mld.ICMP_AT + 2] ^ 1])
        + good[mld.ICMP_AT + 3:],
        "a report, not a query": mld.report_v2(VMAC, VLL, ["ff02::2"], 2),
        "MLDv2 query shorter than 28 bytes": good[:18] + (8 + 26).to_bytes(2, "big")
        + good[20:-2],
    }
    for what, frame in bad.items():
        assert mld.parse_query(frame) is None, what
    for cut in range(len(good)):
        assert mld.parse_query(good[:cut]) is None, f"truncated to {cut} bytes"


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 119), st.binary(min_size=1, max_size=8))
def test_parse_query_never_raises(tail: bytes, at: int, patch: bytes) -> None:
    """Hostile bytes: random frames, and a valid query with random bytes patched in."""
    mld.parse_query(tail)
    frame = bytearray(query())
    frame[at:at + len(patch)] = patch
    mld.parse_query(bytes(frame))


def reporter(tmp_path: Path, text: str = BASE_CONF + GATEWAY
             ) -> tuple[mld.Reporter, Recorder]:
    rec = Recorder()
    rep = mld.Reporter(rec, random.Random(7))  # type: ignore[arg-type]
    rep.start(load(tmp_path, text), 0.0)
    return rep, rec


def drive(rep: mld.Reporter, rec: Recorder, until: float,
          queries: list[tuple[float, bytes]] | None = None) -> None:
    """The daemon's loop on the test's clock: each query at its time, each timer when due.
    handle() reads sockets, so the queries go in the way handle() hands them on."""
    feed = sorted(queries or [], key=lambda q: q[0])
    while True:
        due = rep.next_due()
        nxt = min([t for t in (due, feed[0][0] if feed else None) if t is not None],
                  default=None)
        if nxt is None or nxt > until:
            return
        rec.now = max(rec.now, nxt)
        if feed and feed[0][0] <= rec.now:
            parsed = mld.parse_query(feed.pop(0)[1])
            assert parsed is not None
            rep._answer(rep.ports["i0"], parsed, rec.now)
        else:
            rep.run(rec.now)


def on_i0(rec: Recorder) -> list[tuple[float, Ether]]:
    return [(t, f) for t, port, f in rec.sent if port == "i0"]


def test_join_at_takeover_twice_within_a_second(tmp_path: Path) -> None:
    rep, rec = reporter(tmp_path)
    assert sorted(rep.ports) == ["i0", "o0"]  # terminating: the uplink's NS count too
    drive(rep, rec, 30)
    sent = on_i0(rec)
    assert len(sent) == mld.ROBUSTNESS
    assert sent[0][0] == 0.0 and 0 <= sent[1][0] <= mld.UNSOLICITED_REPORT_INTERVAL
    assert all({r.rtype for r in records(f)} == {mld.CHANGE_TO_EXCLUDE_MODE} for _, f in sent)
    assert rep.next_due() is None  # then silence until a query


def test_queries_are_answered_within_their_delay_and_a_flood_is_bounded(
        tmp_path: Path) -> None:
    rep, rec = reporter(tmp_path)
    drive(rep, rec, 5)
    joined = len(rec.sent)
    general = [(10.0, query(max_ms=2000))]
    other_group = [(20.0, query(group="ff02::1:ff00:abcd"))]  # not ours: no answer
    flood = [(30 + i / 1000, query(max_ms=0)) for i in range(1000)]  # 1,000 in 1 s
    drive(rep, rec, 40, general + other_group + flood)
    answers = [(t, f) for t, f in on_i0(rec)[joined // 2:]]
    first = [t for t, _ in answers if 10 <= t < 20]
    assert len(first) == 1 and first[0] <= 12.0
    assert [t for t, _ in answers if 20 <= t < 30] == []
    in_flood = [t for t, _ in answers if t >= 30]
    assert 1 <= len(in_flood) <= 2, in_flood  # at most one a second (MIN_REPORT_GAP)
    assert all({r.rtype for r in records(f)} == {mld.MODE_IS_EXCLUDE} for _, f in answers)
    assert all({r.dst for r in records(f)} == set(rep.groups) for _, f in answers)


def test_an_mldv1_querier_gets_mldv1_reports(tmp_path: Path) -> None:
    rep, rec = reporter(tmp_path)
    drive(rep, rec, 5)
    before = len(rec.sent)
    drive(rep, rec, 20, [(10.0, query(version=1, max_ms=1000))])
    sent = [f for _, port, f in rec.sent[before:] if port == "i0"]
    assert sorted(f[ICMPv6MLReport].mladdr for f in sent) == sorted(rep.groups)


def test_nothing_after_stop(tmp_path: Path) -> None:
    rep, rec = reporter(tmp_path)
    rep.run(0.0)
    rep.stop()  # leaving master
    rep.run(5.0)
    rep.handle(12345, 5.0)
    assert rep.next_due() is None and rep.fds() == []
    assert len(rec.sent) == 2  # the join on i0 and o0 at 0 s, nothing after
