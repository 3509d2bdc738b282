"""Role state under SKAT_RUN_DIR, and the lock that serialises every change.

One appliance = one run directory, so several appliances run side by side in network
namespaces with a different SKAT_RUN_DIR each. state.json is replaced atomically (write a
temporary file, rename), so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .election import pidfile

if TYPE_CHECKING:
    from .config import Config

DEFAULT_RUN_DIR = "/run/skat-plugin"


def run_dir() -> Path:
    return Path(os.environ.get("SKAT_RUN_DIR") or DEFAULT_RUN_DIR)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Held for the whole of a change: read state, apply to the kernel, write state."""
    directory = run_dir()
    try:
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the first change since boot: /run is new
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """A consistent view for a reader (`vrrp show`): no change is half-way (its rules in
    the kernel, its state not yet written) while this is held. Shared, so readers do not
    wait for each other; nothing is created when the plugin never ran."""
    try:
        fd = os.open(run_dir() / "lock", os.O_RDONLY)
    except OSError:
        yield  # no lock file (never started) or not readable: nothing to wait for
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def load() -> dict[str, Any] | None:
    try:
        with open(run_dir() / "state.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def config_of(st: dict[str, Any]) -> Config:
    """The configuration the last start/reload loaded, from its snapshot in state.json."""
    from .config import Config

    return Config.from_snapshot(st["config"])


def load_config() -> Config | None:
    st = load()
    return config_of(st) if st else None


def save(state: dict[str, Any]) -> None:
    from . import atomicfile  # tempfile and shutil: not for readers such as `vrrp show`

    # Root only: the configuration's snapshot holds vrrp_auth_pass.
    atomicfile.write(run_dir() / "state.json", json.dumps(state, indent=1, sort_keys=True),
                     mode=0o600, sync=True)


def signature() -> tuple[int, int, int] | None:
    """Which state.json this is (it is replaced, never edited): None when there is none."""
    try:
        st = os.stat(run_dir() / "state.json")
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


def clear() -> None:
    """Forget the appliance: its state and what the daemon's election watch last saw."""
    for name in ("state.json", "election.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run_dir() / name)


def daemon_pid() -> int | None:
    """The supervising daemon's pid if it is alive (a zombie does not count)."""
    return pidfile.live_pid(run_dir() / "daemon.pid")


def daemon_alive() -> bool:
    return daemon_pid() is not None


def daemon_status() -> dict[str, Any]:
    """What the live daemon last wrote to daemon.json ({} when no daemon runs).

    Written by the daemon at every check: pid, split_brain (bool), split_brain_since,
    election_alive (keepalived/ucarp seen alive), updated (ISO time).
    """
    if not daemon_alive():
        return {}
    try:
        with open(run_dir() / "daemon.json") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}
