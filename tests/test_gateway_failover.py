"""Failover of the subscribers' gateway (bras_terminate_l2=1), with real keepalived.

Two appliances, a subscriber switch, a border router and a host behind it (lab/group.py,
border=True). What a subscriber must feel: its traffic pauses for about VRRP's master-down
interval and flows again through the new master; its TCP connection survives; the border
reaches every subscriber at once, because the new master already knows them (the table
sync, skat_plugin/gateway/sync.py), not because they spoke again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))

from gatewaylab import HOST4, HOST6, SUB4, SUB6
from group import REPO, Group, master_down_interval
from netlab import PYTHON, wait_for

ADVERT = 0.1
STREAM = str(REPO / "lab" / "stream.py")


def learned(node) -> set[str]:
    out = node.app.cli("vrrp", "subscribers", "--json").stdout
    return {s["ip"] for s in json.loads(out)}


@pytest.fixture
def gw_pair(lab) -> Group:
    g = Group(lab, 2, advert_int=ADVERT, border=True)
    for n in g.nodes:
        g.start(n)
    assert g.wait_one_master(20) == "a"
    return g


def test_backup_learns_the_masters_subscribers_and_takes_over_with_them(gw_pair: Group):
    g = gw_pair
    a, b = g.nodes
    lab = g.lab
    for dst in (HOST4, HOST6):
        lab.run(g.sub, "ping", "-c", "2", "-i", "0.2", "-W", "1", dst)
    # The master learned the subscriber from its traffic; the backup from the master's sync.
    assert learned(a) >= {SUB4, SUB6}
    wait_for(lambda: learned(b) >= {SUB4, SUB6}, 5, 0.1, "the sync to reach the backup")
    assert b.app.show()["gateway"]["counters"]["forwarded_down"] == 0

    g.kill_keepalived(a)  # a crash: no goodbye
    wait_for(lambda: g.masters() == ["b"], 3, 0.02, "b to take over")
    # The border reaches the subscriber through b at once: the subscriber has not said a
    # word to b, and b drops nothing as unknown.
    lab.run(g.host, "ping", "-c", "3", "-i", "0.1", "-W", "1", SUB4)
    lab.run(g.host, "ping", "-c", "3", "-i", "0.1", "-W", "1", SUB6)
    counters = b.app.show()["gateway"]["counters"]
    assert counters["forwarded_down"] >= 6 and counters["unknown_subscriber"] == 0, counters
    daemon = json.loads((b.app.run_dir / "daemon.json").read_text())
    assert daemon["table_sync"]["stored_pairs"] >= 2, daemon["table_sync"]


def test_subscriber_traffic_pauses_for_the_failover_and_tcp_survives(gw_pair: Group):
    g = gw_pair
    a, b = g.nodes
    lab = g.lab
    lab.popen(g.host, PYTHON, STREAM, "serve")
    wait_for(lambda: lab.run(g.host, "ss", "-Hltn", "sport = :5001").stdout.strip(), 5,
             what="the stream server")
    lab.run(g.sub, "ping", "-c", "1", "-W", "1", HOST4)
    wait_for(lambda: SUB4 in learned(b), 5, 0.1, "the sync to reach the backup")
    seconds = 4.0
    pinger = lab.popen(g.sub, PYTHON, STREAM, "ping", "--host", HOST4, "--duration",
                       str(seconds))
    tcp = lab.popen(g.sub, PYTHON, STREAM, "recv", "--host", HOST4, "--duration", str(seconds))
    time.sleep(1.0)
    g.kill_keepalived(a)
    ping_out, _ = pinger.communicate(timeout=30)
    tcp_out, _ = tcp.communicate(timeout=30)
    p = json.loads(ping_out.strip().splitlines()[-1])
    t = json.loads(tcp_out.strip().splitlines()[-1])
    mdi = master_down_interval(ADVERT, b.priority)
    print(f"\nfailover at {ADVERT} s adverts: ping gap {p['max_gap_ms']} ms "
          f"({p['max_gap_ms'] / 1000 / mdi:.2f} x master-down interval {mdi * 1000:.0f} ms), "
          f"{p['received']}/{p['sent']} replies; TCP gap {t['max_gap_ms']} ms, "
          f"alive={t['alive']}")
    assert g.masters() == ["b"]
    assert t["alive"], t
    # The path is back within the master-down interval plus the takeover's own work.
    assert p["max_gap_ms"] < 1000 * mdi + 400, p
    assert p["received"] > 0.8 * p["sent"], p
