"""What is on the wire: tcpdump captures read back with scapy, and raw frames sent from a namespace.

    with Capture(lab, sub, "s0") as cap:
        lab.run(sub, "arping", ...)
    frames = cap.frames              # scapy packets, in order, with .time

A capture is `tcpdump -w` (packet-buffered, immediate mode) started inside the namespace; it
is ready once tcpdump says it is listening, and stopped with SIGINT so that it flushes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from netlab import PYTHON, Lab

# scapy is slow to import and chatty; only the modules used here.
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, IPv6  # noqa: F401
from scapy.layers.l2 import ARP, Ether  # noqa: F401
from scapy.utils import rdpcap

_SENDER = """
import errno, socket, sys
mark = int(sys.argv[2], 0)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
if mark:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
s.bind((sys.argv[1], 0))
refused = 0
for h in sys.argv[3:]:
    try:
        s.send(bytes.fromhex(h))
    except OSError as e:  # ENOBUFS: a netdev egress rule dropped it
        if e.errno != errno.ENOBUFS:
            raise
        refused += 1
print(refused)
"""


class Capture:
    def __init__(self, lab: Lab, ns: str, dev: str, bpf: str = "") -> None:
        self.lab, self.ns, self.dev = lab, ns, dev
        self.path = lab.path(f"cap-{ns[-8:]}-{dev}-{time.monotonic_ns()}.pcap")
        self.bpf = bpf
        self.proc: subprocess.Popen[str] | None = None
        self.frames: list = []
        self.stopped = False

    def start(self) -> Capture:
        cmd = ["tcpdump", "-i", self.dev, "-U", "--immediate-mode", "-n", "-s", "256",
               "-w", str(self.path)]
        if self.bpf:
            cmd.append(self.bpf)
        self.proc = self.lab.popen(self.ns, *cmd)
        assert self.proc.stdout is not None
        said = ""
        while "listening on" not in said:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"tcpdump on {self.dev} in {self.ns} did not start: {said}")
            said += line
        os.set_blocking(self.proc.stdout.fileno(), False)
        return self

    def stop(self, settle: float = 0.1) -> list:
        """Stop after `settle` seconds (late frames would still be caught) and read the pcap.

        Leaving the `with` block stops with the default settle time; stop() after that only
        returns the frames.
        """
        assert self.proc is not None
        if self.stopped:
            return self.frames
        self.stopped = True
        time.sleep(settle)
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=10)
        self.frames = list(rdpcap(str(self.path))) if Path(self.path).stat().st_size else []
        return self.frames

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and not self.stopped:
            self.stop()


def send_frames(lab: Lab, ns: str, dev: str, frames: list[bytes], mark: int = 0) -> int:
    """Send raw Ethernet frames on `dev` from a packet socket inside `ns` (SO_MARK if mark).

    Returns how many sends the kernel refused with ENOBUFS (dropped at the port's egress).
    """
    res = lab.run(ns, PYTHON, "-c", _SENDER, dev, hex(mark), *(bytes(f).hex() for f in frames))
    return int(res.stdout.split()[-1])


def mac_of(lab: Lab, ns: str, dev: str) -> str:
    out = lab.run(ns, "ip", "-j", "link", "show", "dev", dev).stdout
    return json.loads(out)[0]["address"].lower()


def src_macs(frames: list) -> list[str]:
    return [f[Ether].src.lower() for f in frames if Ether in f]
