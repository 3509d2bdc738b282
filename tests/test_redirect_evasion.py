"""The redirect cannot be walked around (issue 17.4, 17.5, 17.7; 18.3, 18.7; 16.6).

Each way around the lists that reached a real server (Debian's nginx 1.22, the reference for
what a server accepts) is sent again here: its harmless twin reaches nginx (so the server
really accepts that form), the blocked one gets the notice and nginx never sees it.
Raw requests come from a small socket client in the subscriber's namespace; TLS hellos from
Python's ssl module, re-framed by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import ssl
import time
from urllib.parse import unquote

import pytest
from conftest import build_topo
from netlab import PYTHON, Lab, wait_for
from redirectlab import (
    Nginx,
    alive_ports,
    curl,
    raw_request,
    raw_requests,
    resolve,
    start_inspector,
)
from test_redirect import BLOCKED4, BLOCKED6, PAGE, SERVER4, SERVER6, redirect_conf

from skat_plugin.redirect import http, packet, tls


def build(lab: Lab, page: str | None = PAGE):
    topo = build_topo(lab, redirect_conf(lab, page))
    for addr in (f"{BLOCKED4}/24", f"{BLOCKED6}/64"):
        lab.run(topo.up, "ip", "addr", "add", addr, "dev", "u0", "nodad")
    return topo, Nginx(lab, topo.up)


def notice(r: dict) -> bool:
    return r["answer"].startswith("HTTP/1.1 302 Found\r\n") and PAGE in r["answer"]


def served(r: dict) -> bool:
    return "served by nginx" in r["answer"] or r["answer"].startswith("HTTP/1.1 405")


# The blocked form (open.example/secret is on the URL list), and its harmless twin.
EVASIONS = {
    "leading CRLF": [b"\r\n\r\nGET /secret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "double spaces": [b"GET  /secret   HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "bare LF": [b"GET /secret HTTP/1.1\nHost: open.example\n\n"],
    "method LOCK": [b"LOCK /secret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "pipelined": [b"GET /public HTTP/1.1\r\nHost: open.example\r\n\r\n"
                  b"GET /secret HTTP/1.1\r\nHost: open.example\r\nConnection: close\r\n\r\n"],
    "Host in the next segment": [b"GET /secret HTTP/1.1\r\n", b"Host: open.example\r\n\r\n"],
    "Host cut in two": [b"GET /secret HTTP/1.1\r\nHo", b"st: open.example\r\n\r\n"],
    "one byte first": [b"G", b"ET /secret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "percent-encoded": [b"GET /%73ecret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "double slash": [b"GET //secret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "dot segment": [b"GET /./secret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "dot-dot segment": [b"GET /x/../secret HTTP/1.1\r\nHost: open.example\r\n\r\n"],
    "absolute form": [b"GET http://open.example/secret HTTP/1.1\r\nHost: x.example\r\n\r\n"],
}


def test_each_evasion_reaches_nginx_when_harmless_and_is_blocked_when_listed(lab: Lab) -> None:
    topo, nginx = build(lab)
    start_inspector(topo.app)
    cases = [(name, addr, parts) for name, parts in EVASIONS.items()
             for addr in (SERVER4, SERVER6)]
    # The harmless twin (/sublic is on no list) is served: nginx accepts that form.
    twins = raw_requests(lab, topo.sub, [(addr, 80, [p.replace(b"ecret", b"ublic")
                                                     for p in parts], True, 0.05)
                                         for _name, addr, parts in cases])
    for (name, addr, _parts), ok in zip(cases, twins, strict=True):
        assert served(ok), (name, addr, ok)
    before = nginx.seen()
    got = raw_requests(lab, topo.sub, [(addr, 80, parts, True, 0.05)
                                       for _name, addr, parts in cases])
    for (name, addr, _parts), r in zip(cases, got, strict=True):
        assert notice(r), (name, addr, r)
    assert nginx.seen() == before, nginx.seen()[len(before):]
    assert not any("secret" in line for line in nginx.seen()), nginx.seen()


def test_http_0_9_and_a_split_request_from_a_nagle_sender(lab: Lab) -> None:
    """HTTP/0.9 has no Host to match: refused. A sender that waits for the ACK of its first
    segment (Nagle, no TCP_NODELAY) sends the rest anyway: Linux's tail loss probe sends the
    waiting data after ~2 RTT (were it to send the first segment again, the inspector ACKs
    what it holds)."""
    topo, nginx = build(lab)
    start_inspector(topo.app)
    r = raw_request(lab, topo.sub, SERVER4, 80, [b"GET /secret\r\n"])
    assert notice(r), r
    parts = [b"GET /secret HTTP/1.1\r\nHo", b"st: open.example\r\n\r\n"]
    r = raw_request(lab, topo.sub, SERVER4, 80, parts, nodelay=False, gap=0.01)
    assert notice(r), r
    ok = raw_request(lab, topo.sub, SERVER4, 80, [p.replace(b"secret", b"public") for p in parts],
                     nodelay=False, gap=0.01)
    assert served(ok), ok
    assert not any("secret" in line for line in nginx.seen()), nginx.seen()
    c = topo.app.show()["redirect"]["counters"]
    assert c["held"] >= 2 and c["passed_uninspected"] == 0, c


def test_a_blocked_address_is_blocked_whatever_the_payload_and_without_inspector(
        lab: Lab) -> None:
    topo, nginx = build(lab)
    inspector = start_inspector(topo.app)
    udp = _udp_listener(lab, topo.up)
    for addr in (BLOCKED4, BLOCKED6):
        # No Host at all (the finding): answered, not passed.
        r = raw_request(lab, topo.sub, addr, 80, [b"GET / HTTP/1.0\r\n\r\n"])
        assert notice(r), (addr, r)
        r = raw_request(lab, topo.sub, addr, 80, [b"\x00\x01 not http at all\r\n"])
        assert r["answer"].startswith("HTTP/1.1 302"), (addr, r)
        _send_udp(lab, topo.sub, addr, 443)   # QUIC to a blocked address
        _send_udp(lab, topo.sub, addr, 5353)  # any other UDP
    _send_udp(lab, topo.sub, SERVER4, 5353)   # an open address: passes
    _send_udp(lab, topo.sub, SERVER4, 443)    # QUIC to an open address: dropped (TCP fallback)
    assert nginx.seen() == []
    time.sleep(0.3)
    got = _udp_seen(udp)
    assert got == [f"{SERVER4} 5353"], got

    # The inspector dies: what only the kernel decides stays blocked; the rest passes.
    os.kill(inspector.pid, signal.SIGKILL)  # its guardian fails open at once
    wait_for(lambda: not alive_ports(topo.app), timeout=3, what="the heartbeat to expire")
    for addr in (BLOCKED4, BLOCKED6):
        r = curl(lab, topo.sub, "http://x.example/", *resolve("x.example", 80, addr), timeout=2)
        assert r["code"] == 0 and r["rc"] == 28, r  # the SYN is dropped: a timeout
        _send_udp(lab, topo.sub, addr, 5353)
    ok = curl(lab, topo.sub, "http://open.example/secret", *resolve("open.example", 80, SERVER4))
    assert ok["code"] == 200, ok  # URL lists fail open, as documented
    time.sleep(0.3)
    assert _udp_seen(udp) == [f"{SERVER4} 5353"]
    assert [line.split()[0] for line in nginx.seen()] == ["open.example"]
    c = topo.app.show()["redirect"]["counters"]
    assert c["blocked_down"] >= 2 and c["blocked_kernel"] >= 4 and c["quic_dropped"] >= 1, c


UDP_LISTENER = r"""
import select, socket, sys
log = open(sys.argv[1], "a", buffering=1)
socks = {}
for addr in sys.argv[2:]:
    for port in (443, 5353):
        u = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((addr, port))
        socks[u] = f"{addr} {port}"
