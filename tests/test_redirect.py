"""SKAT's black-list redirect (issue 8): what a subscriber gets, what a server never sees.

Real clients (curl, openssl s_client) in the subscriber's namespace, real servers behind the
appliance (tests/redirectlab.py), the real inspector (`fdpi_cli inspector`).
"""

from __future__ import annotations

import json
import signal
import time
from urllib.parse import unquote

import pytest
from conftest import BASE_CONF, build_topo
from netlab import Lab, wait_for
from redirectlab import Servers, alive_ports, counters, curl, resolve, start_inspector, write_list
from wire import Capture

from skat_plugin.errors import ConfigError
from skat_plugin.redirect import lists, packet

SERVER4, SERVER6 = "100.64.0.20", "2001:db8:100::20"
BLOCKED4, BLOCKED6 = "100.64.0.21", "2001:db8:100::21"
PAGE = "http://notice.example/blocked?"

URLS = ["# hosts and URLs without scheme", "blocked.example", "open.example/secret",
        "Mixed.Example/Path  # a comment after the entry"]
IPS = [BLOCKED4, f"{BLOCKED6}/128", "192.0.2.0/24"]
SNIS = ["blocked.example", "*.evil.example"]


def redirect_conf(lab: Lab, page: str | None = PAGE) -> str:
    for name, lines in (("urls", URLS), ("ips", IPS), ("snis", SNIS)):
        write_list(lab.path(name), lines)
    conf = BASE_CONF + (f"black_list_url_file={lab.path('urls')}\n"
                        f"black_list_ip_file={lab.path('ips')}\n"
                        f"black_list_sni_file={lab.path('snis')}\n")
    if page:
        conf += f"black_list_redirect={page}\n"
    return conf


def build(lab: Lab, page: str | None = PAGE):
    topo = build_topo(lab, redirect_conf(lab, page))
    for addr in (f"{BLOCKED4}/24", f"{BLOCKED6}/64"):
        lab.run(topo.up, "ip", "addr", "add", addr, "dev", "u0", "nodad")
    servers = Servers(lab, topo.up)
    return topo, servers


def http(lab: Lab, ns: str, host: str, path: str = "/", addr: str = SERVER4, **kw) -> dict:
    return curl(lab, ns, f"http://{host}{path}", *resolve(host, 80, addr), **kw)


def was_reset(r: dict) -> bool:
    """Reset by the appliance, at once: refused at the SYN (curl 7), or reset in the TLS
    handshake (35, 56). The servers listen on every address, so nothing else refuses."""
    return r["code"] == 0 and r["rc"] in (7, 35, 56) and r["time"] < 2 and (
        "reset" in r["stderr"].lower() or "connect to server" in r["stderr"].lower())


def https(lab: Lab, ns: str, host: str, addr: str = SERVER4, **kw) -> dict:
    return curl(lab, ns, f"https://{host}/", "-k", *resolve(host, 443, addr), **kw)


