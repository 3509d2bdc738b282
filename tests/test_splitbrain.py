"""Split brain: frames from the virtual MAC arriving at a master mean another master is on the
wire. `vrrp show` says so within 2 s, the journal gets an error, and when it is over the
master announces again at once (keepalived's users lose the VIP otherwise)."""

from __future__ import annotations

import time

from conftest import BASE_CONF, VIP, VMAC, build_topo
from daemonlab import start_daemon
from netlab import PYTHON, Lab, wait_for
from scapy.layers.l2 import ARP, Ether
from wire import Capture, send_frames

from skat_plugin import announce
from skat_plugin.election import splitbrain
from skat_plugin.render import SPLIT_BRAIN_GROUP

# Refresh off: any GARP after the takeover burst is the re-announcement we are testing.
CONF = BASE_CONF + """vrrp_garp_count=3
vrrp_garp_interval=0.05
vrrp_garp_refresh=0
vrrp_election_pidfile=
"""


def test_foreign_master_frames_raise_and_clear_split_brain(lab: Lab) -> None:
    topo = build_topo(lab, CONF)
    app = topo.app
    d = start_daemon(app)
    d.write("MASTER")  # keepalived elected this appliance
    wait_for(lambda: d.status["announcement_rounds"] >= 3, 5, 0.02, "takeover burst done")
    assert app.show()["split_brain"] is False

    # Another master's GARP, arriving at this master's subscriber port.
    foreign = announce.garp(VMAC, VIP)
    with Capture(lab, topo.sub, "s0", "arp") as cap:
        t0 = time.monotonic()
        send_frames(lab, topo.sub, "s0", [foreign])
        wait_for(lambda: app.show()["split_brain"], 2, 0.02, "split_brain within 2 s")
        detected = time.monotonic() - t0
        raised_status = d.status
        send_frames(lab, topo.sub, "s0", [foreign])  # still going on: stays raised
        t_last = time.monotonic()
        time.sleep(1.0)
        assert app.show()["split_brain"] is True
        wait_for(lambda: not app.show()["split_brain"], splitbrain.WINDOW + 2, 0.02,
                 "split_brain to clear")
        cleared = time.monotonic() - t_last
        time.sleep(0.5)
    print(f"split brain detected in {detected * 1000:.0f} ms; cleared {cleared:.2f} s after "
          f"the last foreign frame (window {splitbrain.WINDOW:g} s)")
    assert raised_status["split_brain"] is True and raised_status["split_brain_since"]
    # The kernel reports each frame (NFLOG): the alarm clears at the end of the window,
    # not at the next look of a poll.
    assert splitbrain.WINDOW - 0.3 < cleared < splitbrain.WINDOW + 0.5
    assert "error: split brain" in d.output()
    assert "frame(s) arrived on i0" in d.output()  # where the other master is
    assert "reading the counter" not in d.output()  # NFLOG, not the polling fallback

    ours = [f for f in cap.stop() if ARP in f and f[Ether].src == VMAC]
    # Our two injected frames are on the capture too (sent from s0); the rest is the
    # appliance's re-announcement: a full burst, right after the alarm cleared.
    reannounce = ours[2:]
    assert len(ours) == 2 + 3, [f.summary() for f in ours]
    assert reannounce[0].time - ours[1].time > splitbrain.WINDOW - 0.3
    assert app.show()["counters"]["foreign_master_frames"] == 2


def test_backup_ignores_frames_from_the_virtual_mac(lab: Lab) -> None:
    """In backup another appliance IS the master: its frames are expected, not an alarm."""
    topo = build_topo(lab, CONF)
    d = start_daemon(topo.app)
    topo.app.cli("vrrp", "set", "backup")
    send_frames(lab, topo.sub, "s0", [announce.garp(VMAC, VIP)] * 3)
    time.sleep(1.0)
    assert topo.app.show()["split_brain"] is False
    assert d.status["split_brain"] is False


def test_without_the_nflog_group_the_counter_is_read_instead(lab: Lab) -> None:
    """Another program holds the NFLOG group (one listener per namespace): the daemon says
    so and falls back to reading the counter while master. Slower to see, never blind."""
    topo = build_topo(lab, CONF)
    holder = lab.popen(topo.app.ns, PYTHON, "-c",
                       "import sys, time; from skat_plugin.watch.foreign import _bind; "
                       f"s = _bind({SPLIT_BRAIN_GROUP}); print('bound', flush=True); "
                       "time.sleep(120)")
    assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
    d = start_daemon(topo.app)
    d.write("MASTER")
    wait_for(lambda: d.status["announcement_rounds"] >= 3, 5, 0.02, "takeover burst done")
    assert "reading the counter every" in d.output()
    send_frames(lab, topo.sub, "s0", [announce.garp(VMAC, VIP)])
    wait_for(lambda: topo.app.show()["split_brain"], splitbrain.POLL + 2, 0.05,
             "split_brain from the counter")
    assert "error: split brain" in d.output()