print("ready", flush=True)
while True:
    r, _, _ = select.select(list(socks), [], [])
    for u in r:
        u.recv(2048)
        log.write(socks[u] + "\n")
"""


def _udp_listener(lab: Lab, ns: str):
    """Every datagram that reaches the server side: `destination port` a line."""
    script, log = lab.path("udp.py"), lab.path("udp.log")
    script.write_text(UDP_LISTENER)
    log.write_text("")
    proc = lab.popen(ns, PYTHON, str(script), str(log), SERVER4, BLOCKED4, SERVER6, BLOCKED6)
    assert proc.stdout is not None and "ready" in proc.stdout.readline()
    return log


def _udp_seen(log) -> list[str]:
    return sorted(set(log.read_text().splitlines()))


def _send_udp(lab: Lab, ns: str, addr: str, port: int) -> None:
    family = "AF_INET6" if ":" in addr else "AF_INET"
    lab.run(ns, PYTHON, "-c", f"import socket; s=socket.socket(socket.{family}, "
            f"socket.SOCK_DGRAM); s.sendto(b'\\xc3' + bytes(1199), ({addr!r}, {port}))")


# -- TLS ---------------------------------------------------------------------------------------
def client_hello(name: str) -> bytes:
    """A real ClientHello (Python's ssl module) for `name`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def two_records(hello: bytes, cut: int) -> bytes:
    """The same handshake message in two TLS records, cut `cut` bytes in."""
    body = hello[5:]
    head = hello[:3]
    return (head + len(body[:cut]).to_bytes(2, "big") + body[:cut]
            + head + len(body[cut:]).to_bytes(2, "big") + body[cut:])


def test_a_client_hello_split_over_records_or_segments_is_read(lab: Lab) -> None:
    topo, _nginx = build(lab)
    start_inspector(topo.app)
    for addr in (SERVER4, SERVER6):
        for name, blocked in (("www.evil.example", True), ("fine.example", False)):
            hello = client_hello(name)
            for parts in ([two_records(hello, 20)], [hello[:30], hello[30:]],
                          [two_records(hello, 10)[:12], two_records(hello, 10)[12:]]):
                r = raw_request(lab, topo.sub, addr, 443, parts)
                # nginx answers a ClientHello with its ServerHello (a handshake record).
                if blocked:
                    assert r["error"] == "ConnectionResetError" and not r["answer"], (name, r)
                else:
                    assert r["answer"][:1] == "\x16", (name, r)


def test_parsers_agree_with_the_wire_forms() -> None:
    hello = client_hello("a.evil.example")
    assert tls.server_name(hello) == (tls.FOUND, "a.evil.example")
    assert tls.server_name(two_records(hello, 50)) == (tls.FOUND, "a.evil.example")
    assert tls.server_name(hello[:40])[0] == tls.MORE
    assert tls.server_name(two_records(hello, 50)[:60])[0] == tls.MORE
    for parts in EVASIONS.values():
        got = http.parse(b"".join(parts))
        assert any(r.path == "/secret" for r in got.requests), parts
    assert http.parse(b"GET /secret HTTP/1.1\r\nHo").incomplete
    assert http.parse(b"\x16\x03\x01binary").invalid
    assert http.normalise_path("/a/%2e%2E/b//c/./d?x=%41") == "/b/c/d?x=%41"


# -- budget, Fast Open --------------------------------------------------------------------------
FLOOD = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[1])
from skat_plugin.redirect import packet
dmac, smac = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
src, dst = socket.inet_aton(sys.argv[4]), socket.inet_aton(sys.argv[5])
frames = [packet.tcp_frame(dmac, smac, b"", 4, src, dst, 20000 + i, 80, 1000, 1,
                           packet.ACK | packet.PSH, b"GET ") for i in range(64)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("s0", 0))
