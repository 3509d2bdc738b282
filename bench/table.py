"""The control plane at scale: what reading the gateway's table costs with N subscribers.

    /usr/bin/python3 bench/table.py [--subscribers 1000000] [--old]   (root)

One appliance (bras_terminate_l2=1) in a fresh namespace; N subscribers written into sub4
(libnftables, in batches); then, in a process inside that namespace, each read the daemon,
`vrrp show` and the metrics make, timed (median of 5): the element count, the counters, the
table fingerprint the daemon's repair check takes, which role is loaded, `role.show()`
whole, and that process's peak RSS. --old adds the libnftables listings these reads used
before (each one reads every element first: minutes at a million).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import BASE_CONF  # noqa: E402
from machine import loadavg, machine  # noqa: E402
from netlab import PYTHON, Lab  # noqa: E402

CONF = BASE_CONF + """bras_terminate_l2=1
bras_gateway_ip=198.51.100.1
bras_gateway_mac=02:00:00:00:fe:01
bras_subscriber_timeout=86400
"""

# Run inside the appliance's namespace: fill, then time each read.
PROBE = r"""
import resource, statistics, sys, time
from nftables import Nftables
from skat_plugin import libnft, nftapply, role
from skat_plugin.gateway import subscribers
n, old = int(sys.argv[1]), sys.argv[2] == "1"
started = time.perf_counter()
for s in range(0, n, 50000):
    els = ", ".join(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255} : "
                    f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
                    for i in range(s, min(n, s + 50000)))
    rc, _, err = Nftables().cmd(f"add element netdev skat_plugin_gateway sub4 {{ {els} }}")
    assert rc == 0, err
print(f"| fill {n} subscribers | {time.perf_counter() - started:.1f} s |")
reads = [("subscribers.count()", subscribers.count),
         ("subscribers.table_state()", subscribers.table_state),
         ("nftapply.read_gateway_counters()", nftapply.read_gateway_counters),
         ("nftapply.read_counter(foreign_master_frames)",
          lambda: nftapply.read_counter("foreign_master_frames")),
         ("nftapply.snapshot() (repair check)", nftapply.snapshot),
         ("nftapply.loaded_role()", nftapply.loaded_role),
         ("subscribers.read_fresh()", subscribers.read_fresh),
         ("role.show() (vrrp show, metrics)", role.show)]
if old:
    reads += [(f"libnftables `{c}` (before)", lambda c=c: libnft.run(c))
              for c in ("list tables", "list counter netdev skat_plugin_master arp_replies")]
for name, f in reads:
    times = []
    for _ in range(1 if "before" in name else 5):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    print(f"| {name} | {statistics.median(times) * 1000:.2f} ms |")
print(f"| peak RSS of this process | "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB |")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=1_000_000)
    ap.add_argument("--old", action="store_true", help="also the libnftables listings")
    a = ap.parse_args()
    print(f"machine: {machine()}; load before: {loadavg()}")
    with Lab("table") as lab:
        app = lab.appliance("app", CONF)
        peer = lab.ns("peer")
        lab.veth(peer, "s0", app.ns, "i0")
        lab.veth(peer, "u0", app.ns, "o0")
        app.cli("start")
        res = lab.run(app.ns, PYTHON, "-c", PROBE, str(a.subscribers), str(int(a.old)),
                      env=app.env(), timeout=3600)
        print("| read | median |\n|---|---:|")
        print(res.stdout, end="")
    print(f"load after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
