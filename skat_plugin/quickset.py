"""fdpi_cli's entry point, and `vrrp set ROLE` to the running daemon: the lean client.

keepalived's notify scripts run `fdpi_cli vrrp set` at every failover, and starting Python
is most of what that costs (docs/benchmarks.md). So the installed /usr/bin/fdpi_cli
(debian/fdpi_cli) starts Python without site (-IS) and calls main() here, as does
`python3 -m skat_plugin`. main() handles exactly

    vrrp set master|backup [--cause PLAIN] [--force]

with modules built into the interpreter (sys, posix, _socket): no os, json, re or argparse.
The request is a fixed JSON text (PLAIN: printable ASCII without `"` or `\\`, so that it
needs no escaping), and it asks the daemon for a brief answer, which on success is one of
two fixed texts (control.py, BRIEF). Everything else goes to the full CLI (cli.py) with the
same arguments: another command or option, another cause, and the daemon's other answers
(an error, an ignored order), which the CLI reads and reports as if it had asked itself.
No daemon listening: the CLI applies the order itself, as it always did.
"""

import _socket
import posix
import sys

ROLES = ("master", "backup")
TIMEOUT = 30.0  # as control.CLIENT_TIMEOUT
RUN_DIR = b"/run/skat-plugin"  # as state.DEFAULT_RUN_DIR
# What site would have added for the full CLI: Debian's python3-* packages (nftables,
# pyroute2, jsonschema, systemd) live there.
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
# control.BRIEF's answers, exactly: the daemon switched (or kept) this role.
DONE = {b'{"role": "master"}': "master", b'{"role": "backup"}': "backup"}
NO_DAEMON = (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, PermissionError)


def request(argv: list[str]) -> bytes | None:
    """The control request for `vrrp set ROLE [--cause C] [--force]`, else None."""
    if len(argv) < 3 or argv[0] != "vrrp" or argv[1] != "set" or argv[2] not in ROLES:
        return None
    cause, force, rest = "cli", False, argv[3:]
    while rest:
        if rest[0] == "--force":
            force, rest = True, rest[1:]
        elif rest[0] == "--cause" and len(rest) > 1 and not rest[1].startswith("-"):
            cause, rest = rest[1], rest[2:]  # argparse takes "-x" for an option: not ours
        elif rest[0].startswith("--cause="):
            cause, rest = rest[0][8:], rest[1:]
        else:
            return None  # --config, --help, an abbreviation, ...: argparse's
    if not (cause.isascii() and cause.isprintable()) or '"' in cause or "\\" in cause:
        return None  # would need JSON escaping: json's job, in the full CLI
    return (f'{{"op": "set", "role": "{argv[2]}", "cause": "{cause}", '
            f'"force": {"true" if force else "false"}, "brief": true}}').encode()


def ask(message: bytes) -> bytes | None:
    """The daemon's answer; None when no daemon listens. TimeoutError after TIMEOUT s."""
    run_dir = posix.environ.get(b"SKAT_RUN_DIR") or RUN_DIR
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(run_dir + b"/control.sock")
        except NO_DAEMON:
            return None
        sock.sendall(message)
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    message = request(argv)
    if message is None:
        return full_cli(argv)
    try:
        answer = ask(message)
    except TimeoutError:
        # Never leave keepalived's script hanging, nor make it wait twice: act directly.
        debian_packages()
        from . import report

        report.warning(f"the daemon did not answer 'set' within {TIMEOUT:g} s; "
                       f"applying it directly")
        return full_cli(argv, asked=True)
    except OSError:
        answer = None  # the daemon went away mid-request: as if none listened
    role = DONE.get(answer) if answer else None
    if role is None:  # no daemon, or an answer for the CLI (an error, an ignored order)
        return full_cli(argv, asked=True, answer=answer)
    try:
        print(f"role: {role}", flush=True)  # as the full CLI prints it (cli._print_set)
    except BrokenPipeError:  # the reader went away: quiet, as in cli.main()
        from . import errors

        posix.dup2(posix.open("/dev/null", posix.O_WRONLY), 1)
        return errors.BROKEN_PIPE
    return 0


def debian_packages() -> None:
    """Without site (-S, as /usr/bin/fdpi_cli runs), what the rest of the plugin imports
    must be found all the same."""
    if sys.flags.no_site and DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)


def full_cli(argv: list[str], asked: bool = False, answer: bytes | None = None) -> int:
    """cli.main(). asked: this `vrrp set` was sent to the daemon already, and `answer` is
    what it said (None: no daemon listens, or it did not answer)."""
    debian_packages()
    from . import cli

    return cli.main(argv, asked=asked, answer=answer)
