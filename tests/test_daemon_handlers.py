"""A new event source for the daemon: a handler and one line in HANDLERS (docs/daemon.md).

The toy handler below is the whole of what a subsystem adds: it owns its source (an
inotify watch of one file in the run directory), its state (how often the file changed)
and its part of daemon.json. The real daemon runs it, in a namespace, as a process.
"""

from __future__ import annotations

import json

from conftest import build_topo
from daemonlab import FAST_CONF
from netlab import PYTHON, Lab, wait_for

TOY = """
import sys
from skat_plugin import daemon
from skat_plugin.daemon.handler import Handler
from skat_plugin.watch.files import FileWatch


class Toy(Handler):
    priority = 70

    def __init__(self, ctx):
        super().__init__(ctx)
        self.seen = 0
        self.watch = FileWatch(ctx.run_dir, {"toy"}, self.changed)

    def changed(self):
        self.seen += 1
        self.ctx.dirty = True  # daemon.json follows at the end of the turn

    def sources(self):
        return (self.watch,)

    def status(self):
        return {"toy_changes": self.seen}

    def close(self):
        self.watch.close()


daemon.HANDLERS.append(Toy)  # the one line of existing code a new handler touches
sys.exit(daemon.main(sys.argv[1:]))
"""


def test_a_toy_handler_joins_the_loop_with_one_line(lab: Lab) -> None:
    topo = build_topo(lab, FAST_CONF)
    app = topo.app
    env = app.env()
    proc = app.lab.popen(app.ns, PYTHON, "-c", TOY, "--no-fifo", "--metrics-file", "",
                         env=env)
    try:
        status = app.run_dir / "daemon.json"

        def toy_changes() -> int | None:
            try:
                return json.loads(status.read_text()).get("toy_changes")
            except (OSError, ValueError):
                return None

        wait_for(lambda: toy_changes() == 0, 10, what="the toy's first status")
        (app.run_dir / "toy").write_text("1")
        wait_for(lambda: (toy_changes() or 0) >= 1, 5, what="the toy saw its file")
        assert json.loads(status.read_text())["role"] == "master"  # the others still work
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
