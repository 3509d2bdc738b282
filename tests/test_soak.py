"""The day-2 soak, short: a fixed seed, a few minutes, zero invariant violations.

lab/soak.py builds two appliances with real keepalived and the daemon, a subscriber that
pings and streams through the gateway, and runs a random (seeded) sequence of an operator's
actions, checking after each that exactly one appliance answers the gateway (counted on the
wire), that keepalived and the kernels agree, that the subscriber's traffic came back in
time or was never interrupted, and that no daemon wrote a traceback.

Left out until issue 16 fixes them (each reproduced by lab/soak --kinds KIND):
  daemon-restart  a restart of the master's daemon fails over (item 1)
  force           `vrrp set backup --force` on the master leaves no master (item 2)
  vrrp-enable     vrrp_enable 0 then 1 on a backup leaves a second master (item 3)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import needs_root
from netlab import PYTHON, REPO

SEED = 16
KNOWN_BROKEN = "daemon-restart,force,vrrp-enable"


def test_short_soak_has_no_invariant_violation(tmp_path: Path):
    needs_root()
    out = tmp_path / "soak.json"
    res = subprocess.run([PYTHON, str(REPO / "lab" / "soak.py"), "--seed", str(SEED),
                          "--minutes", "2.5", "--skip", KNOWN_BROKEN, "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    print(res.stdout[-6000:])
    summary = json.loads(out.read_text())
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert summary["violations"] == []
    assert summary["dual_master_ms"] == 0
    assert summary["actions"] >= 8, summary["kinds"]
