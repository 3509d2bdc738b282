"""Replace a file atomically: readers see the old content or the new one, never half of it.

Every file the plugin writes for others to read goes through here: state.json and
daemon.json (fdpi_cli, the track script), the metrics file (node_exporter), keepalived.conf.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write(path: str | Path, text: str, mode: int = 0o644, sync: bool = False) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`.

    sync: fsync before the rename, for state that must survive a crash of the host.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
