"""Run a bench of this checkout and of an earlier commit side by side, alternating.

    /usr/bin/python3 bench/sidebyside.py REV [--rounds N] -- BENCH [ARGS...]
    e.g.  bench/sidebyside.py HEAD~1 --rounds 3 -- bench/supervision.py --only switch

REV is checked out into a temporary git worktree; each round runs the bench of the older
commit, then this checkout's, so both see the same machine (a shared VM's load moves in
minutes). Each run's Markdown output is printed under a heading naming the commit and the
round; the reader compares like with like. The worktree is removed at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the earlier commit (e.g. HEAD~1, a hash)")
    ap.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    bench = argv[cut + 1:]  # the bench's path (relative to a checkout) and its arguments
    if not bench:
        ap.error("name the bench after --")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="skat-sbs-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old),
                        a.rev], check=True, capture_output=True)
        try:
            rev = subprocess.run(["git", "-C", str(old), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            for n in range(1, a.rounds + 1):
                for label, root in ((f"{a.rev} ({rev})", old),
                                    (f"this checkout ({head}, with its changes)", REPO)):
                    print(f"\n## Round {n}: {label}\n", flush=True)
                    done = subprocess.run(["/usr/bin/python3", str(root / bench[0]),
                                           *bench[1:]], cwd=root, text=True,
                                          capture_output=True)
                    print(done.stdout, flush=True)
                    if done.returncode:
                        print(done.stderr[-2000:], file=sys.stderr)
                        return done.returncode
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old)], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
