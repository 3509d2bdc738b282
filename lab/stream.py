"""What a subscriber feels through the virtual gateway: a TCP stream and a fast ping.

    stream.py serve --port 5001                  # on the host behind the border
    stream.py recv --host 203.0.113.10 --port 5001 --duration 10
    stream.py ping --host 203.0.113.10 --duration 10 [--interval 0.005]

`serve` sends 1 KiB every 2 ms on each accepted connection until the peer goes away.
`recv` reads for --duration seconds and prints one JSON line: bytes read, the longest gap
between two reads (ms), and whether the connection survived (no reset, no close, data again
at the end). `ping` runs the system's ping with timestamps and prints the longest gap
between two replies (ms), sent and received. Used by lab/lab.py and the failover tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time


def serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6 clients
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port))
    srv.listen(8)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_feed, args=(conn,), daemon=True).start()


def _feed(conn: socket.socket) -> None:
    chunk = b"\x5a" * 1024
    with conn:
        while True:
            try:
                conn.sendall(chunk)
            except OSError:
                return
            time.sleep(0.002)


def recv(host: str, port: int, duration: float) -> dict:
    result = {"bytes": 0, "max_gap_ms": 0.0, "alive": False, "error": None}
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        result["error"] = f"connect: {e}"
        return result
    sock.settimeout(0.5)
    start = last = time.monotonic()
    late_bytes = 0
    while time.monotonic() - start < duration:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as e:
            result["error"] = str(e)
            break
        now = time.monotonic()
        if not data:
            result["error"] = "closed by the peer"
            break
        result["max_gap_ms"] = max(result["max_gap_ms"], (now - last) * 1000)
        last = now
        result["bytes"] += len(data)
        if now - start > duration - 1:
            late_bytes += len(data)
    sock.close()
    # Survived: never reset or closed, and data still flowing in the last second.
    result["alive"] = result["error"] is None and late_bytes > 0
    result["max_gap_ms"] = round(result["max_gap_ms"], 1)
    return result


def ping(host: str, duration: float, interval: float) -> dict:
    count = int(duration / interval)
    out = subprocess.run(["ping", "-D", "-n", "-i", str(interval), "-c", str(count),
                          "-W", "1", host], capture_output=True, text=True).stdout
    times = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {"sent": count, "received": len(times),
            "max_gap_ms": round(max(gaps, default=0.0) * 1000, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=5001)
    r = sub.add_parser("recv")
    r.add_argument("--host", required=True)
    r.add_argument("--port", type=int, default=5001)
    r.add_argument("--duration", type=float, default=10)
    g = sub.add_parser("ping")
    g.add_argument("--host", required=True)
    g.add_argument("--duration", type=float, default=10)
    g.add_argument("--interval", type=float, default=0.005)
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a.port)
        return 0
    res = recv(a.host, a.port, a.duration) if a.cmd == "recv" else \
        ping(a.host, a.duration, a.interval)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
