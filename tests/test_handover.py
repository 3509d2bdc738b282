"""Maintenance moves the gateway through keepalived, never around it (issue 16 item 2).

Two appliances with real keepalived at 0.1 s adverts; a subscriber asks for the gateway
every 5 ms. `fdpi_cli vrrp handover` on the master: the peer takes the gateway with a
subscriber gap under 50 ms and never two masters for longer than one advert; `--cancel`
gives it back the same way. `vrrp set backup --force` against keepalived's MASTER is
refused, and changes nothing.
"""

from __future__ import annotations

import bisect
import contextlib
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))


from group import VIP, Group
from netlab import wait_for

ADVERT = 0.1


class Answers:
    """The gateway as the wire sees it (tcpdump's kernel timestamps in the switch, whatever
    the prober's own scheduling): p0 carries the subscriber's requests and the replies it
    gets, p1 and p2 the replies of a and b. Two gateways = both carry replies at once."""

    def __init__(self, g: Group) -> None:
        self.g = g
        stamp = time.monotonic_ns()
        self.ports = {"sub": ("p0", "arp")} | {
            n.name: (f"p{i + 1}", "arp and arp[6:2] == 2") for i, n in enumerate(g.nodes)}
        self.files = {name: g.lab.path(f"arp-{name}-{stamp}") for name in self.ports}
        self.procs: list = []

    def __enter__(self) -> Answers:
        for name, (port, expr) in self.ports.items():
            with open(self.files[name], "w") as out:  # the child keeps its own descriptor
                self.procs.append(self.g.lab.popen(
                    self.g.sw, "tcpdump", "-l", "-n", "-tt", "-i", port, expr, stdout=out))
        time.sleep(1.0)  # tcpdump is listening
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        for p in self.procs:
            p.terminate()
            p.wait(timeout=10)

    def times(self, name: str, kind: str = "Reply") -> list[float]:
        found = []
        for line in self.files[name].read_text().splitlines():
            with contextlib.suppress(ValueError, IndexError):
                if kind in line:
                    found.append(float(line.split()[0]))
        return found

    def gap(self) -> float:
        """The subscriber's longest wait: from a request to the next reply it got."""
        asked = [t for t in self.times("sub", f"Request who-has {VIP} ")
                 if t not in self.times("sub", f"tell {VIP},")]  # not the gratuitous ARPs
        heard = self.times("sub", f"Reply {VIP} is-at")
        assert asked and heard
        return max(heard[i] - t for t in asked
                   if (i := bisect.bisect_left(heard, t)) < len(heard))

    def overlap(self, old: str, new: str) -> float:
        """Seconds both answered: the old one's last reply after the new one's first."""
        a, b = self.times(old), self.times(new)
        assert a and b, (old, len(a), new, len(b))
        return max(0.0, max(a) - min(b))


@pytest.fixture
def pair(lab):
    g = Group(lab, 2, advert_int=ADVERT)
    for n in g.nodes:
        g.start(n)
    assert g.wait_one_master(20) == "a"
    return g


def _move(g: Group, action, to: str) -> tuple[dict, Answers]:
    """Run `action` half a second into 8 s of probing: the switch lands well inside the
    capture even when a loaded machine slows the command or keepalived."""
    with Answers(g) as wire:
        watch = g.watch(8.0)
        time.sleep(0.5)
        res = action()
        wait_for(lambda: g.masters() == [to], 5, 0.02, f"{to} alone master")
        probe = watch.result() | {"cli": res}
    return probe, wire


def test_handover_moves_the_gateway_without_a_gap_and_cancel_takes_it_back(pair: Group):
    a, b = pair.nodes
    probe, wire = _move(pair, lambda: a.app.cli("vrrp", "handover"), "b")
    assert probe["cli"].stdout.startswith("handed over: the peer preempted"), probe["cli"]
    first = (f"longest wait {wire.gap() * 1000:.1f} ms, both answered "
             f"{wire.overlap('a', 'b') * 1000:.1f} ms")
    # No gap: every request of the subscriber is answered within 50 ms, all along.
    assert wire.gap() < 0.05, first
    assert probe["replies"] > 0.9 * probe["sent"], probe
    # Two gateways only on the one advert that moves the gateway.
    assert wire.overlap("a", "b") < ADVERT, first
    assert (a.keepalived_state(), b.keepalived_state()) == ("BACKUP", "MASTER")
    info = a.app.show()
    assert info["handover"] and not info["attention"], info
    assert "handover:     requested" in a.app.cli("vrrp", "show").stdout
    time.sleep(10 * ADVERT)  # a held-back appliance stays backup
    assert pair.masters() == ["b"]

    probe, wire = _move(pair, lambda: a.app.cli("vrrp", "handover", "--cancel"), "a")
    assert probe["cli"].stdout.startswith("handover cancelled"), probe["cli"]
    assert wire.gap() < 0.05, (wire.gap(), probe)
    assert wire.overlap("b", "a") < ADVERT
    assert not a.app.show()["handover"]
    print(f"handover: {first}")
    print(f"handover back: longest wait {wire.gap() * 1000:.1f} ms, both answered "
          f"{wire.overlap('b', 'a') * 1000:.1f} ms")


def test_handover_falls_back_to_fault_when_the_peer_does_not_preempt(lab):
    g = Group(lab, 2, advert_int=ADVERT, preempt=False)
    for n in g.nodes:
        g.start(n)
    first = g.node(g.wait_one_master(20))
    other = next(n for n in g.nodes if n is not first)
    res = first.app.cli("vrrp", "handover", "--timeout", "0.5")
    assert res.stdout.startswith("handed over: FAULT"), res
    wait_for(lambda: g.masters() == [other.name], 3, 0.02, "the peer alone master")
    assert first.keepalived_state() == "FAULT"
    first.app.cli("vrrp", "handover", "--cancel")
    wait_for(lambda: first.keepalived_state() == "BACKUP", 3, 0.02, "back to BACKUP")
    time.sleep(10 * ADVERT)
    assert g.masters() == [other.name]  # nopreempt: the peer keeps the gateway


def test_force_against_keepalived_is_refused_and_changes_nothing(pair: Group):
    a, b = pair.nodes
    res = a.app.cli("vrrp", "set", "backup", "--force", check=False)
    assert res.returncode == 10 and "vrrp handover" in res.stderr, res
    assert "no gateway" in res.stderr
    res = b.app.cli("vrrp", "set", "master", "--force", check=False)
    assert res.returncode == 10 and "two gateways" in res.stderr, res
    res = a.app.cli("vrrp", "set", "backup", check=False)  # a stale order: ignored, exit 10
    assert res.returncode == 10 and res.stdout.startswith("ignored: "), res
    time.sleep(5 * ADVERT)
    assert pair.masters() == ["a"]
    assert a.app.cli("vrrp", "show", check=False).returncode == 0