end = time.monotonic() + float(sys.argv[6])
sent = 0
while time.monotonic() < end:
    for f in frames:
        try:
            s.send(f)
            sent += 1
        except OSError:
            pass
print(sent)
"""


def test_one_subscribers_flood_does_not_switch_blocking_off_for_others(lab: Lab) -> None:
    """Bare `GET ` segments from one source, above the whole inspector's budget: that
    source's surplus passes uninspected (its own packets only); another subscriber's blocked
    requests are all answered."""
    from wire import mac_of

    topo, nginx = build(lab)
    start_inspector(topo.app)
    script = lab.path("flood.py")
    script.write_text(FLOOD)
    dmac = mac_of(lab, topo.up, "u0").replace(":", "")
    smac = mac_of(lab, topo.sub, "s0").replace(":", "")
    flood = lab.popen(topo.sub, PYTHON, str(script), str(os.getcwd()), dmac, smac,
                      "100.64.0.66", SERVER4, "8")
    time.sleep(1.0)
    answered = 0
    for i in range(20):
        r = curl(lab, topo.sub, f"http://blocked.example/{i}",
                 *resolve("blocked.example", 80, SERVER4), timeout=3)
        answered += r["code"] == 302
    out, _ = flood.communicate(timeout=30)
    sent = int(out.split()[-1])
    assert answered == 20, answered
    assert not any(line.startswith("blocked.example") for line in nginx.seen())
    c = topo.app.show()["redirect"]["counters"]
    # The flood really was over the whole inspector's budget (2,000/s), and only its own
    # surplus passed.
    assert sent > 2000 * 8, sent
    assert c["uninspected_source"] > 2000 * 4, c
    assert c["uninspected_overload"] == 0 and c["uninspected_behind"] == 0, c


def test_tcp_fast_open_to_an_allowed_site_is_not_refused(lab: Lab) -> None:
    topo, nginx = build(lab)
    start_inspector(topo.app)
    lab.run(topo.sub, "sysctl", "-qw", "net.ipv4.tcp_fastopen=1")
    codes = [curl(lab, topo.sub, f"http://free.example/tfo{i}", "--tcp-fastopen",
                  *resolve("free.example", 80, SERVER4))["code"] for i in range(4)]
    assert codes == [200] * 4, codes
    assert sum("/tfo" in line for line in nginx.seen()) == 4
    # The data really rode on SYNs (the client had its cookie after the first connection).
    out = lab.run(topo.sub, "nstat", "-az", "TcpExtTCPFastOpenActive", check=False).stdout
    assert any(int(line.split()[1]) >= 2 for line in out.splitlines()
               if line.startswith("TcpExtTCPFastOpenActive ")), out
    blocked = curl(lab, topo.sub, "http://blocked.example/tfo", "--tcp-fastopen",
                   *resolve("blocked.example", 80, SERVER4))
    assert blocked["code"] in (0, 302), blocked
    assert not any(line.startswith("blocked.example") for line in nginx.seen())


# -- the answers ---------------------------------------------------------------------------------
H11_CLIENT = r"""
import json, socket, sys
import h11
addr, method, target, host = sys.argv[1:5]
conn = h11.Connection(h11.CLIENT)
s = socket.create_connection((addr, 80), timeout=5)
s.sendall(conn.send(h11.Request(method=method, target=target, headers=[("Host", host)])))
s.sendall(conn.send(h11.EndOfMessage()))
out = {"body": b""}
while True:
    event = conn.next_event()
    if event is h11.NEED_DATA:
        conn.receive_data(s.recv(65536))
        continue
    if isinstance(event, h11.Response):
        out["status"] = event.status_code
        out["headers"] = {k.decode(): v.decode() for k, v in event.headers}
    elif isinstance(event, h11.Data):
        out["body"] += event.data
    elif isinstance(event, h11.EndOfMessage):
        break
