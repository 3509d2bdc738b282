"""The first promise: a started appliance is master and answers ARP from the virtual MAC."""

from conftest import VIP, VMAC, Topo


def test_start_is_master_and_answers_arp(topo: Topo) -> None:
    assert topo.app.show()["role"] == "master"
    out = topo.lab.run(topo.sub, "arping", "-c", "1", "-w", "2", "-I", "s0", VIP).stdout
    assert VMAC in out.lower(), out