# -- the lists, without root ------------------------------------------------------------------
def test_lists_match_hosts_paths_names_and_addresses(tmp_path) -> None:
    for name, lines in (("u", [*URLS, "open.example/secret/deeper", "open.example/se"]),
                        ("i", IPS), ("s", SNIS)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    got = lists.load({lists.URL: str(tmp_path / "u"), lists.IP: str(tmp_path / "i"),
                      lists.SNI: str(tmp_path / "s")})
    assert got.url_blocked("blocked.example", "/")
    assert got.url_blocked("BLOCKED.example.:8080", "/any/thing")
    assert got.url_blocked("open.example", "/secret/x")
    assert got.url_blocked("open.example", "/sea")       # "open.example/se" is a prefix
    assert not got.url_blocked("open.example", "/s")
    assert not got.url_blocked("open.example", "/")
    assert got.url_blocked("mixed.example", "/Path/x")
    assert not got.url_blocked("mixed.example", "/path")  # paths keep their case
    assert not got.url_blocked("other.example", "/")
    assert got.sni_blocked("blocked.example") and got.sni_blocked("a.b.evil.example")
    assert not got.sni_blocked("evil.example") and not got.sni_blocked("notblocked.example")
    import ipaddress
    assert got.ip_blocked(ipaddress.ip_address(BLOCKED4))
    assert got.ip_blocked(ipaddress.ip_address("192.0.2.77"))
    assert not got.ip_blocked(ipaddress.ip_address("192.0.3.1"))
    assert got.ip_blocked(ipaddress.ip_address(BLOCKED6))
    assert not got.ip_blocked(ipaddress.ip_address(SERVER6))


@pytest.mark.parametrize("key,line,phrase", [
    (lists.URL, "http://example.com/x", "has a scheme"),
    (lists.URL, "exa mple.com", "white space"),
    (lists.URL, "-bad-.example", "not a host name"),
    (lists.IP, "192.0.2.1/24", "not an address or prefix"),
    (lists.IP, "example.com", "not an address or prefix"),
    (lists.SNI, "*.", "not a host name"),
])
def test_a_malformed_line_names_file_and_line(tmp_path, key, line, phrase) -> None:
    path = tmp_path / "list"
    path.write_text(f"# fine\ngood.example\n{line}\n" if key != lists.IP
                    else f"# fine\n192.0.2.9\n{line}\n")
    with pytest.raises(ConfigError) as e:
        lists.load({key: str(path)})
    assert f"{path}:3:" in str(e.value) and phrase in str(e.value)


def test_answers_are_not_cached_and_carry_the_asked_url() -> None:
    text = packet.http_answer("http://n.example/p?", "a.example", "/x y?q=1&r").decode()
    assert text.startswith("HTTP/1.1 302 Found\r\n")
    assert "Cache-Control: no-cache, no-store, must-revalidate\r\n" in text
    location = text.split("Location: ")[1].split("\r\n")[0]
    assert location.startswith("http://n.example/p?UrlRedir=")
    assert unquote(location.split("UrlRedir=")[1]) == "http://a.example/x y?q=1&r"
    assert "&" not in location.split("UrlRedir=")[1]
    plain = packet.http_answer("http://n.example/p", "a.example", "/").decode()
    assert "Location: http://n.example/p\r\n" in plain
    forbidden = packet.http_answer(None, "a.example", "/").decode()
    assert forbidden.startswith("HTTP/1.1 403 Forbidden\r\n")
    assert "no-store" in forbidden


# -- on the wire --------------------------------------------------------------------------------
def test_master_redirects_resets_and_lets_the_rest_through(lab: Lab) -> None:
    topo, servers = build(lab)
    start_inspector(topo.app)
    sub = topo.sub

    for addr in (SERVER4, SERVER6):
        r = http(lab, sub, "blocked.example", "/news?id=1", addr=addr)
        assert r["code"] == 302, r
        assert f"Location: {PAGE}UrlRedir=" in r["headers"]
        location = r["headers"].split("Location: ")[1].splitlines()[0]
        assert unquote(location.split("UrlRedir=")[1]) == "http://blocked.example/news?id=1"
        assert "Cache-Control: no-cache, no-store, must-revalidate" in r["headers"]
        # One blocked path of a host: that path is redirected, the others reach the server.
        assert http(lab, sub, "open.example", "/secret/page", addr=addr)["code"] == 302
        ok = http(lab, sub, "open.example", "/public", addr=addr)
        assert ok["code"] == 200 and "real server" in ok["body"], ok
        assert http(lab, sub, "free.example", "/", addr=addr)["code"] == 200
    # A blocked address: HTTP to it is redirected, any other TCP connection reset.
    for addr in (BLOCKED4, BLOCKED6):
        assert http(lab, sub, "any.example", "/", addr=addr)["code"] == 302
        tls = https(lab, sub, "any.example", addr=addr)
        assert was_reset(tls) and tls["rc"] == 7, tls
    # TLS: a blocked server name is reset, an open one completes.
    for addr in (SERVER4, SERVER6):
        for name in ("blocked.example", "www.evil.example"):
            tls = https(lab, sub, name, addr=addr)
            assert was_reset(tls) and tls["rc"] != 7, tls
        ok = https(lab, sub, "fine.example", addr=addr)
        assert ok["code"] == 200 and "real server" in ok["body"], ok
    a = f"[{SERVER6}]"
    s_client = lab.run(sub, "openssl", "s_client", "-connect", f"{a}:443", "-servername",
                       "x.evil.example", check=False, timeout=15)
    assert s_client.returncode != 0

    seen = servers.requests()
    assert not any(line.startswith(("blocked.example", "any.example")) for line in seen), seen
    assert not any("/secret" in line for line in seen), seen
    assert sum(line == "open.example /public" for line in seen) == 2
    assert sum(line == "fine.example /" for line in seen) == 2

    c = counters(topo.app, redirected=6, passed_uninspected=0)
    # The inspector writes its counters within 0.1 s of a decision: wait for the last ones.
    wait_for(lambda: (lambda c: c["reset"] >= 6 and c["allowed"] >= 6)(
        topo.app.show()["redirect"]["counters"]), 3, what=f"reset and allowed >= 6 ({c})")
    assert topo.app.show()["redirect"]["inspector"]["alive"]


def test_without_a_notice_page_the_answer_is_403(lab: Lab) -> None:
    topo, servers = build(lab, page=None)
    start_inspector(topo.app)
    r = http(lab, topo.sub, "blocked.example", "/x")
    assert r["code"] == 403 and "no-store" in r["headers"], r
    assert http(lab, topo.sub, "free.example")["code"] == 200
    assert servers.requests() == ["free.example /"]
    counters(topo.app, forbidden=1, redirected=0)


def test_backup_steers_nothing_and_the_appliance_emits_nothing(lab: Lab) -> None:
    topo, servers = build(lab)
    start_inspector(topo.app)
    topo.app.cli("vrrp", "set", "backup")
    with Capture(lab, topo.app.ns, "i0") as cap_in, Capture(lab, topo.app.ns, "o0") as cap_up:
        assert http(lab, topo.sub, "blocked.example", "/b")["code"] == 200
        assert http(lab, topo.sub, "blocked.example", "/b", addr=SERVER6)["code"] == 200
        assert https(lab, topo.sub, "blocked.example")["code"] == 200
        assert https(lab, topo.sub, "x.example", addr=BLOCKED4)["code"] == 200
    assert servers.requests().count("blocked.example /b") == 2
    # Every frame on the ports is the subscriber's or the server's: none of the appliance.
    macs = {f.src.lower() for f in cap_in.frames + cap_up.frames}
    from wire import mac_of
    assert macs <= {mac_of(lab, topo.sub, "s0"), mac_of(lab, topo.up, "u0")}, macs
    c = topo.app.show()["redirect"]["counters"]
    assert c["inspected"] == 0 and c["redirected"] == 0 and c["reset"] == 0, c
    # Back to master: the same transaction turns the selection on again.
    topo.app.cli("vrrp", "set", "master")
    wait_for(lambda: http(lab, topo.sub, "blocked.example", "/m")["code"] == 302, timeout=5,
             what="the redirect after the switch back to master")


def test_fail_open_when_the_inspector_dies_or_hangs(lab: Lab) -> None:
    topo, servers = build(lab)
    proc = start_inspector(topo.app)
    assert http(lab, topo.sub, "blocked.example", "/1")["code"] == 302
    import os
    os.killpg(proc.pid, signal.SIGSTOP)  # hung: the heartbeat stops with it
    try:
        started = time.monotonic()
        r = http(lab, topo.sub, "blocked.example", "/hung", timeout=10)
        assert r["code"] == 200, r
        assert time.monotonic() - started < 5
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    wait_for(lambda: not alive_ports(topo.app), timeout=5, what="the heartbeat to expire")
    r = http(lab, topo.sub, "blocked.example", "/dead")
    assert r["code"] == 200 and r["time"] < 1, r  # no wait at all once the element expired
    assert https(lab, topo.sub, "blocked.example")["code"] == 200
    assert {"blocked.example /hung", "blocked.example /dead"} <= set(servers.requests())
    c = topo.app.show()["redirect"]["counters"]
    assert c["uninspected_down"] >= 2 and c["passed_uninspected"] >= 2, c
    # A new inspector takes over again.
    start_inspector(topo.app)
    assert http(lab, topo.sub, "blocked.example", "/2")["code"] == 302


def test_lists_reload_hot_during_a_download_and_bad_lists_change_nothing(lab: Lab) -> None:
    topo, servers = build(lab)
    start_inspector(topo.app)
    sub, app = topo.sub, topo.app
    size = 4_000_000
    download = lab.popen(sub, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} "
                         "%{size_download}", *resolve("free.example", 80, SERVER4),
                         f"http://free.example/big?n={size}")
    time.sleep(0.3)
    assert http(lab, sub, "late.example")["code"] == 200
    write_list(lab.path("urls"), [*URLS, "late.example"])
    before = app.show()["since"]
    # reload returns once the inspector has read the new URL list (it holds that list; the
    # kernel's address sets change within the reload itself): the very next request is
    # redirected, and no request of the subscriber reaches the server in between.
    done = app.cli("reload")
    assert "black lists in effect in the inspector" in done.stdout, done
    assert http(lab, sub, "late.example")["code"] == 302
    # The inspector also follows the file by itself, without a reload.
    write_list(lab.path("urls"), [*URLS, "late.example", "later.example/x"])
    wait_for(lambda: http(lab, sub, "later.example", "/x/y")["code"] == 302, timeout=5,
             what="the inspector to read the changed list")
    # Addresses are hot too: a new blocked address is reset from its first SYN.
    write_list(lab.path("ips"), [*IPS, SERVER6])
    app.cli("reload")
    assert was_reset(https(lab, sub, "fine.example", addr=SERVER6))
    # A malformed list: reload says file and line, the old lists stay.
    write_list(lab.path("urls"), [*URLS, "late.example", "http://bad.example/"])
    bad = app.cli("reload", check=False)
    assert bad.returncode != 0
    assert f"{lab.path('urls')}:6:" in bad.stderr and "scheme" in bad.stderr, bad.stderr
    # The inspector saw the bad file too (inotify), and kept its old list.
    wait_for(lambda: app.show()["redirect"]["inspector"]["list_error"], timeout=3,
             what="the inspector to report the malformed list")
    assert http(lab, sub, "late.example")["code"] == 302
    assert http(lab, sub, "free.example", "/after")["code"] == 200
    out, _ = download.communicate(timeout=60)
    assert out.split() == ["200", str(size)], out
    assert app.show()["since"] == before  # no role change
    assert "late.example /" in servers.requests()  # before it was blocked, only
    assert servers.requests().count("late.example /") == 1