out["body"] = out["body"].decode()
print(json.dumps(out))
"""


@pytest.mark.parametrize("page", [PAGE, None])
def test_answers_parse_in_a_strict_client(lab: Lab, page: str | None) -> None:
    topo, _nginx = build(lab, page)
    start_inspector(topo.app)
    script = lab.path("h11client.py")
    script.write_text(H11_CLIENT)
    for method in ("GET", "HEAD"):
        for addr in (SERVER4, SERVER6):
            res = lab.run(topo.sub, PYTHON, str(script), addr, method, "/x?y=1",
                          "blocked.example")
            got = json.loads(res.stdout)
            assert got["status"] == (302 if page else 403), got
            h = got["headers"]
            assert "date" in h and h["expires"].endswith(" GMT"), h
            assert "no-store" in h["cache-control"], h
            if method == "HEAD" or page:
                assert got["body"] == "", got
            else:
                assert got["body"] == "Forbidden\n", got


def test_a_1600_character_url_gets_its_answer(lab: Lab) -> None:
    """The request spans two segments (held, then decided); the 302 with the URL in
    UrlRedir= is cut to the subscriber's segment size (RFC 9293 3.7.1)."""
    topo, nginx = build(lab)
    start_inspector(topo.app)
    rnd = random.Random(7)
    path = "/news?" + "&".join(f"k{i}={rnd.randrange(10**9)}" for i in range(160))
    path = path[:1600]
    for addr in (SERVER4, SERVER6):
        r = curl(lab, topo.sub, f"http://blocked.example{path}",
                 *resolve("blocked.example", 80, addr))
        assert r["code"] == 302, r
        location = r["headers"].split("Location: ")[1].splitlines()[0]
        assert unquote(location.split("UrlRedir=")[1]) == f"http://blocked.example{path}"
        assert len(location) > 1900 and r["time"] < 1, (len(location), r["time"])
        ok = curl(lab, topo.sub, f"http://free.example{path}",
                  *resolve("free.example", 80, addr))
        assert ok["code"] == 200, ok
    assert not any(line.startswith("blocked.example") for line in nginx.seen())


