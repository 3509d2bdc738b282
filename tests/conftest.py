"""Shared fixtures: a subscriber - appliance - uplink topology built in fresh namespaces."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netlab import Appliance, Lab, close_all

atexit.register(close_all)

VMAC = "02:00:5e:00:01:01"
VIP = "100.64.0.1"
VLL = "fe80::1"
VGUA = "2001:db8:100::1"

BASE_CONF = f"""# fastdpi.conf used by the tests
in_dev=i0
out_dev=o0
vrrp_enable=1
bras_arp_mac={VMAC}
bras_arp_ip={VIP}
bras_ipv6_link_local={VLL}
bras_ipv6_address={VGUA}
"""


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    needs_root()
    with Lab(request.node.name[:12].replace("[", "").replace("_", "")) as lb:
        yield lb


@dataclass
class Topo:
    lab: Lab
    app: Appliance
    sub: str       # subscriber namespace, interface s0: 100.64.0.10, 2001:db8:100::10
    up: str        # uplink namespace, interface u0: 100.64.0.20, 2001:db8:100::20


def build_topo(lab: Lab, conf: str = BASE_CONF, start: bool = True) -> Topo:
    sub = lab.ns("sub")
    up = lab.ns("up")
    app = lab.appliance("app", conf)
    lab.veth(sub, "s0", app.ns, "i0")
    lab.veth(up, "u0", app.ns, "o0")
    lab.run(sub, "ip", "addr", "add", "100.64.0.10/24", "dev", "s0")
    lab.run(sub, "ip", "addr", "add", "2001:db8:100::10/64", "dev", "s0", "nodad")
    lab.run(up, "ip", "addr", "add", "100.64.0.20/24", "dev", "u0")
    lab.run(up, "ip", "addr", "add", "2001:db8:100::20/64", "dev", "u0", "nodad")
    if start:
        app.cli("start")
    return Topo(lab, app, sub, up)


@pytest.fixture
def topo(lab: Lab) -> Topo:
    return build_topo(lab)
