"""The inspector: decides what the kernel selected, and answers or lets it go on.

    fdpi_cli inspector        (units/skat-plugin-inspector.service; tests and containers)

The kernel (nft/redirect.nft.in) takes away the start of each HTTP request and TLS
ClientHello (and the next segments of its flow for a while), and TCP SYNs and data to a
blocked address, on the subscriber ports, and hands a copy to this process on the loopback
device, marked with its port. Every other packet never leaves the kernel. For each packet
handed over:

    to a blocked address            SYN: reset to the subscriber (the server never saw it);
                                    data to port 80: the notice (302/403), whatever it says
    HTTP request, blocked           302 to black_list_redirect (403 without it) to the
      (Host + path; http.py)        subscriber, with FIN; a reset to the server
    ClientHello, blocked name       a reset to the subscriber and one to the server
    a request or hello cut short    held (holds.py) until the flow's next segments complete
                                    it, then decided as a whole; reset when a bound is hit
    a Fast Open SYN with data       decided by its data
    anything else                   re-injected, unchanged, out of the paired uplink port
                                    (with bras_terminate_l2=1 and the frame addressed to
                                    bras_arp_mac: from bras_arp_mac to bras_gateway_mac,
                                    as the gateway would have sent it)

Every frame goes out through one packet socket marked with vrrp_socket_mark: in backup the
guard drops it at the port (nft/backup.nft), whatever this process still believes.

Fail-open: the kernel takes packets away only while this process keeps its ports in the
kernel's @alive map (timeout 3 s). A thread renews them every second (a netlink batch of
~40 us: kernel.heartbeat), but only while the main loop has turned within PROGRESS_LIMIT and
the sockets lost nothing. A guardian child blocks on a pipe and removes the ports the moment
this process ends, however it ends. So a dead inspector lets the traffic pass at once, a
hung or drowning one within 3 s (at once on SIGTERM and when packets are lost), uninspected
and counted. Fail-closed: what the kernel decides alone (addresses on black_list_ip_file)
stays blocked without this process (nft/redirect.nft.in).

What it reads: the configuration the plugin last loaded (state.json, as `vrrp set` does),
so `fdpi_cli reload` reaches it; the black-list files, read again when one changes (hot:
the new lists replace the old in one step, a malformed file keeps the old lists and logs
file and line; the address sets in the kernel are replaced in one transaction). It learns
of both by inotify, at once; a check every CHECK_EVERY stays as a safety net. Counters go
to $SKAT_RUN_DIR/inspector.json every CHECK_EVERY, within STATUS_SOON of a decision, and as
soon as a list is read, with the files' stamp it was read from (`lists_stamp`): `fdpi_cli
reload` waits for that stamp, so the lists are in effect when it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import atomicfile, packetsock, report, state
from ..announce import Sender, mac_bytes
from ..config import Config
from ..watch import inotify
from . import HEARTBEAT_EVERY, enabled, holds, http, kernel, lists, packet, port_mark, tls
from .apply import STATUS_FILE

RCVBUF = 4 << 20
READ_BATCH = 256
CHECK_EVERY = 2.0      # s: configuration, list files, socket losses, status file (inotify
                       # wakes the loop at once for the first two: this is a safety net)
PROGRESS_LIMIT = CHECK_EVERY + 1.0  # s: a loop that has not turned for this long is hung
STATUS_SOON = 0.1      # s: after a decision, the status file is written within this
ALLOW, BLOCK, MORE, REFUSE = "allow", "block", "more", "refuse"
MAX_BODIES = 16384     # flows whose allowed request's body is still coming
BODY_TTL = 5.0         # s: the kernel follows a flow for FOLLOW_MS only; this is plenty


def _filter(mark: int) -> list[packetsock.Instruction]:
    """Classic BPF: only the copies the kernel made for this port (mark), as sent (the
    loopback device also receives each one back)."""
    ld_w, jeq, ret = packetsock.LD_W_ABS, packetsock.JEQ_K, packetsock.RET_K
    return [
        (ld_w, 0, 0, (packetsock.SKF_AD_OFF + packetsock.SKF_AD_MARK) & 0xFFFFFFFF),
        (jeq, 0, 3, mark),
        (ld_w, 0, 0, (packetsock.SKF_AD_OFF + packetsock.SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (jeq, 0, 1, packetsock.PACKET_OUTGOING),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]


def open_port_socket(mark: int) -> socket.socket:
    return packetsock.open_filtered("lo", _filter(mark), rcvbuf=RCVBUF)


@dataclass
class _Port:
    name: str
    uplink: str
    mark: int
    sock: socket.socket


class Inspector:
    def __init__(self) -> None:
        self.cfg: Config | None = None
        self.lists = lists.Lists()
        self.list_stamp: tuple = ()
        self.list_error: str | None = None
        self.read_stamp: tuple | None = None  # the files' stamp the lists were last read from
        self.state_stamp: tuple | None = None
        self.ports: dict[int, _Port] = {}
        self.sender: Sender | None = None
        self.counters = dict.fromkeys(("redirected", "forbidden", "reset", "allowed",
                                       "uninspected_behind", "undecided", "lost", "held",
                                       "held_acked", "held_expired", "dropped"), 0)
        self.holds = holds.Holds()
        self.bodies: dict[holds.Key, tuple[int, float]] = {}
        self.ready = False  # the lists of the current configuration are loaded
        self.loader: threading.Thread | None = None
        self.progress = time.monotonic()
        self.status_at = 0.0
        self.behind_until = 0.0
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # the port list, between the loop and the heartbeat
        # Wake-ups: the run directory and the list files' directories change (inotify); the
        # list loader is done (a pipe). Either makes the loop look at once.
        self.notify = inotify.Inotify()
        self.watched: set[str] = set()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.guardian: int | None = None

    # -- configuration --------------------------------------------------------------------
    def _state_stamp(self) -> tuple | None:
        try:
            st = os.stat(state.run_dir() / "state.json")
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def check_config(self) -> None:
        stamp = self._state_stamp()
        if stamp == self.state_stamp:
            return
        self.state_stamp = stamp
        st = state.load() if stamp else None
        cfg = Config.from_snapshot(st["config"]) if st else None
        if cfg is not None and not enabled(cfg.values):
            cfg = None
        old = self.cfg
        if cfg is not None and old is not None and cfg.values == old.values:
            return
        self._close_ports()
        self.cfg = cfg
        if cfg is None:
            return
        if self.sender is None:
            self.sender = Sender(cfg["vrrp_socket_mark"])
        else:
            self.sender.set_mark(cfg["vrrp_socket_mark"])
        ports = {}
        for index, (port, uplink) in enumerate(cfg.pairs):
            sock = open_port_socket(port_mark(index))
            ports[sock.fileno()] = _Port(port, uplink, port_mark(index), sock)
        with self.lock:
            self.ports = ports
        self.tell_guardian({p.name: p.mark for p in ports.values()})
        self.list_stamp = ()  # read the lists of this configuration; no heartbeat before
        self.ready = False
        report.event(f"inspector: inspecting {', '.join(cfg.in_ports)}", cause="inspector")

    def check_lists(self) -> None:
        """A changed list file is read in a thread of its own (100,000 entries take about a
        second): meanwhile the loop goes on deciding with the old lists, and the new ones
        replace them in one step."""
        if self.cfg is None or (self.loader is not None and self.loader.is_alive()):
            return
        stamp = lists.stamp(self.cfg.values)
        if stamp == self.list_stamp:
            return
        self.list_stamp = stamp
        self.loader = threading.Thread(target=self._load_lists, args=(self.cfg, stamp),
                                       name="lists", daemon=True)
        self.loader.start()

    def _load_lists(self, cfg: Config, stamp: tuple) -> None:
        started = time.monotonic()
        try:
            new = lists.load(cfg.values)
            kernel.load_addresses(new)
        except (lists.ListError, OSError) as e:
            self.list_error, self.read_stamp = str(e), stamp
            report.error(f"inspector: black lists not loaded, the old ones stay: {e}",
                         cause="inspector")
            self._wake()
            return
        if cfg is not self.cfg:  # the configuration changed meanwhile: read again
            self._wake()
            return
        self.lists, self.list_error, self.ready, self.read_stamp = new, None, True, stamp
        report.event(f"inspector: black lists loaded in {time.monotonic() - started:.3f} s "
                     f"({new.entries})", cause="inspector")
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"!")

    def watch_files(self) -> None:
        """inotify on the run directory (state.json) and on each list file's directory
        (files are often replaced by rename; a directory watch sees that)."""
        dirs = {os.path.dirname(f) for f in self._files_of_interest()}
        for d in dirs - self.watched:
            if self.notify.watch(Path(d), inotify.CHANGES | inotify.IN_ATTRIB):
                self.watched.add(d)

    def _close_ports(self) -> None:
        with self.lock:
            ports, self.ports = self.ports, {}
        if ports:
            kernel.stop_heartbeat({p.name: p.mark for p in ports.values()})
        for p in ports.values():
            p.sock.close()

    # -- the guardian: fail open the moment this process dies, however it dies ---------------
    def start_guardian(self) -> None:
        """A child that blocks on a pipe (no CPU at all) and learns the ports from it; when
        the pipe closes (this process ended: a crash, SIGKILL, an exception) it removes the
        ports from @alive, so the kernel passes packets at once instead of a heartbeat
        timeout later. Forked before any thread starts."""
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the guardian
            os.close(w)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # stays until its parent is gone
            ports: dict[str, int] = {}
            code = 0
            try:
                with os.fdopen(r, "rb", buffering=0) as pipe:
                    for line in pipe:
                        ports = dict((name, int(mark, 16)) for name, mark in
                                     (item.split("=") for item in line.decode().split()))
                kernel.stop_heartbeat(ports)
            except Exception:  # a guardian never prints a traceback
                code = 1
            os._exit(code)
        os.close(r)
        self.guardian = w

    def tell_guardian(self, ports: dict[str, int]) -> None:
        if self.guardian is None:
            return
        line = " ".join(f"{name}={mark:#x}" for name, mark in ports.items()) + "\n"
        with contextlib.suppress(OSError):
            os.write(self.guardian, line.encode())

    # -- the heartbeat (a thread: libnftables' delete waits for RCU, up to 30 ms) -----------
    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_EVERY):
            with self.lock:
                names = {p.name: p.mark for p in self.ports.values()}
            now = time.monotonic()
            if not names or not self.ready:
                continue
            if now - self.progress > PROGRESS_LIMIT or now < self.behind_until:
                kernel.stop_heartbeat(names)  # fail open: the kernel lets packets pass
                continue
            kernel.heartbeat(names)

    def check_losses(self) -> None:
        """Packets the sockets dropped were taken away by the kernel and are lost (the
        subscriber sends them again): fall back to passing for a while."""
        lost = 0
        for p in list(self.ports.values()):
            with contextlib.suppress(OSError):
                stats = p.sock.getsockopt(packetsock.SOL_PACKET, packetsock.PACKET_STATISTICS, 8)
                _, drops = struct.unpack("II", stats)
                lost += drops
        if lost:
            self.counters["lost"] += lost
            self.behind_until = time.monotonic() + 2.0
            with self.lock:
                names = {p.name: p.mark for p in self.ports.values()}
            kernel.stop_heartbeat(names)
            report.warning(f"inspector: {lost} selected packets lost (falling behind); "
                           f"passing uninspected for 2 s", cause="inspector")

    # -- deciding -----------------------------------------------------------------------------
    def _server_macs(self, seg: packet.Segment) -> tuple[bytes, bytes]:
        """(destination, source) for a frame toward the server: the subscriber's own, or
        the gateway's rewrite for a frame addressed to the virtual MAC."""
        cfg = self.cfg
        assert cfg is not None
        if cfg.terminates and seg.dst_mac == mac_bytes(cfg["bras_arp_mac"]):
            gw = cfg["bras_gateway_mac"]
            if seg.version == 6:
                gw = cfg.get("bras_gateway_ipv6_mac") or gw
            return mac_bytes(gw), seg.dst_mac
        return seg.dst_mac, seg.src_mac

    def decide(self, port: _Port, frame: bytes) -> None:
        assert self.cfg is not None and self.sender is not None
        seg = packet.parse(frame)
        if seg is None:  # unreadable (IPv6 extension headers): a blocked address stays so
            dst_ip = packet.destination(frame)
            if dst_ip is not None and self.lists.ip_blocked(dst_ip):
                self.counters["dropped"] += 1
                return
            self.counters["undecided"] += 1
            self.sender.send(port.uplink, frame)
            return
        dst, src = self._server_macs(seg)
        key = holds.key_of(seg)
        if self.lists.ip_blocked(seg.dst_ip):
            self.holds.pop(key)
            self._blocked_address(port, seg, dst, src)
            return
        if seg.flags & packet.SYN:
            self._fast_open(port, seg, dst, src)
            return
        held = self.holds.get(key)
        if held is None and self._in_body(key, seg):
            self._reinject(port, [seg], dst, src)
            return
        if held is not None:
            if seg.seq in held.segments:  # sent again: the sender waits for an ACK (Nagle)
                _data, after, _last = held.data()
                self.sender.send(port.name, packet.ack_to_subscriber(seg, after))
                self.counters["held_acked"] += 1
                return
            if self.holds.add(port.name, seg) is None:
                self._refuse(port, seg, dst, src, held.start)
                return
            data, after, last = held.data()
            start = held.start
        else:
            data, after, last, start = seg.payload, seg.seq + len(seg.payload), seg, seg.seq
        verdict, req = self._verdict(seg, data, start)
        if verdict == MORE:
            if held is None and self.holds.add(port.name, seg) is None:
                self._refuse(port, seg, dst, src, start)
                return
            self.counters["held"] += held is None
            return
        segments = held.ordered() if held is not None else [seg]
        self.holds.pop(key)
        if verdict == REFUSE:
            self._refuse(port, last, dst, src, start, after)
        elif verdict == BLOCK:
            self._block(port, last, dst, src, req, start, after,
                        held.largest if held is not None else 0)
        else:
            self._reinject(port, segments, dst, src)

    def _verdict(self, seg: packet.Segment, data: bytes,
                 start: int | None = None) -> tuple[str, http.Request | None]:
        """ALLOW, BLOCK (with the request that is, for port 80), MORE or REFUSE. `start`:
        the sequence number of data's first byte (an allowed request's body is noted)."""
        if seg.dport == 443:
            status, name = tls.server_name(data)
            if status == tls.MORE:
                return MORE, None
            if status == tls.TOO_BIG:
                return REFUSE, None
            return (BLOCK if name and self.lists.sni_blocked(name) else ALLOW), None
        parsed = http.parse(data)
        for req in parsed.requests:  # pipelined: each one decided; one blocked blocks
            if req.version == "HTTP/0.9":  # no Host to match, and no browser speaks it
                return BLOCK, req
            host = req.host if req.host is not None else str(seg.dst_ip)
            if self.lists.url_blocked(host, req.path):
                return BLOCK, req
        if parsed.too_long:
            return REFUSE, None
        if parsed.incomplete:
            return MORE, None
        if parsed.body_left > 0 and start is not None:
            self._body_until(holds.key_of(seg), (start + len(data) + parsed.body_left)
                             & 0xFFFFFFFF)
        return ALLOW, None

    def _body_until(self, key: holds.Key, end: int) -> None:
        """An allowed request's body (Content-Length) goes on up to `end`: segments that
        start before it are not request starts. (A chunked body's end is not known: its
        segments are read as any, and chunk data is not a request.)"""
        if len(self.bodies) >= MAX_BODIES:
            self.bodies.pop(next(iter(self.bodies)))
        self.bodies[key] = (end, time.monotonic() + BODY_TTL)

    def _in_body(self, key: holds.Key, seg: packet.Segment) -> bool:
        body = self.bodies.get(key)
        if body is None:
            return False
        end, until = body
        if time.monotonic() > until or (seg.seq - end) & 0xFFFFFFFF < 0x80000000:
            del self.bodies[key]
            return False
        return True

    def _answer(self, port: _Port, seg: packet.Segment, dst: bytes, src: bytes,
                req: http.Request | None, start: int, after: int, seen: int) -> None:
        """302 (403 without black_list_redirect) to the subscriber, a reset to the server."""
        assert self.cfg is not None and self.sender is not None
        url = self.cfg.get("black_list_redirect")
        host = str(seg.dst_ip) if req is None or not req.host else req.host
        body = packet.http_answer(url, host, req.raw_path if req else "/",
                                  req.method if req else "GET")
        for frame in packet.answer_to_subscriber(seg, body, after,
                                                 packet.answer_mss(seg, seen)):
            self.sender.send(port.name, frame)
        self.sender.send(port.uplink, packet.reset_to_server(seg, dst, src, start))
        self.counters["redirected" if url else "forbidden"] += 1

    def _block(self, port: _Port, seg: packet.Segment, dst: bytes, src: bytes,
               req: http.Request | None, start: int, after: int, seen: int) -> None:
        if seg.dport == 443:
            self._refuse(port, seg, dst, src, start, after)
            return
        self._answer(port, seg, dst, src, req, start, after, seen)

    def _refuse(self, port: _Port, seg: packet.Segment, dst: bytes, src: bytes, start: int,
                after: int | None = None) -> None:
        """Resets both ways: the flow is blocked, or beyond what the inspector holds."""
        assert self.sender is not None
        self.holds.pop(holds.key_of(seg))
        self.sender.send(port.name, packet.reset_to_subscriber(seg, after))
        self.sender.send(port.uplink, packet.reset_to_server(seg, dst, src, start))
        self.counters["reset"] += 1

    def _blocked_address(self, port: _Port, seg: packet.Segment, dst: bytes,
                         src: bytes) -> None:
        """Whatever the payload: an address on black_list_ip_file is blocked."""
        assert self.sender is not None
        if seg.flags & packet.SYN:  # refused, before the server saw anything
            self.sender.send(port.name, packet.reset_to_subscriber(seg))
            self.counters["reset"] += 1
        elif seg.dport == 80 and seg.payload:
            parsed = http.parse(seg.payload)
            req = parsed.requests[0] if parsed.requests else None
            self._answer(port, seg, dst, src, req, seg.seq, seg.seq + len(seg.payload), 0)
        else:
            self._refuse(port, seg, dst, src, seg.seq)

    def _fast_open(self, port: _Port, seg: packet.Segment, dst: bytes, src: bytes) -> None:
        """A SYN with data (TCP Fast Open, RFC 7413) to an address that is not blocked:
        decided by its data. A request that is not complete in the SYN goes on without its
        data: the server acknowledges only the SYN, and the subscriber sends the data again
        after the handshake, where it is read as any request."""
        assert self.sender is not None
        verdict, _req = self._verdict(seg, seg.payload) if seg.payload else (ALLOW, None)
        if verdict in (BLOCK, REFUSE):
            self.sender.send(port.name, packet.reset_to_subscriber(seg))
            self.counters["reset"] += 1
            return
        keep = verdict == ALLOW
        self.sender.send(port.uplink, packet.reinjected(seg, dst, src, keep_data=keep))
        self.counters["allowed"] += 1

    def _reinject(self, port: _Port, segments: list[packet.Segment], dst: bytes,
                  src: bytes) -> None:
        assert self.sender is not None
        for seg in segments:
            self.sender.send(port.uplink, packet.reinjected(seg, dst, src))
        self.counters["allowed"] += 1

    def expire_holds(self) -> None:
        """Held too long (the rest never came): refused, never passed undecided."""
        for key, held in self.holds.expired(time.monotonic()):
            port = next((p for p in self.ports.values() if p.name == held.port), None)
            if port is None or self.cfg is None:
                continue
            _data, after, last = held.data()
            dst, src = self._server_macs(last)
            self.holds.flows[key] = held  # _refuse pops it again
            self._refuse(port, last, dst, src, held.start, after)
            self.counters["held_expired"] += 1

    def handle(self, fd: int) -> None:
        port = self.ports.get(fd)
        if port is None:
            return
        for _ in range(READ_BATCH):
            try:
                frame = port.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.ENETDOWN:
                    report.warning(f"inspector: {port.name}: {e.strerror or e}")
                return
            self.decide(port, frame)

    def _drain(self, fd: int) -> bool:
        """Empty a wake-up; True when it is worth a look: the loader is done, or a file of
        interest changed (not the status file this process writes beside state.json)."""
        if fd != self.notify.fileno():
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 4096)
            return True
        files = self._files_of_interest()
        return any(d is None or os.path.join(d, name) in files
                   for d, name, _ in self.notify.read())

    def _files_of_interest(self) -> set[str]:
        """state.json and the configured list files, as absolute paths."""
        files = {str(state.run_dir() / "state.json")}
        if self.cfg is not None:
            files |= {os.path.abspath(p) for p in lists.paths(self.cfg.values)}
        return files

    # -- status ---------------------------------------------------------------------------------
    def write_status(self) -> None:
        self.status_at = time.monotonic()
        status = {"pid": os.getpid(), "updated": time.time(), "counters": self.counters,
                  "lists": self.lists.entries, "list_error": self.list_error,
                  "lists_stamp": self.read_stamp,
                  "ports": [p.name for p in self.ports.values()]}
        with contextlib.suppress(OSError):
            state.run_dir().mkdir(parents=True, exist_ok=True)
            atomicfile.write(state.run_dir() / STATUS_FILE, json.dumps(status))

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        self.start_guardian()
        beat = threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        poller = select.poll()
        poller.register(self.notify.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        wake_fds = {self.notify.fileno(), self.wake_r}
        registered: set[int] = set()
        next_check = 0.0
        look = True
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                self.progress = now
                if look or now >= next_check:
                    if now >= next_check:
                        next_check = now + CHECK_EVERY
                        self.check_losses()
                        self.expire_holds()
                    look = False
                    self.check_config()
                    self.watch_files()
                    self.check_lists()
                    self.write_status()
                    for fd in registered - set(self.ports):
                        poller.unregister(fd)
                    for fd in set(self.ports) - registered:
                        poller.register(fd, select.POLLIN)
                    registered = set(self.ports)
                decided = False
                wait = max(0.0, next_check - time.monotonic())
                for fd, _ in poller.poll(int(wait * 1000) + 1):
                    if fd in wake_fds:
                        look = self._drain(fd) or look
                    else:
                        self.handle(fd)
                        decided = True
                if decided and now - self.status_at > STATUS_SOON:
                    self.write_status()  # `vrrp show` is current within STATUS_SOON
        finally:
            self.stopping.set()
            self._close_ports()
            self.write_status()


LOCK_FILE = "inspector.lock"


def _lock() -> int | None:
    """One inspector per run directory (two would answer every blocked request twice and
    reset the server twice): an flock held for the process's life, released by the kernel
    when it ends, however it ends. None, with the reason on stderr, when another holds it."""
    import fcntl
    import sys

    path = state.run_dir() / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        print(f"fdpi_cli inspector: another inspector (pid {other}) is running for "
              f"{state.run_dir()}; refusing to start a second one", file=sys.stderr)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def main(argv: list[str], config_path: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fdpi_cli inspector",
        description="the black-list inspector (SKAT's DPI redirect); runs until SIGTERM. "
                    "It follows the configuration the plugin last loaded (fdpi_cli "
                    "start/reload) and the black-list files.")
    parser.parse_args(argv)
    lock = _lock()
    if lock is None:
        return 1
    inspector = Inspector()

    def stop(_signum: int, _frame: Any) -> None:
        inspector.stopping.set()

    def reread(_signum: int, _frame: Any) -> None:
        inspector.list_stamp = ()
        inspector._wake()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reread)
    inspector.run()
    return 0