def test_a_second_inspector_refuses_to_start(lab: Lab) -> None:
    topo, _nginx = build(lab)
    first = start_inspector(topo.app)
    second = topo.app.cli("inspector", check=False, timeout=10)
    assert second.returncode == 1, second
    assert f"another inspector (pid {first.pid}" in second.stderr or \
        "another inspector" in second.stderr, second.stderr
    assert first.poll() is None
    assert raw_request(lab, topo.sub, SERVER4, 80,
                       [b"GET /x HTTP/1.1\r\nHost: blocked.example\r\n\r\n"])["answer"].count(
                           "HTTP/1.1 302") == 1


# -- fuzz: bounded in time, every parser of network bytes --------------------------------------
def _mutants(seeds: list[bytes], rnd: random.Random):
    while True:
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 8)):
            op = rnd.randrange(4)
            at = rnd.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rnd.randrange(256)
            elif op == 1:
                data[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
            elif op == 2:
                del data[at:at + rnd.randrange(1, 32)]
            else:
                data = data[:at]
        yield bytes(data)


def test_fuzz_http_tls_and_frame_parsers_raise_nothing() -> None:
    rnd = random.Random(17)
    hello = client_hello("fuzz.example")
    seeds_http = [b"".join(p) for p in EVASIONS.values()] + [
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /q HTTP/1.0\r\n\r\n", b"GET /a%zz/%2e%2e/b HTTP/1.1\r\nContent-Length: 99\r\n\r\n"]
    seeds_tls = [hello, two_records(hello, 33)]
    frame = packet.tcp_frame(bytes(6), bytes(6), b"", 4, bytes(4), bytes(4), 1, 80, 1, 1,
                             packet.ACK, b"GET / HTTP/1.1\r\n\r\n")
    runs = 0
    for seeds, fn in ((seeds_http, http.parse), (seeds_tls, tls.server_name),
                      ([frame], packet.parse), ([frame], packet.destination)):
        end = time.monotonic() + 6
        for data in _mutants(seeds, rnd):
            fn(data)
            runs += 1
            if time.monotonic() > end:
                break
    end = time.monotonic() + 2
    for data in _mutants(seeds_http, rnd):
        http.normalise_path(data.decode("latin-1"))
        runs += 1
        if time.monotonic() > end:
            break
    assert runs > 10_000


def test_a_killed_inspector_fails_open_at_once(lab: Lab) -> None:
    """The heartbeat is slow (issue 19: an idle inspector costs next to nothing); its
    guardian removes the ports the moment the inspector dies, whatever kills it."""
    topo, nginx = build(lab)
    proc = start_inspector(topo.app)
    assert raw_request(lab, topo.sub, SERVER4, 80, [b"GET / HTTP/1.1\r\nHost: blocked.example"
                                                    b"\r\n\r\n"])["answer"].startswith(
                                                        "HTTP/1.1 302")
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not alive_ports(topo.app), timeout=5, what="the guardian to fail open")
    assert time.monotonic() - killed < 1.0  # the heartbeat's timeout is 3 s
    r = curl(lab, topo.sub, "http://blocked.example/after", *resolve("blocked.example", 80,
                                                                     SERVER4))
    assert r["code"] == 200 and r["time"] < 1, r
    assert "blocked.example /after /after 200" in nginx.seen()
