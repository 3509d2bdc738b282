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


# -- issue 19 and 18.3: side by side with the code before (--before TREE) ---------------------
def random_lists(lab: Lab, n: int) -> dict[str, Path]:
    """n entries each: random single addresses (9 in 10 IPv4), hosts with paths, names."""
    import random
    rnd = random.Random(19)
    paths = {k: lab.path(f"r{k}{n}") for k in ("url", "ip", "sni")}
    paths["url"].write_text("".join(f"h{i}.example/p/{i}\n" if i % 2 else f"s{i}.example\n"
                                    for i in range(n)))
    ips = []
    for i in range(n):
        if i % 10:
            ips.append(str(ipaddress.IPv4Address(rnd.randrange(1 << 24, 223 << 24))))
        else:
            ips.append(str(ipaddress.IPv6Address((0x20010db8 << 96) + rnd.randrange(1 << 64))))
    paths["ip"].write_text("\n".join(ips) + "\n")
    paths["sni"].write_text("".join(f"*.d{i}.example\n" if i % 3 == 0 else f"n{i}.example\n"
                                    for i in range(n)))
    return paths


def parse_time(lab: Lab, ns: str, tree: str, key: str, path: Path) -> float:
    out = lab.run(ns, PYTHON, "-c", (
        "import sys,time; sys.path.insert(0, sys.argv[1]);"
        "from skat_plugin.redirect import lists;"
        "t=time.perf_counter(); lists.load({sys.argv[2]: sys.argv[3]});"
        "print(time.perf_counter()-t)"), tree, key, str(path), timeout=600).stdout
    return float(out)


SET_LOAD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from skat_plugin import libnft
from skat_plugin.redirect import kernel, lists
table = "netdev skat_plugin_redirect"
got = lists.load({lists.URL: None, lists.IP: sys.argv[2]})
t = time.perf_counter()
if sys.argv[3] == "interval":  # as before: every element into the interval sets
    script = f"flush set {table} block4\nflush set {table} block6\n"
    for v in (4, 6):
        elements = [e for part in got.elements(v) for e in part]
        if elements:
            script += f"add element {table} block{v} {{ " + ", ".join(elements) + " }\n"
    assert libnft.run(script)[0] == 0
else:
    kernel.load_addresses(got)
print(time.perf_counter() - t)
"""


def set_load_time(lab: Lab, ns: str, path: Path, interval: bool) -> float:
    """This tree's kernel.load_addresses (hash sets for single addresses), or every element
    into the interval sets as the code before did."""
    script = lab.path("set_load.py")
    script.write_text(SET_LOAD)
    out = lab.run(ns, PYTHON, str(script), str(REPO), str(path),
                  "interval" if interval else "hash", timeout=900).stdout
    return float(out)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of every thread of `pids`, in ns resolution (schedstat, not clock ticks:
    an idle process uses a few ticks a minute)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return total / 1e9


def idle_cpu(lab: Lab, app, tree: str, seconds: float) -> float:
    """Percent of a core an idle inspector of `tree` uses (its guardian included)."""
    env = app.env()
    env["PYTHONPATH"] = tree
    proc = lab.popen(app.ns, PYTHON, "-m", "skat_plugin", "inspector", env=env)
    from netlab import wait_for
    wait_for(lambda: _alive(app), timeout=90, what=f"the heartbeat of {tree}'s inspector")
    time.sleep(2.0)  # lists read, settled

    def family() -> list[int]:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        extra = kids.read_text().split() if kids.exists() else []
        return [proc.pid, *map(int, extra)]
    pids = family()
    c0, t0 = cpu_seconds(pids), time.monotonic()  # exited threads are not counted: the
    # list loader has finished before this
    time.sleep(seconds)
    used = (cpu_seconds(pids) - c0) / (time.monotonic() - t0) * 100
    proc.terminate()
    proc.wait(timeout=10)
    return used


def before_after(before: str) -> None:
    rows: list[str] = []
    with Lab("bench-r19") as lab:
        topo = build_topo(lab, BASE_CONF + lists(lab, 1))
        Servers(lab, topo.up)
        app = topo.app
        # idle CPU, the code before vs this tree, interleaved
        for _ in range(2):
            for name, tree in (("before", before), ("now", str(REPO))):
                rows.append(f"| idle inspector, {name}: % of a core over 20 s | "
                            f"{idle_cpu(lab, app, tree, 20.0):.3f} % | |")
                print(rows[-1], file=sys.stderr, flush=True)
        # list parsing
        for n in (100_000, 1_000_000):
            paths = random_lists(lab, n)
            for key, file_key in (("url", "black_list_url_file"), ("sni", "black_list_sni_file"),
                                  ("ip", "black_list_ip_file")):
                now = parse_time(lab, app.ns, str(REPO), file_key, paths[key])
                if n > 100_000 and key == "ip":
                    old = "not run (over 100 s here)"
                    rows.append(f"| parse {n:,} {key} entries: before vs now | {old} vs "
                                f"{now:.2f} s | |")
                    continue
                old_s = parse_time(lab, app.ns, before, file_key, paths[key])
                rows.append(f"| parse {n:,} {key} entries: before vs now | {old_s:.2f} s vs "
                            f"{now:.2f} s | {now / old_s:.2f} |")
                print(rows[-1], file=sys.stderr, flush=True)
            hashed = set_load_time(lab, app.ns, paths["ip"], interval=False)
            if n <= 100_000:
                interval = set_load_time(lab, app.ns, paths["ip"], interval=True)
                rows.append(f"| kernel sets, {n:,} random addresses: interval sets (before) vs "
                            f"hash sets (now) | {interval:.2f} s vs {hashed:.2f} s | "
                            f"{hashed / interval:.2f} |")
            else:
                rows.append(f"| kernel sets, {n:,} random addresses: hash sets (now) | "
                            f"{hashed:.2f} s | |")
        # 18.3: the answer to a long URL vs a short one. The inspector first empties the
        # million-element sets left above (a flush that size takes the kernel a while).
        proc = app.cli_popen("inspector")
        from netlab import wait_for
        t0 = time.monotonic()
        wait_for(lambda: _alive(app), timeout=300, what="the inspector's heartbeat")
        rows.append(f"| inspector ready after emptying a 1,000,000-element set | "
                    f"{time.monotonic() - t0:.1f} s | |")
        long_path = "/news?" + "&".join(f"k{i}=v{i:06d}" for i in range(200))
        long_path = long_path[:1600]
        times: dict[str, list[float]] = {"short": [], "long": []}
        for _ in range(20):
            for name, path in (("short", "/x"), ("long", long_path)):
                r = curl(lab, topo.sub, f"http://blocked.example{path}",
                         *resolve("blocked.example", 80, SERVER))
                assert r["code"] == 302, r
                times[name].append(r["time"])
        s, lg = (statistics.median(times[k]) * 1e3 for k in ("short", "long"))
        rows.append(f"| curl: 302 to a 1,600-character URL vs a short one (median of 20) | "
                    f"{lg:.2f} ms vs {s:.2f} ms | {lg / s:.2f} |")
        proc.terminate()
    print("| measured | values | ratio |\n|---|---|---|")
    print("\n".join(rows))


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

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     epilog="It takes about two minutes and needs root.")
    parser.add_argument("--before", metavar="TREE",
                        help="instead: issue 19's and 18.3's cases side by side with a "
                             "checkout of the code before (idle CPU, list parsing, kernel "
                             "sets, the answer to a 1,600-character URL)")
    args = parser.parse_args()
    struct.calcsize("I")
    if args.before:
        before_after(args.before)
    else:
        main()
