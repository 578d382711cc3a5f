"""Is a KDC change faster? telekey's KDC from the working tree against the same KDC at a git
revision (checked out in a temporary worktree), the same MIT `kinit`/`kvno` exchanges at
each, taking turns exchange by exchange (bench/kdc_pkinit.py's method). On this VM a single
exchange's CPU time varies by ±30%, so a change worth a few percent needs a few hundred pairs:
the standard error printed says what the run can tell apart.

    .venv/bin/python bench/kdc_ab.py [--base HEAD] [--exchange pkinit_rsa] [--pairs 200]

Last line: `kdc_cpu_ratio_worktree_over_base=X se=Y`.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kdc_pkinit import EXCHANGES, Target, client_env, paired, ratio_of_means, start_telekey  # noqa: E402,E501


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--exchange", choices=EXCHANGES, default="pkinit_rsa")
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tree = base / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                        args.base], check=True, capture_output=True)
        kdcs = []
        try:
            kdcs = [start_telekey(base / "new"), start_telekey(base / "old", source=tree)]
            new, old = (Target(name, kdc.process.pid, client_env(base / name, kdc.port))
                        for name, kdc in zip(("new", "old"), kdcs, strict=True))
            mine, theirs = paired(new, old, args.exchange, args.pairs)
        finally:
            for kdc in kdcs:
                kdc.stop()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    ratio, error = ratio_of_means(mine, theirs)
    print(f"{args.exchange}: KDC CPU ms, {args.pairs} pairs: working tree "
          f"{statistics.fmean(mine):.3f} (median {statistics.median(mine):.3f}), "
          f"{args.base} {statistics.fmean(theirs):.3f} (median {statistics.median(theirs):.3f})")
    print(f"kdc_cpu_ratio_worktree_over_base={ratio:.3f} se={error:.3f}")


if __name__ == "__main__":
    main()