def test_counters_reach_show_and_metrics(lab: Lab) -> None:
    topo, _servers = build(lab)
    start_inspector(topo.app)
    http(lab, topo.sub, "blocked.example")
    counters(topo.app, redirected=1)
    shown = json.loads(topo.app.cli("vrrp", "show", "--json").stdout)["redirect"]["counters"]
    assert shown["redirected"] == 1 and shown["inspected"] >= 1
    from skat_plugin import metrics
    text = metrics.render(topo.app.show(), {}, 0)
    assert "skat_plugin_redirect_redirected_total 1" in text
    assert "skat_plugin_redirect_passed_uninspected_total 0" in text


def test_through_the_gateway_with_l2_termination(lab: Lab) -> None:
    """bras_terminate_l2=1: the subscriber talks to the virtual MAC; an allowed request is
    re-injected as the gateway would send it (to the border's MAC), a blocked one answered
    from the virtual MAC."""
    import gatewaylab

    conf = redirect_conf(lab).replace(BASE_CONF, gatewaylab.GATEWAY_CONF)
    topo = gatewaylab.build(lab, conf)
    servers = Servers(lab, topo.host)
    start_inspector(topo.app)
    for addr in (gatewaylab.HOST4, gatewaylab.HOST6):
        assert http(lab, topo.sub, "blocked.example", "/g", addr=addr)["code"] == 302
        ok = http(lab, topo.sub, "free.example", "/g", addr=addr)
        assert ok["code"] == 200 and "real server" in ok["body"], ok
        assert was_reset(https(lab, topo.sub, "blocked.example", addr=addr))
        assert https(lab, topo.sub, "fine.example", addr=addr)["code"] == 200
    assert "blocked.example /g" not in servers.requests()
    assert servers.requests().count("free.example /g") == 2
