"""Is a KDC change faster? telekey's KDC from the working tree against the same KDC at a git
revision (checked out in a temporary worktree), the same MIT `kinit`/`kvno` exchanges at
each, taking turns exchange by exchange, over several fresh pairs of KDC processes
(bench/kdc_pkinit.py's method). On this VM a single exchange's CPU time varies by ±30%, and a
process's speed by 5-10% with where it landed in memory, so a change worth a few percent needs
a few hundred pairs over a dozen restarts: the standard errors printed say what the run can
tell apart.

    .venv/bin/python bench/kdc_ab.py [--base HEAD] [--exchange pkinit_rsa] [--pairs 240]
        [--restarts 12]

Last line: `kdc_cpu_ratio_worktree_over_base=X se=Y`.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kdc_pkinit import (  # noqa: E402
    EXCHANGES,
    Target,
    client_env,
    ratio_of_means,
    restarted,
    spread,
    start_telekey,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--exchange", choices=EXCHANGES, default="pkinit_rsa")
    parser.add_argument("--pairs", type=int, default=240)
    parser.add_argument("--restarts", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                        args.base], check=True, capture_output=True)

        def start(base: Path, swap: bool) -> tuple[Target, Target, Callable[[], None]]:
            sources = [("new", ROOT), ("old", tree)]
            kdcs = {name: start_telekey(base / name, source=source)
                    for name, source in (sources[::-1] if swap else sources)}

            def stop() -> None:
                for kdc in kdcs.values():
                    kdc.stop()

            new, old = (Target(name, kdcs[name].process.pid,
                               client_env(base / name, kdcs[name].port))
                        for name in ("new", "old"))
            return new, old, stop

        try:
            mine, theirs, per_restart = restarted(start, (args.exchange,), args.pairs,
                                                  args.restarts)[args.exchange]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    ratio, error = ratio_of_means(mine, theirs)
    print(f"{args.exchange}: KDC CPU ms, {args.pairs} pairs over {args.restarts} process pairs: "
          f"working tree {statistics.fmean(mine):.3f} (median {statistics.median(mine):.3f}), "
          f"{args.base} {statistics.fmean(theirs):.3f} (median {statistics.median(theirs):.3f})")
    print("per process pair:", " ".join(f"{r:.3f}" for r in per_restart))
    print(f"kdc_cpu_ratio_worktree_over_base={ratio:.3f} se={error:.3f} "
          f"se_over_process_pairs={spread(per_restart):.3f}")


if __name__ == "__main__":
    main()
