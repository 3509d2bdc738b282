"""Benchmarks of the black-list redirect (issue 8), each measured side by side in one run.

    /usr/bin/python3 bench/redirect.py       (root; prints Markdown; about two minutes)

1. Time to the answer seen by curl: the inspector's 302 vs. a real server's 200 (medians).
2. Packets a second of non-HTTP traffic (64-byte TCP to port 443, no payload) through the
   master with 100,000 list entries loaded vs. no redirect configured (trafgen, interleaved).
3. List size 1, 1,000, 100,000: load time (parse + one kernel transaction), the kernel's cost
   per packet (SYNs to open addresses, which look up the interval set) and the inspector's
   per-request decision time.
4. New HTTP requests a second the inspector handles (first request segments at rising rates,
   black_list_inspect_rate lifted), and beyond the configured rate: passed, counted.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import BASE_CONF, build_topo  # noqa: E402
from netlab import PYTHON, Lab  # noqa: E402
from redirectlab import Servers, counters, curl, resolve, start_inspector  # noqa: E402
from wire import mac_of  # noqa: E402

from skat_plugin.redirect import packet  # noqa: E402

SERVER = "100.64.0.20"


def lists(lab: Lab, n: int) -> str:
    urls, ips, snis = lab.path(f"u{n}"), lab.path(f"i{n}"), lab.path(f"s{n}")
    urls.write_text("blocked.example\n" + "".join(f"h{i}.example/p{i}\n" for i in range(n - 1)))
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    ips.write_text("".join(f"{ipaddress.IPv4Address(base + 4 * i)}/30\n" for i in range(n)))
    snis.write_text("".join(f"s{i}.example\n" for i in range(n)))
    return (f"black_list_url_file={urls}\nblack_list_ip_file={ips}\n"
            f"black_list_sni_file={snis}\nblack_list_redirect=http://notice.example/?\n")


def trafgen(lab: Lab, ns: str, frame: bytes, seconds: float, rate: int = 0) -> None:
    cfg = lab.path(f"tg-{time.monotonic_ns()}.cfg")
    cfg.write_text("{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n")
    args = ["timeout", "-s", "INT", str(seconds), "trafgen", "-q", "-o", "s0", "-c", str(cfg)]
    if rate:
        args += ["-b", f"{rate}pps"]
    lab.run(ns, *args, check=False, timeout=seconds + 10)


def rx_packets(lab: Lab, ns: str, dev: str) -> int:
    out = json.loads(lab.run(ns, "ip", "-s", "-j", "link", "show", dev).stdout)
    return int(out[0]["stats64"]["rx"]["packets"])


def pps(lab: Lab, topo, frame: bytes, seconds: float = 2.0) -> float:
    before = rx_packets(lab, topo.up, "u0")
    t0 = time.monotonic()
    trafgen(lab, topo.sub, frame, seconds)
    time.sleep(0.2)
    return (rx_packets(lab, topo.up, "u0") - before) / (time.monotonic() - t0 - 0.2)


def reload(app, conf: str) -> float:
    """fdpi_cli reload, then wait until the inspector has read the new configuration's lists
    (it reads them in a thread: measuring meanwhile would measure that thread)."""
    app.write_conf(conf)
    t0 = time.monotonic()
    app.cli("reload", timeout=120)
    took = time.monotonic() - t0
    if "black_list" not in conf:
        time.sleep(1.5)
        return took
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = json.loads((app.run_dir / "inspector.json").read_text())
        red = app.show()["redirect"]
        if red and red["inspector"]["alive"] and st.get("lists") and st.get("ports") \
                and time.time() - st["updated"] < 1.5 and _alive(app):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    return took


def _alive(app) -> bool:
    from redirectlab import alive_ports
    return alive_ports(app)


def tcp_to(topo, lab: Lab, dst: str, dport: int, flags: int, payload: bytes = b"") -> bytes:
    smac, dmac = mac_of(lab, topo.sub, "s0"), mac_of(lab, topo.up, "u0")
    return packet.tcp_frame(bytes.fromhex(dmac.replace(":", "")),
                            bytes.fromhex(smac.replace(":", "")), b"", 4,
                            ipaddress.IPv4Address("100.64.0.10").packed,
                            ipaddress.IPv4Address(dst).packed, 40000, dport, 1000, 1, flags,
                            payload)


def decide_cost(n: int, lab: Lab) -> float:
    """Microseconds per lists lookup (URL + address), in this process."""
    from skat_plugin.redirect import lists as L
    got = L.load({L.URL: str(lab.path(f"u{n}")), L.IP: str(lab.path(f"i{n}"))})
    addr = ipaddress.IPv4Address("192.0.2.1")
    rounds = 20000
    t0 = time.perf_counter()
    for i in range(rounds):
        got.url_blocked(f"h{i % 997}.example", "/other/path")
        got.ip_blocked(addr)
    return (time.perf_counter() - t0) / rounds * 1e6


def main() -> None:
    rows: list[str] = []
    with Lab("bench-redir") as lab:
        sizes = (1, 1000, 100000)
        confs = {n: lists(lab, n) for n in sizes}
        topo = build_topo(lab, BASE_CONF + confs[100000])
        Servers(lab, topo.up)
        app = topo.app
        start_inspector(app)

        # 1. time to the answer
        blocked, served = [], []
        for _ in range(40):
            r = curl(lab, topo.sub, "http://blocked.example/x",
                     *resolve("blocked.example", 80, SERVER))
            assert r["code"] == 302, r
            blocked.append(r["time"])
            r = curl(lab, topo.sub, "http://free.example/x", *resolve("free.example", 80, SERVER))
            assert r["code"] == 200, r
            served.append(r["time"])
        b, s = statistics.median(blocked) * 1e3, statistics.median(served) * 1e3
        rows.append(f"| curl: 302 from the inspector vs 200 from a real server (median of 40) "
                    f"| {b:.2f} ms vs {s:.2f} ms | {b / s:.2f} |")

        # 2. non-HTTP packet rate, lists loaded vs. no redirect
        frame = tcp_to(topo, lab, SERVER, 443, packet.ACK)
        on, off = [], []
        for _ in range(3):
            reload(app, BASE_CONF + confs[100000])
            on.append(pps(lab, topo, frame))
            reload(app, BASE_CONF)
            off.append(pps(lab, topo, frame))
        mon, moff = statistics.median(on), statistics.median(off)
        rows.append(f"| 64-byte TCP to :443, pps: 100,000 entries loaded vs no redirect "
                    f"(median of 3 x 2 s, interleaved) | {mon:,.0f} vs {moff:,.0f} | "
                    f"{mon / moff:.3f} |")

        # 3. list size: load time, kernel per-packet cost (SYNs to an open address), decision
        syn = tcp_to(topo, lab, SERVER, 443, packet.SYN)
        base_pps = None
        for n in sizes:
            reload_s = reload(app, BASE_CONF + confs[n])
            load = lab.run(app.ns, PYTHON, "-c", (
                "import sys,time; sys.path.insert(0, sys.argv[1]);"
                "from skat_plugin.redirect import lists, kernel;"
                "t=time.perf_counter(); l=lists.load({lists.URL: sys.argv[2], lists.IP: "
                "sys.argv[3], lists.SNI: sys.argv[4]}); p=time.perf_counter();"
                "kernel.load_addresses(l); k=time.perf_counter();"
                "print(p-t, k-p)"), str(REPO), str(lab.path(f"u{n}")), str(lab.path(f"i{n}")),
                str(lab.path(f"s{n}")), env=app.env()).stdout.split()
            rate = statistics.median(pps(lab, topo, syn) for _ in range(2))
            base_pps = base_pps or rate
            rows.append(f"| {n:,} entries each list: parse {float(load[0]) * 1e3:.1f} ms, "
                        f"kernel sets {float(load[1]) * 1e3:.1f} ms (fdpi_cli reload "
                        f"{reload_s:.2f} s); SYN pps {rate:,.0f}; decision "
                        f"{decide_cost(n, lab):.2f} us | | {rate / base_pps:.3f} |")

        # 4. inspector capacity: first request segments to an open host at rising rates
        reload(app, BASE_CONF + confs[1] + "black_list_inspect_rate=1000000\n")
        get = tcp_to(topo, lab, SERVER, 80, packet.ACK | packet.PSH,
                     b"GET / HTTP/1.1\r\nHost: free.example\r\n\r\n")
        for rate in (2000, 5000, 10000, 20000):
            before = counters(app)
            t0 = time.monotonic()
            trafgen(lab, topo.sub, get, 2.0, rate)
            time.sleep(1.5)
            after = counters(app)
            spent = time.monotonic() - t0 - 1.5
            done = after["allowed"] - before["allowed"]
            passed = after["passed_uninspected"] - before["passed_uninspected"]
            lost = json.loads((app.run_dir / "inspector.json").read_text())["counters"]["lost"]
            rows.append(f"| offered {rate:,}/s, rate limit off: decided {done / spent:,.0f}/s,"
                        f" passed uninspected {passed}, lost so far {lost} | | |")
        reload(app, BASE_CONF + confs[1] + "black_list_inspect_rate=2000\n")
        before = counters(app)
        trafgen(lab, topo.sub, get, 2.0, 10000)
        time.sleep(1.5)
        after = counters(app)
        rows.append(f"| offered 10,000/s, black_list_inspect_rate=2000: decided "
                    f"{after['allowed'] - before['allowed']}, passed uninspected (counted) "
                    f"{after['uninspected_overload'] - before['uninspected_overload']} | | |")
    print("| measured | values | ratio |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    import argparse

    # No options: --help says what runs, instead of running it.
    argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                            epilog="It takes about two minutes and needs root.").parse_args()
    struct.calcsize("I")
    main()
