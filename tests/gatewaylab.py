"""A subscriber, one appliance, the border router and a host behind it: SKAT's L2 termination.

    sub (s0) ── i0 [appliance] o0 ── (u0) border (h0) ── (x0) host

    subscriber  100.64.0.10/24, 2001:db8:100::10/64; default routes via the virtual gateway
    border      198.51.100.1/24 on u0 (MAC GW_MAC): routes 100.64.0.0/24 via 100.64.0.1 and
                2001:db8:100::/64 via fe80::1, resolved by ARP/ND on the uplink side
    host        203.0.113.10/24, 2001:db8:200::10/64 behind the border

The appliance's fastdpi.conf is conftest.BASE_CONF plus GATEWAY_KEYS.
"""

from __future__ import annotations

from dataclasses import dataclass

from conftest import BASE_CONF
from netlab import Appliance, Lab

GW_IP = "198.51.100.1"
GW_MAC = "02:00:00:00:fe:01"
SUB4, SUB6 = "100.64.0.10", "2001:db8:100::10"
HOST4, HOST6 = "203.0.113.10", "2001:db8:200::10"

GATEWAY_KEYS = f"""bras_terminate_l2=1
bras_gateway_ip={GW_IP}
bras_gateway_mac={GW_MAC}
"""
GATEWAY_CONF = BASE_CONF + GATEWAY_KEYS


@dataclass
class GatewayTopo:
    lab: Lab
    app: Appliance
    sub: str
    border: str
    host: str


def border_router(lab: Lab, border: str, uplink: str, gw_mac: str = GW_MAC) -> None:
    """The border router's side of the uplink: routes the subscribers via the gateway."""
    lab.run(border, "ip", "link", "set", uplink, "address", gw_mac)
    lab.run(border, "ip", "addr", "add", f"{GW_IP}/24", "dev", uplink)
    lab.run(border, "ip", "route", "add", "100.64.0.1/32", "dev", uplink)
    lab.run(border, "ip", "route", "add", "100.64.0.0/24", "via", "100.64.0.1", "dev", uplink)
    lab.run(border, "ip", "-6", "route", "add", "2001:db8:100::/64", "via", "fe80::1",
            "dev", uplink)
    lab.run(border, "sysctl", "-qw", "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1")


def host_behind(lab: Lab, border: str, host: str) -> None:
    lab.veth(border, "h0", host, "x0")
    lab.run(border, "ip", "addr", "add", "203.0.113.1/24", "dev", "h0")
    lab.run(border, "ip", "addr", "add", "2001:db8:200::1/64", "dev", "h0", "nodad")
    lab.run(host, "ip", "addr", "add", f"{HOST4}/24", "dev", "x0")
    lab.run(host, "ip", "addr", "add", f"{HOST6}/64", "dev", "x0", "nodad")
    lab.run(host, "ip", "route", "add", "default", "via", "203.0.113.1")
    lab.run(host, "ip", "-6", "route", "add", "default", "via", "2001:db8:200::1")


def subscriber(lab: Lab, sub: str, dev: str, ip4: str = SUB4, ip6: str = SUB6) -> None:
    """Addresses (none when given ""), and default routes via the virtual gateway."""
    if ip4:
        lab.run(sub, "ip", "addr", "add", f"{ip4}/24", "dev", dev)
    if ip6:
        lab.run(sub, "ip", "addr", "add", f"{ip6}/64", "dev", dev, "nodad")
    lab.run(sub, "ip", "route", "add", "default", "via", "100.64.0.1")
    lab.run(sub, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", dev)


def build(lab: Lab, conf: str = GATEWAY_CONF, start: bool = True) -> GatewayTopo:
    sub, border, host = lab.ns("sub"), lab.ns("border"), lab.ns("host")
    app = lab.appliance("app", conf)
    lab.veth(sub, "s0", app.ns, "i0")
    lab.veth(border, "u0", app.ns, "o0")
    subscriber(lab, sub, "s0")
    border_router(lab, border, "u0")
    host_behind(lab, border, host)
    if start:
        app.cli("start")
    return GatewayTopo(lab, app, sub, border, host)
