"""fdpi_cli(8) documents exactly the options each command takes (issue 16 item 10): the
options of `fdpi_cli COMMAND --help` against the man page's entry for that command.

The man page's convention: an entry (`.TP`) per command, and an option either in the
entry's heading (`.BI "start \\-\\-wait\\-ports " SECONDS`) or at the start of a line of the
entry (`.B \\-\\-force`). `--help` and `--config` (every command's, in OPTIONS) aside.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from netlab import PYTHON, REPO

MAN = REPO / "docs/fdpi_cli.8"
COMMANDS = ["start", "stop", "reload", "check", "vrrp set", "vrrp show", "vrrp subscribers",
            "vrrp keepalived-config", "vrrp check-group", "vrrp track", "vrrp handover",
            "daemon", "inspector"]
COMMON = {"--help", "--config"}
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def _plain(line: str) -> str:
    """A troff line as text: no macro, no quotes, no escapes."""
    line = re.sub(r"^\.\w+\s*", "", line).replace("\\-", "-").replace('"', " ")
    return re.sub(r"\\f[BIRP]", "", line).strip()


def help_options(command: str) -> set[str]:
    res = subprocess.run([PYTHON, "-m", "skat_plugin", *command.split(), "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=30)
    assert res.returncode == 0, res.stderr
    found = set()
    for line in res.stdout.splitlines():
        m = re.match(r"^\s+((?:-\w, )?--[a-z-]+(?:, -\w)?)", line)
        if m:
            found |= set(OPTION.findall(m[1]))
    return found - COMMON


def man_options() -> dict[str, set[str]]:
    text = MAN.read_text()
    commands = text.split("\n.SH COMMANDS\n", 1)[1].split("\n.SH ", 1)[0]
    found: dict[str, set[str]] = {}
    for entry in commands.split(".TP\n")[1:]:
        heading, *body = entry.splitlines()
        title = _plain(heading)
        name = max((c for c in COMMANDS if title == c or title.startswith(c + " ")
                    or title.startswith(c + "|")), key=len, default=None)
        if name is None:
            continue
        opts = set(OPTION.findall(title))
        for line in body:
            if re.match(r'^\.B[IR]? +"?\\-\\-', line):
                opts |= set(OPTION.findall(_plain(line).split()[0]))
        found.setdefault(name, set()).update(opts)
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_the_man_page_lists_every_option_of_the_command_and_no_other(command: str) -> None:
    documented = man_options()
    assert command in documented, f"fdpi_cli(8) has no entry for {command!r}"
    assert documented[command] == help_options(command), command
