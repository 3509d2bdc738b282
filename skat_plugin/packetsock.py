"""Packet sockets that see only what a classic BPF filter lets through: the one way user
space here takes in frames (the RS responder, the redirect's inspector) without ever
seeing data traffic. The filter is attached before bind(), so not one other frame is
queued; ETH_P_ALL taps see a frame before the bridge and before the netdev ingress hook.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_RCVBUFFORCE = 33
# Classic BPF opcodes and the ancillary fields the programs read.
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
JEQ_K, RET_K = 0x15, 0x06
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_MARK = 20

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def assemble(program: list[Instruction]) -> bytes:
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def open_filtered(port: str, program: list[Instruction], *, ignore_outgoing: bool = False,
                  auxdata: bool = False, rcvbuf: int = 0) -> socket.socket:
    """A non-blocking packet socket on `port` that receives only what `program` accepts."""
    code = assemble(program)
    buffer = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }, native layout
    fprog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buffer))
    # Protocol 0 receives nothing: the filter is in place before bind() starts delivery.
    sock = socket.socket(socket.AF_PACKET,
                         socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        if ignore_outgoing:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if auxdata:
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if rcvbuf:
            with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN; the default stays
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        sock.bind((port, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock


TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata


def vlan_tag(ancdata: list[tuple[int, int, bytes]]) -> bytes:
    """A received frame's VLAN tag, which the kernel moved into metadata (PACKET_AUXDATA),
    as the 4 bytes to put back after the MAC addresses; b"" when it came untagged."""
    for level, kind, data in ancdata:
        if (level, kind) == (SOL_PACKET, PACKET_AUXDATA) and len(data) >= AUXDATA.size:
            status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                return struct.pack("!HH", tpid, tci)
    return b""
