"""Running `fdpi_cli daemon` in a test appliance, and feeding it keepalived events."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from conftest import BASE_CONF, Topo, build_topo
from netlab import PYTHON, Appliance, Lab, wait_for

# Short takeover burst and refresh so that tests see both quickly.
FAST_CONF = BASE_CONF + """vrrp_garp_count=3
vrrp_garp_interval=0.05
vrrp_garp_refresh=0.5
vrrp_election_pidfile=
"""


class Daemon:
    def __init__(self, app: Appliance, proc: subprocess.Popen[str], fifo: Path,
                 metrics: Path, log: Path) -> None:
        self.app, self.proc, self.fifo, self.metrics, self.log = app, proc, fifo, metrics, log
        self._writer = -1

    @property
    def status(self) -> dict:
        return json.loads((self.app.run_dir / "daemon.json").read_text())

    def hold_fifo(self) -> None:
        """Keep a writer open, as keepalived does (its closing means keepalived died)."""
        if self._writer < 0:
            self._writer = os.open(self.fifo, os.O_RDWR)

    def write(self, *states: str, instance: str = "skat_plugin") -> None:
        self.hold_fifo()
        data = "".join(f'INSTANCE "{instance}" {s} 100\n' for s in states)
        os.write(self._writer, data.encode())

    def release_fifo(self) -> None:
        if self._writer >= 0:
            os.close(self._writer)
            self._writer = -1

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> int:
        self.release_fifo()
        if self.proc.poll() is None:
            self.proc.terminate()  # the `ip netns exec` wrapper execs: this is the daemon
        return self.proc.wait(timeout=10)


def start_daemon(app: Appliance, *args: str, env: dict[str, str] | None = None,
                 fifo: Path | None = None, via_cli: bool = False) -> Daemon:
    fifo = fifo or app.dir / "keepalived.fifo"
    metrics = app.dir / "skat_plugin.prom"
    log = app.dir / "daemon.log"
    full_env = app.env()
    full_env["SKAT_LOG_STDERR"] = "1"
    full_env.update(env or {})
    if via_cli:  # exactly as the unit runs it; options come from the config file
        cmd = [PYTHON, "-m", "skat_plugin", "daemon"]
    else:
        cmd = [PYTHON, "-m", "skat_plugin.daemon", "--fifo", str(fifo),
               "--metrics-file", str(metrics), *args]
    with open(log, "a") as out:
        proc = app.lab.popen(app.ns, *cmd, env=full_env, stdout=out)
    d = Daemon(app, proc, fifo, metrics, log)
    try:
        wait_for(lambda: proc.poll() is not None or (app.run_dir / "daemon.json").exists(),
                 10, what="daemon ready")
    finally:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}:\n{d.output()}")
    return d


def topo_with_daemon(lab: Lab, conf: str = FAST_CONF, *args: str) -> tuple[Topo, Daemon]:
    topo = build_topo(lab, conf)
    return topo, start_daemon(topo.app, *args)


def role_of(app: Appliance) -> str:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads((app.run_dir / "state.json").read_text())["role"]
    return "?"
